"""The torch backend's runner: forward passes of a loaded sentence-transformers model, one mini-batch at a time.

It implements _batching.Runner, like the ONNX runner beside it (_onnx.py), so both backends share the tokenizing and
batching loop. On CUDA it overlaps the host and the GPU: inputs are pinned in the background thread, copied without
blocking, and results come back through a small ring of pinned host buffers (pinning memory is slow, so they are
reused). Hidden states are pooled here in float32, as sentence-transformers' Pooling does, whenever the heads name a
layer; otherwise the model's own modules run, so any pipeline (Dense, prompts...) still works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.encoders.text._model_info import ModelInfo
from featurestore.encoders.text._pooling import Head
from featurestore.errors import ValidationError
from featurestore.utils._optional import import_optional

__all__ = ["TorchRunner"]


class TorchRunner:
    """Forward passes with torch: AMP and pinned, non-blocking copies on CUDA; the model's modules or heads."""

    def __init__(
        self,
        st_model: Any,
        info: ModelInfo,
        *,
        device: str,
        precision: str,
        heads: Sequence[Head],
        input_names: Sequence[str],
    ) -> None:
        torch = import_optional("torch", extra="text", what="The torch backend")

        if not heads or (len(heads) > 1 and any(h.layer is None for h in heads)):
            raise ValidationError("The model's own module pipeline (a head without a layer) cannot share a pass.")
        self._torch = torch
        self._transformer = st_model[0].auto_model
        self._device = torch.device(device)
        self._cuda = self._device.type == "cuda"
        self.in_flight = 1 if self._cuda else 0
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        self._amp_dtype = dtypes[precision]
        self._type_ids = "token_type_ids" in input_names
        self._heads = tuple(heads)
        self._last = info.num_layers
        # Our own pooling when we know it exactly (simple pipelines and layers), else the model's modules.
        self._own_pooling = heads[0].layer is not None
        self._all_hidden = any(h.layer != info.num_layers for h in heads)
        normalize = heads[0].normalize
        modules = list(st_model)
        self._ran_normalize = info.has_normalize and normalize
        if not normalize and modules and type(modules[-1]).__name__ == "Normalize":
            modules = modules[:-1]
        self._modules = modules
        self._host: list[Any] = []
        self._slot = 0

    def prepare(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Any, Any]:
        ids, mask = self._torch.from_numpy(input_ids), self._torch.from_numpy(attention_mask)
        if self._cuda:  # pinned: the copy to the GPU can be asynchronous
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return ids, mask

    def submit(self, inputs: tuple[Any, Any]) -> Any:
        torch = self._torch
        ids, mask = (t.to(self._device, non_blocking=True) for t in inputs)
        features = {"input_ids": ids, "attention_mask": mask}
        if self._type_ids:
            features["token_type_ids"] = torch.zeros_like(ids)
        amp = self._amp_dtype is not None
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._amp_dtype, enabled=amp):
            if self._own_pooling:
                out = self._transformer(**features, output_hidden_states=self._all_hidden, return_dict=True)
                parts = []
                for head in self._heads:
                    hidden = out.last_hidden_state if head.layer == self._last else out.hidden_states[head.layer]
                    vectors = self._pool(hidden, mask, head.modes)
                    parts.append(torch.nn.functional.normalize(vectors, p=2, dim=1) if head.normalize else vectors)
                vectors = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            else:
                for module in self._modules:
                    features = module(features)
                vectors = features["sentence_embedding"].float()
                if self._heads[0].normalize and not self._ran_normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        if not self._cuda:
            return vectors.cpu().numpy()  # no-op on CPU; a copy from MPS
        host = self._host_buffer(vectors.shape)
        host.copy_(vectors, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def collect(self, handle: Any) -> np.ndarray:
        if not self._cuda:
            return handle
        host, event = handle
        event.synchronize()
        return host.numpy()

    def close(self) -> None:
        self._host = []
        self._transformer = self._modules = None

    def _pool(self, hidden: Any, mask: Any, modes: Sequence[str]) -> Any:
        """sentence-transformers' Pooling for right-padded batches, in float32 (numpy's twin: _pooling.pool)."""
        torch = self._torch
        hidden = hidden.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        parts = []
        for mode in modes:
            if mode == "cls":
                parts.append(hidden[:, 0])
            elif mode == "max":
                parts.append(hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values)
            else:  # mean, mean_sqrt_len_tokens
                counts = torch.clamp(weights.sum(dim=1), min=1e-9)
                total = (hidden * weights).sum(dim=1)
                parts.append(total / (counts if mode == "mean" else counts.sqrt()))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _host_buffer(self, shape: Any) -> Any:
        """A pinned buffer from a ring of ``in_flight + 1``: reused, since pinning memory is slow."""
        torch = self._torch
        rows, dim = int(shape[0]), int(shape[1])
        if len(self._host) < self.in_flight + 1:
            self._host.append(torch.empty((rows, dim), dtype=torch.float32, pin_memory=True))
        slot = self._slot % len(self._host)
        self._slot += 1
        if self._host[slot].shape[0] < rows:
            self._host[slot] = torch.empty((rows, dim), dtype=torch.float32, pin_memory=True)
        return self._host[slot][:rows]

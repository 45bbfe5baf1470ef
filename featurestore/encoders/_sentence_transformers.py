"""``sentence-transformers:<hub id | directory>``: text encoders from sentence-transformers models, offline.

One encoder, two backends:
- ``torch``: the model loaded with sentence-transformers (any device; AMP on GPU; any module pipeline).
- ``onnx`` / ``onnx-int8``: the transformer exported once to ONNX and run with ONNX Runtime on CPU (see _onnx.py).
``backend="auto"`` takes ONNX on CPU when onnxruntime is installed, torch otherwise and on GPUs.

Layer selection (``layer=k``, ``pooling="mean"|"cls"``) pools hidden state ``k`` of the transformer
(0 = embedding output, negative counts from the end) instead of running the model's own pooling modules.
Both backends share the tokenization and batching loop in _batching.py, so their vectors are the same.
Encoders of one model that differ only in layer/pooling/normalize/dtype share forward passes through
``encode_batches_with``: each is a ``Head`` on the same pass, so N layers cost about one.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import os
import sys
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from featurestore.encoders._base import (
    DTYPES,
    TEXT_OPTIONS,
    Encoder,
    check_choice,
    check_positive_int,
    check_texts,
    cpu_threads,
    native_cpu_precision,
)
from featurestore.encoders._batching import TextTokenizer, run_chunks
from featurestore.encoders._cache import files_sha256
from featurestore.encoders._model_info import SIMPLE_POOLING, ModelInfo, read_model_info
from featurestore.encoders._pooling import Head
from featurestore.encoders._registry import register
from featurestore.encoders._resolve import ResolvedModel, resolve_model
from featurestore.errors import EncoderNotAvailableError

__all__ = ["SentenceTransformerEncoder"]

_OWNER = "sentence-transformers encoders"
_INSTALL = "The sentence-transformers encoders need sentence-transformers and torch: pip install 'featurestore[text]'."
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAYER_POOLING = ("mean", "cls")
_NATIVE_UNITS = {"bf16": "AMX-BF16 or AVX512-BF16 instructions", "fp16": "AMX-FP16 instructions"}

# Mini-batch sizes when no batch_size is given: a budget of padded tokens (rows x longest row) and a row cap.
# Measured with benchmarks/bench_encoder_backends.py --tune on 2 cores (Xeon, AVX-512), all-MiniLM-L6-v2, 3,000
# docstring paragraphs (mean 20 words), texts/s relative to sentence-transformers' encode(batch_size=32):
#   onnx  max_batch_tokens 256: 1.81x  512: 1.93x  1024: 1.93x  2048: 1.86x  4096: 1.71x; batch_size 8: 1.82x  32: 1.79x
#   torch max_batch_tokens 512: 1.74x  1024: 1.88x  2048: 1.88x  4096: 1.86x; batch_size 8: 1.55x  32: 1.80x
# (earlier runs of the ONNX sweep put 512 ahead of 1024 by a few percent). GPU numbers are not measured here: the
# GPU budget is a conservative fill for a >= 16 GB card.
_CPU_ONNX_TOKENS = 512
_CPU_TORCH_TOKENS = 1024
# bf16 on AMX (6,000 review sentences, job/plain fp32 encode): 512 tokens 1.99x, 1024 2.66x, 2048 2.84x, 4096 2.74x.
_CPU_AMX_TOKENS = 2048
_CPU_MAX_ROWS = 128
_GPU_TOKENS = 32768
_GPU_MAX_ROWS = 1024
_ENCODE_CHUNK = 8192  # encode() tokenizes and length-sorts this many texts at a time

_LOADED: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()


@register("sentence-transformers")
class SentenceTransformerEncoder(Encoder):
    """Text vectors from a sentence-transformers model, resolved and run offline. Built by ``get_encoder``."""

    options = TEXT_OPTIONS

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        max_seq_length: int | None = None,
        normalize: bool | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        dtype: str = "float32",
        precision: str = "auto",
        backend: str = "auto",
        allow_download: bool = False,
    ) -> None:
        check_choice(_OWNER, "dtype", dtype, DTYPES)
        check_choice(_OWNER, "backend", backend, BACKENDS)
        check_choice(_OWNER, "precision", precision, PRECISIONS)
        check_choice(_OWNER, "normalize", normalize, (None, True, False))
        check_choice(_OWNER, "pooling", pooling, (None, *LAYER_POOLING))
        check_positive_int(_OWNER, "batch_size", batch_size)
        check_positive_int(_OWNER, "max_batch_tokens", max_batch_tokens)
        check_positive_int(_OWNER, "max_seq_length", max_seq_length)
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (int, np.integer))):
            raise ValueError(f"The 'layer' parameter of {_OWNER} must be an int or None. Got {layer!r} instead.")
        if device is not None and not isinstance(device, str):
            raise ValueError(f"The 'device' parameter of {_OWNER} must be a str or None. Got {device!r} instead.")
        if backend.startswith("onnx"):
            if device not in (None, "cpu"):
                raise ValueError(f"backend={backend!r} runs on CPU; got device={device!r}. Use backend='torch'.")
            if precision not in ("auto", "fp32"):
                raise ValueError(f"backend={backend!r} computes in fp32; got precision={precision!r}.")

        self.name = f"sentence-transformers:{model}"
        self.device = device
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.backend = backend
        self.precision = precision

        self._resolved: ResolvedModel = resolve_model(model, allow_download=allow_download)
        info = self._info = read_model_info(self._resolved.path)

        limit = info.max_position_embeddings
        if max_seq_length is not None and limit and max_seq_length > limit:
            raise ValueError(
                f"The 'max_seq_length' parameter of {_OWNER} must be at most {limit} for "
                f"{model!r} (its position embeddings). Got {max_seq_length} instead."
            )
        self._max_seq_length = int(max_seq_length or info.max_seq_length)
        if layer is None and pooling is None:
            self._layer: int | None = None  # the model's own pipeline
            self._pooling: tuple[str, ...] = info.pooling
            self._dim = info.pipeline_dim
        else:
            n = info.num_layers
            index = -1 if layer is None else int(layer)
            if not -(n + 1) <= index <= n:
                raise ValueError(
                    f"The 'layer' parameter of {_OWNER} must be in [{-(n + 1)}, {n}] for {model!r} ({n} layers; "
                    f"0 is the embedding output). Got {layer!r} instead."
                )
            self._layer = index % (n + 1)
            own = info.pooling[0] if len(info.pooling) == 1 and info.pooling[0] in LAYER_POOLING else "mean"
            self._pooling = (pooling or own,)
            self._dim = info.hidden_size
        self._normalize = info.has_normalize if normalize is None else bool(normalize)
        self._dtype = dtype
        self._weights_sha: str | None = None
        self._plan: dict[str, str] | None = None
        self._runner: Any = None
        self._tokenizer: TextTokenizer | None = None
        self._st_model: Any = None
        self._export: Any = None
        self._input_names: tuple[str, ...] = ()
        self._onnx_file: str | None = None

    # -- identity -------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weight files (cached by path, size and mtime)."""
        if self._weights_sha is None:
            self._weights_sha = files_sha256(self._resolved.path, self._info.weight_files)
        return self._weights_sha

    def spec(self) -> dict[str, Any]:
        quantization = "int8-dynamic" if self.backend == "onnx-int8" else None
        return {
            "encoder": f"sentence-transformers:{self._resolved.model_id}",
            "library": "sentence-transformers",
            "model": self._resolved.model_id,
            "revision": self._resolved.revision,
            "weights_sha256": self.weights_sha256,
            "dim": self._dim,
            "dtype": self._dtype,
            "metric": self._info.similarity,
            "normalize": self._normalize,
            "layer": self._layer,
            "pooling": "+".join(self._pooling) if self._pooling else None,
            "max_seq_length": self._max_seq_length,
            "quantization": quantization,
        }

    @classmethod
    def options_from_spec(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "dtype": spec.get("dtype", "float32"),
            "normalize": spec.get("normalize"),
            "max_seq_length": spec.get("max_seq_length"),
        }
        if spec.get("layer") is not None:
            options["layer"] = spec["layer"]
            options["pooling"] = spec.get("pooling")
        if spec.get("quantization") == "int8-dynamic":
            options["backend"] = "onnx-int8"
        return options

    def provenance(self) -> dict[str, Any]:
        plan = self._resolve_plan()
        libraries = ["sentence-transformers", "transformers", "torch", "tokenizers", "numpy"]
        if plan["backend"].startswith("onnx"):
            libraries += ["onnxruntime", "onnx"]
        tokens, rows = self._budget(plan)
        return {
            "backend": plan["backend"],
            "device": plan["device"],
            "precision": plan["precision"],
            "model_path": str(self._resolved.path),
            "model_source": self._resolved.source,
            "onnx_file": self._onnx_file,
            "threads": cpu_threads() if plan["device"] == "cpu" else None,
            "batching": {"batch_size": self.batch_size, "max_batch_tokens": tokens, "max_rows": rows},
            "libraries": {name: _version(name) for name in libraries},
        }

    # -- encoding -------------------------------------------------------------------------------------------

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        out = np.empty((len(texts), self._dim), dtype=self._dtype)
        if not texts:
            return out
        slices = [slice(i, min(i + _ENCODE_CHUNK, len(texts))) for i in range(0, len(texts), _ENCODE_CHUNK)]
        with _Progress(len(texts), enabled=progress) as bar:
            chunks = self._stream(
                (texts[s] for s in slices),
                batch_size=batch_size or self.batch_size,
                on_rows=bar.advance,
                outputs=iter(out[s] for s in slices),
            )
            for _ in chunks:  # each chunk is written in place into ``out``
                pass
        return out

    def encode_batches(self, chunks: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        return self._stream(chunks, batch_size=self.batch_size)

    def encode_batches_with(
        self, others: Sequence[Encoder], chunks: Iterable[Sequence[str]]
    ) -> Iterator[list[np.ndarray]]:
        """One forward pass per mini-batch for all of them when they differ only in layer/pooling/normalize/dtype."""
        shared = bool(others) and all(self._shares_pass(o) for o in others)
        if shared:
            self._load()
            shared = self._runner is not None  # None: no fast tokenizer, sentence-transformers' own loop
        if not shared:
            yield from super().encode_batches_with(others, chunks)  # separately, pass after pass
            return
        for other in others:  # an ONNX -> torch fallback while loading applies to the whole shared pass
            other._plan = dict(self._resolve_plan())  # type: ignore[attr-defined]
        encoders = [self, *others]
        heads = [e._head() for e in encoders]  # type: ignore[attr-defined]
        runner = self._make_runner(heads)
        edges = np.cumsum([0, *(h.dim for h in heads)])
        try:
            for block in self._stream(chunks, batch_size=self.batch_size, runner=runner, dim=int(edges[-1]),
                                      dtype="float32"):
                yield [block[:, a:b].astype(e._dtype) for e, a, b in zip(encoders, edges, edges[1:])]  # type: ignore[attr-defined]
        finally:
            runner.close()

    def _shares_pass(self, other: Encoder) -> bool:
        """Same model, truncation, device/backend/precision and batching; both pool hidden states themselves."""
        return (
            isinstance(other, SentenceTransformerEncoder)
            and other._resolved.path == self._resolved.path
            and other._max_seq_length == self._max_seq_length
            and (other.batch_size, other.max_batch_tokens) == (self.batch_size, self.max_batch_tokens)
            and other._resolve_plan() == self._resolve_plan()
            and self._head().layer is not None
            and other._head().layer is not None
        )

    def _stream(
        self,
        chunks: Iterable[Sequence[str]],
        *,
        batch_size: int | None,
        on_rows: Any = None,
        outputs: Iterator[np.ndarray] | None = None,
        runner: Any = None,
        dim: int | None = None,
        dtype: str | None = None,
    ) -> Iterator[np.ndarray]:
        self._load()
        plan = self._resolve_plan()
        if self._tokenizer is None:  # a model without a fast tokenizer: sentence-transformers' own loop
            return self._stream_with_st(chunks, batch_size=batch_size, on_rows=on_rows, outputs=outputs)
        tokens, rows = self._budget(plan)
        return run_chunks(
            chunks,
            tokenizer=self._tokenizer,
            runner=runner or self._runner,
            dim=dim or self._dim,
            dtype=dtype or self._dtype,
            batch_size=batch_size,
            max_tokens=tokens,
            max_rows=rows,
            on_rows=on_rows,
            outputs=outputs,
        )

    def _stream_with_st(
        self, chunks: Iterable[Sequence[str]], *, batch_size: int | None, on_rows: Any, outputs: Any
    ) -> Iterator[np.ndarray]:
        for number, chunk in enumerate(chunks):
            texts = check_texts(chunk, chunk=number)
            vectors = self._st_model.encode(
                texts,
                batch_size=batch_size or 32,
                convert_to_numpy=True,
                show_progress_bar=False,
                normalize_embeddings=self._normalize and not self._info.has_normalize,
            ).astype(self._dtype, copy=False)
            if on_rows is not None:
                on_rows(len(texts))
            if outputs is not None:
                target = next(outputs)
                target[...] = vectors
                vectors = target
            yield vectors.reshape(len(texts), self._dim)

    def close(self) -> None:
        device = (self._plan or {}).get("device", "cpu")
        if self._runner is not None and hasattr(self._runner, "close"):
            self._runner.close()
        self._runner = self._tokenizer = self._st_model = self._export = None
        gc.collect()
        if device.startswith("cuda") and "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()

    # -- loading --------------------------------------------------------------------------------------------

    def _resolve_plan(self) -> dict[str, str]:
        """Device, backend and precision actually used (may import torch to look for a GPU)."""
        if self._plan is not None:
            return self._plan
        exportable = self._layer is not None or self._info.simple
        if self.backend.startswith("onnx"):
            if not exportable:
                raise EncoderNotAvailableError(
                    f"backend={self.backend!r} runs Transformer -> Pooling ({'/'.join(SIMPLE_POOLING)}) -> Normalize "
                    f"pipelines without prompts; {self._resolved.model_id!r} has {list(self._info.modules)} "
                    f"with pooling {list(self._info.pooling)}. Use backend='torch', or pick a layer."
                )
            device, backend = "cpu", self.backend
        else:
            device = self.device or _auto_device()
            onnx_ok = importlib.util.find_spec("onnxruntime") is not None
            fp32 = self.precision in ("auto", "fp32")
            use_onnx = self.backend == "auto" and device == "cpu" and exportable and onnx_ok and fp32
            backend = "onnx" if use_onnx else "torch"
        precision = self.precision
        if precision == "auto":
            precision = "fp32"
            if device.startswith("cuda"):
                import torch

                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device == "cpu" and precision != "fp32" and native_cpu_precision(precision) is False:
            warnings.warn(
                f"precision={precision!r} on a CPU without {_NATIVE_UNITS[precision]}: torch emulates it, no "
                "faster than fp32 and less exact. Use precision='fp32' (the CPU default).",
                RuntimeWarning,
                stacklevel=4,
            )
        self._plan = {"device": device, "backend": backend, "precision": precision}
        return self._plan

    def _budget(self, plan: Mapping[str, str]) -> tuple[int, int]:
        if self.max_batch_tokens is not None:
            tokens = self.max_batch_tokens
        elif plan["device"] == "cpu":
            if plan["backend"].startswith("onnx"):
                tokens = _CPU_ONNX_TOKENS
            else:
                native = plan["precision"] != "fp32" and native_cpu_precision(plan["precision"])
                tokens = _CPU_AMX_TOKENS if native else _CPU_TORCH_TOKENS
        else:
            tokens = _GPU_TOKENS
        return tokens, (_CPU_MAX_ROWS if plan["device"] == "cpu" else _GPU_MAX_ROWS)

    def _load(self) -> None:
        if self._runner is not None or self._st_model is not None:
            return
        plan = self._resolve_plan()
        if plan["backend"].startswith("onnx"):
            try:
                self._load_onnx(int8=plan["backend"] == "onnx-int8")
                return
            except EncoderNotAvailableError as exc:
                if self.backend != "auto" or importlib.util.find_spec("torch") is None:
                    raise
                warnings.warn(f"ONNX backend unavailable, using torch: {exc}", RuntimeWarning, stacklevel=3)
                plan["backend"] = "torch"
        self._load_torch(plan)

    def _load_onnx(self, *, int8: bool) -> None:
        from featurestore.encoders._onnx import ensure_export

        export = ensure_export(self._info, self.weights_sha256, int8=int8)
        self._tokenizer = export.tokenizer(max_length=self._max_seq_length, lower_case=self._info.do_lower_case)
        self._export = export
        self._runner = self._make_runner([self._head()])
        self._onnx_file = str(self._runner.path)

    def _load_torch(self, plan: Mapping[str, str]) -> None:
        try:
            import torch  # noqa: F401
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EncoderNotAvailableError(_INSTALL) from exc
        key = (str(self._resolved.path), plan["device"])
        st = _LOADED.get(key)
        if st is None:  # loaded once per process while any encoder holds it
            st = SentenceTransformer(str(self._resolved.path), device=plan["device"], local_files_only=True).eval()
            _LOADED[key] = st
        self._st_model = st
        hf_tokenizer = getattr(st[0], "tokenizer", None)
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            if self._layer is not None or (self._info.has_normalize and not self._normalize):
                raise EncoderNotAvailableError(
                    f"Layer selection and normalize=False need a fast (Rust) tokenizer, and "
                    f"{self._resolved.model_id!r} has none."
                )
            return  # _stream_with_st
        pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        self._tokenizer = TextTokenizer(
            backend, max_length=self._max_seq_length, lower_case=self._info.do_lower_case, pad_id=pad_id
        )
        self._input_names = tuple(getattr(hf_tokenizer, "model_input_names", ("input_ids", "attention_mask")))
        self._runner = self._make_runner([self._head()])

    def _head(self) -> Head:
        """What this encoder takes from a forward pass."""
        if self._layer is None and not self._info.simple:
            return Head(None, (), self._normalize, self._dim)  # the model's own modules (torch)
        layer = self._info.num_layers if self._layer is None else self._layer
        return Head(layer, tuple(self._pooling), self._normalize, self._dim)

    def _make_runner(self, heads: Sequence[Head]) -> Any:
        """A runner over the loaded model (cheap: the model and ONNX session are shared) for these heads."""
        plan = self._resolve_plan()
        if plan["backend"].startswith("onnx"):
            from featurestore.encoders._onnx import OnnxRunner

            return OnnxRunner(self._export, int8=plan["backend"] == "onnx-int8", heads=heads, threads=cpu_threads())
        return TorchRunner(
            self._st_model,
            self._info,
            device=plan["device"],
            precision=plan["precision"],
            heads=heads,
            input_names=self._input_names,
        )


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
        import torch

        if not heads or (len(heads) > 1 and any(h.layer is None for h in heads)):
            raise ValueError("The model's own module pipeline (a head without a layer) cannot share a pass.")
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
                    vectors = _torch_pool(hidden, mask, head.modes)
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

    def close(self) -> None:
        self._host = []
        self._transformer = self._modules = None


def _torch_pool(hidden: Any, mask: Any, modes: Sequence[str]) -> Any:
    """sentence-transformers' Pooling for right-padded batches, in float32."""
    import torch

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


class _Progress:
    """A rich bar on stderr (texts, rate, ETA) when enabled; a no-op otherwise."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._total, self._enabled = total, enabled
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("encoding"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("encode", total=self._total)
        return self

    def advance(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, rows)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _auto_device() -> str:
    """cuda, then mps, then cpu; torch is imported only where a GPU may exist."""
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    if sys.platform.startswith("linux"):
        may_have_gpu = any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))
        if not may_have_gpu:
            return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

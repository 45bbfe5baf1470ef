"""``sentence-transformers:<hub id | directory>``: text encoders from sentence-transformers models, offline.

One encoder, two backends:
- ``torch``: the model loaded with sentence-transformers (any device; AMP on GPU; any module pipeline), run by
  _torch_runner.py.
- ``onnx`` / ``onnx-int8``: the transformer exported once to ONNX (_onnx_export.py) and run with ONNX Runtime on CPU
  (_onnx.py).
``backend="auto"`` takes ONNX on CPU when onnxruntime is installed, torch otherwise and on GPUs (_run_plan.py).

Layer selection (``layer=k``, ``pooling="mean"|"cls"``) pools hidden state ``k`` of the transformer
(0 = embedding output, negative counts from the end) instead of running the model's own pooling modules.
Both backends share the tokenization and batching loop in _batching.py, so their vectors are the same.
Encoders of one model that differ only in layer/pooling/normalize/dtype share forward passes through
``encode_batches_with``: each is a ``Head`` on the same pass, so N layers cost about one.

This module holds what the vectors are (options, spec, provenance) and puts the pieces together: it finds the
model, asks for a run plan, loads a backend and streams texts through it.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from featurestore.encoders._base import DTYPES, TEXT_OPTIONS, Encoder, check_choice, check_positive_int, check_texts
from featurestore.encoders._registry import register
from featurestore.encoders.runtime._cache import files_sha256
from featurestore.encoders.runtime._model_lookup import ResolvedModel, resolve_model
from featurestore.encoders.runtime._run_plan import RunPlan, batch_budget, cpu_threads, plan_run
from featurestore.encoders.text._batching import TextTokenizer, run_chunks
from featurestore.encoders.text._model_info import SIMPLE_POOLING, read_model_info
from featurestore.encoders.text._onnx import OnnxExport, OnnxRunner
from featurestore.encoders.text._pooling import Head
from featurestore.encoders.text._torch_runner import TorchRunner
from featurestore.errors import EncoderNotAvailableError, ValidationError
from featurestore.utils._optional import import_optional, library_version
from featurestore.utils._progress import rich_progress

__all__ = ["SentenceTransformerEncoder"]

_OWNER = "sentence-transformers encoders"
_TORCH_BACKEND = "The torch backend of sentence-transformers encoders"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAYER_POOLING = ("mean", "cls")
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
            raise ValidationError(f"The 'layer' parameter of {_OWNER} must be an int or None. Got {layer!r} instead.")
        if device is not None and not isinstance(device, str):
            raise ValidationError(f"The 'device' parameter of {_OWNER} must be a str or None. Got {device!r} instead.")
        if backend.startswith("onnx"):
            if device not in (None, "cpu"):
                raise ValidationError(f"backend={backend!r} runs on CPU; got device={device!r}. Use backend='torch'.")
            if precision not in ("auto", "fp32"):
                raise ValidationError(f"backend={backend!r} computes in fp32; got precision={precision!r}.")

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
            raise ValidationError(
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
                raise ValidationError(
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
        self._plan: RunPlan | None = None
        self._runner: OnnxRunner | TorchRunner | None = None
        self._tokenizer: TextTokenizer | None = None
        self._st_model: Any = None
        self._export: OnnxExport | None = None
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
        if plan.onnx:
            libraries += ["onnxruntime", "onnx"]
        tokens, rows = batch_budget(plan, self.max_batch_tokens)
        return {
            "backend": plan.backend,
            "device": plan.device,
            "precision": plan.precision,
            "model_path": str(self._resolved.path),
            "model_source": self._resolved.source,
            "onnx_file": self._onnx_file,
            "threads": cpu_threads() if plan.device == "cpu" else None,
            "batching": {"batch_size": self.batch_size, "max_batch_tokens": tokens, "max_rows": rows},
            "libraries": {name: library_version(name) for name in libraries},
        }

    # -- encoding -------------------------------------------------------------------------------------------

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        out = np.empty((len(texts), self._dim), dtype=self._dtype)
        if not texts:
            return out
        slices = [slice(i, min(i + _ENCODE_CHUNK, len(texts))) for i in range(0, len(texts), _ENCODE_CHUNK)]
        done = 0
        with rich_progress("encoding", len(texts), enabled=progress, unit="texts") as report:

            def advance(rows: int) -> None:
                nonlocal done
                done += rows
                report(done)

            chunks = self._stream(
                (texts[s] for s in slices),
                batch_size=batch_size or self.batch_size,
                on_rows=advance,
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
            other._plan = self._resolve_plan()  # type: ignore[attr-defined]
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
        on_rows: Callable[[int], None] | None = None,
        outputs: Iterator[np.ndarray] | None = None,
        runner: OnnxRunner | TorchRunner | None = None,
        dim: int | None = None,
        dtype: str | None = None,
    ) -> Iterator[np.ndarray]:
        self._load()
        plan = self._resolve_plan()
        if self._tokenizer is None:  # a model without a fast tokenizer: sentence-transformers' own loop
            return self._stream_with_st(chunks, batch_size=batch_size, on_rows=on_rows, outputs=outputs)
        tokens, rows = batch_budget(plan, self.max_batch_tokens)
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
        self,
        chunks: Iterable[Sequence[str]],
        *,
        batch_size: int | None,
        on_rows: Callable[[int], None] | None,
        outputs: Iterator[np.ndarray] | None,
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
        device = self._plan.device if self._plan is not None else "cpu"
        if self._runner is not None:
            self._runner.close()
        self._runner = self._tokenizer = self._st_model = self._export = None
        gc.collect()
        if device.startswith("cuda") and "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()

    # -- loading --------------------------------------------------------------------------------------------

    def _resolve_plan(self) -> RunPlan:
        """Device, backend and precision actually used, decided once (may import torch to look for a GPU)."""
        if self._plan is None:
            exportable = self._layer is not None or self._info.simple
            if self.backend.startswith("onnx") and not exportable:
                raise EncoderNotAvailableError(
                    f"backend={self.backend!r} runs Transformer -> Pooling ({'/'.join(SIMPLE_POOLING)}) -> Normalize "
                    f"pipelines without prompts; {self._resolved.model_id!r} has {list(self._info.modules)} "
                    f"with pooling {list(self._info.pooling)}. Use backend='torch', or pick a layer."
                )
            self._plan = plan_run(
                device=self.device, backend=self.backend, precision=self.precision, exportable=exportable
            )
        return self._plan

    def _load(self) -> None:
        if self._runner is not None or self._st_model is not None:
            return
        plan = self._resolve_plan()
        if plan.onnx:
            try:
                self._load_onnx(int8=plan.int8)
                return
            except EncoderNotAvailableError as exc:
                if self.backend != "auto" or importlib.util.find_spec("torch") is None:
                    raise
                warnings.warn(f"ONNX backend unavailable, using torch: {exc}", RuntimeWarning, stacklevel=3)
                self._plan = plan = replace(plan, backend="torch")
        self._load_torch(plan)

    def _load_onnx(self, *, int8: bool) -> None:
        from featurestore.encoders.text._onnx_export import ensure_export  # looked up here, so tests can replace it

        export = ensure_export(self._info, self.weights_sha256, int8=int8)
        self._tokenizer = export.tokenizer(max_length=self._max_seq_length, lower_case=self._info.do_lower_case)
        self._export = export
        self._runner = self._make_runner([self._head()])
        self._onnx_file = str(export.model_file(int8))

    def _load_torch(self, plan: RunPlan) -> None:
        import_optional("torch", extra="text", what=_TORCH_BACKEND)
        sentence_transformers = import_optional("sentence_transformers", extra="text", what=_TORCH_BACKEND)
        key = (str(self._resolved.path), plan.device)
        st = _LOADED.get(key)
        if st is None:  # loaded once per process while any encoder holds it
            path = str(self._resolved.path)
            st = sentence_transformers.SentenceTransformer(path, device=plan.device, local_files_only=True).eval()
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

    def _make_runner(self, heads: Sequence[Head]) -> OnnxRunner | TorchRunner:
        """A runner over the loaded model (cheap: the model and ONNX session are shared) for these heads."""
        plan = self._resolve_plan()
        if plan.onnx:
            assert self._export is not None
            return OnnxRunner(self._export, int8=plan.int8, heads=heads, threads=cpu_threads())
        return TorchRunner(
            self._st_model,
            self._info,
            device=plan.device,
            precision=plan.precision,
            heads=heads,
            input_names=self._input_names,
        )

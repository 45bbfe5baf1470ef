"""The encoder contract: what the store and the batch runner may call on any encoder.

An encoder turns payloads (texts for now) into fixed-size vectors. Its ``spec()`` is the identity of those
vectors: the store compares specs to decide whether rows may be appended to a feature set version, so two
encoders with equal specs must produce the same vectors. Everything that does not change the vectors (device,
batch size, library versions, paths) goes to ``provenance()`` instead.
"""

from __future__ import annotations

import abc
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = ["Encoder"]

DTYPES = ("float32", "float16")

#: the options every text encoder accepts, so a job can switch encoder names without editing its options
TEXT_OPTIONS = (
    "device",
    "batch_size",
    "max_batch_tokens",
    "max_seq_length",
    "normalize",
    "layer",
    "pooling",
    "dtype",
    "precision",
    "backend",
    "allow_download",
)


class Encoder(abc.ABC):
    """Base class of every registered encoder.

    Subclasses implement ``dim``, ``spec`` and ``_encode_list``; the streaming ``encode_batches`` and the
    input checks live here so that every encoder rejects bad input the same way.
    """

    #: registry key, set by ``@register``
    key: ClassVar[str] = ""
    #: keyword options ``get_encoder`` accepts for this encoder (checked before construction)
    options: ClassVar[tuple[str, ...]] = ()
    modality: str = "text"

    name: str

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able identity of the vectors; see the module docstring."""

    def provenance(self) -> dict[str, Any]:
        """JSON-able facts about how vectors were made that are *not* part of their identity."""
        return {}

    @abc.abstractmethod
    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        """Encode already-checked texts into an ``(n, dim)`` array of the spec dtype."""

    def encode(
        self, texts: str | Sequence[str], *, batch_size: int | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Vectors for ``texts`` in input order: ``(n, dim)``, or ``(dim,)`` for a single string."""
        single = isinstance(texts, str)
        items = check_texts(texts)
        out = self._encode_list(items, batch_size=batch_size, progress=resolve_progress(progress))
        return out[0] if single else out

    def encode_batches(self, chunks: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        """Stream: one ``(len(chunk), dim)`` array per input chunk, in order.

        Model encoders read ``chunks`` one chunk ahead in a background thread (tokenizing while the model runs),
        so the iterable must tolerate being advanced from another thread.
        """
        for number, chunk in enumerate(chunks):
            yield self._encode_list(check_texts(chunk, chunk=number), batch_size=None, progress=False)

    def encode_batches_with(
        self, others: Sequence[Encoder], chunks: Iterable[Sequence[str]]
    ) -> Iterator[list[np.ndarray]]:
        """Stream the vectors of this encoder and ``others`` for the same chunks: per chunk, a list (self first).

        This default encodes with each encoder in turn. Encoders of one model override it to share a forward pass,
        so several layers cost one pass (``featurestore embed --layer 3 --layer -1``).
        """
        encoders = [self, *others]
        for number, chunk in enumerate(chunks):
            texts = check_texts(chunk, chunk=number)
            yield [e._encode_list(texts, batch_size=None, progress=False) for e in encoders]

    def close(self) -> None:  # noqa: B027 - optional: encoders without a model have nothing to free
        """Free the model (a later call loads it again)."""

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @classmethod
    def options_from_spec(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The ``get_encoder`` options that rebuild an encoder with this spec (the model comes from the name)."""
        return {k: spec[k] for k in ("dtype", "normalize") if k in spec and k in cls.options}


def check_texts(texts: str | Sequence[str] | Iterable[str], *, chunk: int | None = None) -> list[str]:
    """A list of the texts, or a TypeError naming the first item that is not a str (None included)."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"Expected a str or a sequence of str, got {type(texts).__name__}")
    items = texts if isinstance(texts, list) else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            where = f"index {i}" if chunk is None else f"index {i} of chunk {chunk}"
            raise TypeError(f"Text at {where} is {type(text).__name__}, not str: {text!r:.60}")
    return items


def resolve_progress(progress: bool | None) -> bool:
    """``None`` means on when stderr is a terminal (the convention of every long call in the project)."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def check_choice(owner: str, param: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise the project's standard ValueError when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"The {param!r} parameter of {owner} must be one of {list(choices)}. Got {value!r} instead.")


def check_positive_int(owner: str, param: str, value: Any, *, allow_none: bool = True) -> None:
    """Raise the standard ValueError unless ``value`` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"The {param!r} parameter of {owner} must be {expected}. Got {value!r} instead.")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit length in place, as torch's F.normalize (eps 1e-12): zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    x /= norms
    return x


# CPU flags that mean matrix products in a reduced precision run in hardware. Without them torch's CPU autocast
# emulates bf16/fp16 and runs no faster than fp32 (measured: fp16 autocast on AVX512-FP16 without AMX-FP16 ran at
# 0.97x fp32; bf16 on AMX ran MiniLM at 1.7x fp32 in plain encode and 2.7x through our batching loop).
# Measured on x86 only; aarch64 lists its bf16 instructions as "bf16" ("Features" line), unmeasured here.
_NATIVE_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16", "bf16"), "fp16": ("amx_fp16",)}


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (x86 "flags", aarch64 "Features"; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_cpu_precision(precision: str) -> bool | None:
    """Whether this CPU multiplies ``precision`` ("bf16"/"fp16") in hardware; None when it cannot tell."""
    flags = cpu_flags()
    if flags:
        if precision == "fp16" and "asimd" in flags:  # aarch64 half precision: not measured, so unknown
            return None
        return any(flag in flags for flag in _NATIVE_FLAGS.get(precision, ()))
    torch = sys.modules.get("torch")  # macOS/Windows: ask torch, if it is already loaded
    check = {"bf16": "_is_avx512_bf16_supported", "fp16": "_is_amx_fp16_supported"}.get(precision)
    if torch is not None and check and hasattr(torch.cpu, check):
        return bool(getattr(torch.cpu, check)())
    return None


def cpu_threads() -> int:
    """Cores this process may use (the affinity mask, which containers narrow), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)

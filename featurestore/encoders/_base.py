"""The encoder contract: what the store and the batch runner may call on any encoder.

An encoder turns payloads (texts for now) into fixed-size vectors. Its ``spec()`` is the identity of those
vectors: the store compares specs to decide whether rows may be appended to a feature set version, so two
encoders with equal specs must produce the same vectors. Everything that does not change the vectors (device,
batch size, library versions, paths) goes to ``provenance()`` instead.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from featurestore.errors import InvalidTypeError, ValidationError
from featurestore.utils._progress import progress_enabled

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
#: the options that change how an encoder runs, never what it computes (what serving may set: the rest is the spec's)
RUN_OPTIONS = ("device", "batch_size", "max_batch_tokens", "precision", "backend", "allow_download")


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
        out = self._encode_list(items, batch_size=batch_size, progress=progress_enabled(progress))
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
        raise InvalidTypeError(f"Expected a str or a sequence of str, got {type(texts).__name__}")
    items = texts if isinstance(texts, list) else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            where = f"index {i}" if chunk is None else f"index {i} of chunk {chunk}"
            raise InvalidTypeError(f"Text at {where} is {type(text).__name__}, not str: {text!r:.60}")
    return items


def check_choice(owner: str, param: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise the project's standard ValueError when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValidationError(f"The {param!r} parameter of {owner} must be one of {list(choices)}. Got {value!r} instead.")


def check_positive_int(owner: str, param: str, value: Any, *, allow_none: bool = True) -> None:
    """Raise the standard ValueError unless ``value`` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValidationError(f"The {param!r} parameter of {owner} must be {expected}. Got {value!r} instead.")



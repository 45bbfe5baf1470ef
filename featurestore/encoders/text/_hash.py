"""``hash:<dim>``: deterministic vectors from text bytes, for tests and demos of the storage and the runner.

No model, no downloads, no randomness: every number comes from blake2b digests, so the vectors are the same on
every machine and every numpy version. A text's vector is the sum of its lower-cased words' vectors plus a
smaller vector of its exact bytes, so texts that share words are close (enough for search tests) while
different texts never collide.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import numpy as np

from featurestore.encoders._base import DTYPES, TEXT_OPTIONS, Encoder, check_choice
from featurestore.encoders._registry import register
from featurestore.errors import ValidationError
from featurestore.utils._vectors import unit_rows

__all__ = ["HashEncoder"]

_WORD = re.compile(r"\w+")
_MAX_DIM = 65536


@register("hash")
class HashEncoder(Encoder):
    """Deterministic bag-of-words vectors: ``get_encoder("hash:64")``. Instant; for tests, not for meaning."""

    options = TEXT_OPTIONS

    def __init__(
        self,
        model: str = "64",
        *,
        normalize: bool | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        dtype: str = "float32",
        **runtime_options: Any,
    ) -> None:
        # The run-time options of TEXT_OPTIONS (device, batch sizes, backend...) are accepted, after get_encoder has
        # checked their names, so that a job can switch between encoders without editing its options; they change
        # nothing here.
        owner = "the 'hash' encoder"
        try:
            dim = int(model)
        except ValueError:
            dim = 0
        if not 1 <= dim <= _MAX_DIM or str(model).strip() != str(dim):
            raise ValidationError(f"The hash encoder is named 'hash:<dim>' with 1 <= dim <= {_MAX_DIM}. Got {model!r}.")
        check_choice(owner, "dtype", dtype, DTYPES)
        check_choice(owner, "normalize", normalize, (None, True, False))
        for param, value in (("layer", layer), ("pooling", pooling)):
            if value is not None:
                raise ValidationError(f"The {param!r} parameter of {owner} must be None: it has no layers. Got {value!r}.")
        self.name = f"hash:{model}"
        self._dim = dim
        self._dtype = dtype
        self._normalize = normalize is not False

    @property
    def dim(self) -> int:
        return self._dim

    def spec(self) -> dict[str, Any]:
        return {
            "encoder": f"hash:{self._dim}",
            "dim": self._dim,
            "dtype": self._dtype,
            "metric": "cosine",
            "normalize": self._normalize,
        }

    def provenance(self) -> dict[str, Any]:
        return {"backend": "hash", "device": "cpu"}

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = _text_vector(text, self._dim)
        if self._normalize:
            unit_rows(out)
        return out.astype(self._dtype, copy=False)


def _text_vector(text: str, dim: int) -> np.ndarray:
    raw = text.encode("utf-8", "surrogatepass")
    vector = 0.5 * _bytes_vector(b"text\x00" + raw, dim)
    for word in _WORD.findall(text.lower()):
        vector += _word_vector(word, dim)
    return vector


@functools.lru_cache(maxsize=65536)
def _word_vector(word: str, dim: int) -> np.ndarray:
    vector = _bytes_vector(b"word\x00" + word.encode("utf-8", "surrogatepass"), dim)
    vector.flags.writeable = False  # shared by the cache
    return vector


def _bytes_vector(data: bytes, dim: int) -> np.ndarray:
    """``dim`` floats uniform in [-1, 1) from blake2b in counter mode."""
    n_bytes = 4 * dim
    digest = b"".join(
        hashlib.blake2b(data, digest_size=64, salt=block.to_bytes(16, "little")).digest()
        for block in range(-(-n_bytes // 64))
    )
    words = np.frombuffer(digest[:n_bytes], dtype="<u4")
    return (words * (2.0 / 2**32) - 1.0).astype(np.float32)

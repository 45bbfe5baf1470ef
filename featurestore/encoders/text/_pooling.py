"""Token vectors -> one vector per text, in numpy, exactly as sentence-transformers' Pooling computes it.

The ONNX backend exports only the transformer; pooling here keeps the export independent of the pooling and
layer chosen, so one exported file serves every ``layer``/``pooling`` combination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featurestore.errors import ValidationError

__all__ = ["Head", "pool"]


@dataclass(frozen=True)
class Head:
    """One vector per text taken from a forward pass: hidden state ``layer`` pooled by ``modes``, maybe normalised.

    Several heads can share one pass (``--layer 3 --layer -1`` costs one forward pass, not two). ``layer=None``
    means the model's own module pipeline (torch only, and alone).
    """

    layer: int | None
    modes: tuple[str, ...]
    normalize: bool
    dim: int


def pool(hidden: np.ndarray, attention_mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """``(batch, seq, dim)`` float32 and a right-padded ``(batch, seq)`` mask -> ``(batch, dim * len(modes))``."""
    parts = []
    mean_sum = counts = None
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0].copy())  # right padding: token 0 is unmasked; a copy, normalised in place later
        elif mode == "max":
            masked = np.where(attention_mask[:, :, None].astype(bool), hidden, np.float32(-np.inf))
            parts.append(masked.max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mask = attention_mask.astype(np.float32)
                mean_sum = np.matmul(mask[:, None, :], hidden)[:, 0]  # masked sum over tokens, as one GEMM
                counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
            parts.append(mean_sum / (counts if mode == "mean" else np.sqrt(counts)))
        else:  # guarded by ModelInfo.simple and option checks
            raise ValidationError(f"Unsupported pooling mode {mode!r}")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

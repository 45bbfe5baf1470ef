"""Unit-length rows: the one normalisation that encoders, search, probes, zero-shot and recommenders share."""

from __future__ import annotations

import numpy as np

#: what a row's norm is floored at, as torch's ``F.normalize`` (so encoders match sentence-transformers): a zero row
#: stays zero (its cosine with anything is 0) and nothing is divided by zero.
EPS = 1e-12


def unit_rows(x: np.ndarray, *, copy: bool = False) -> np.ndarray:
    """Rows of the 2-D float array ``x`` scaled to unit length (in place unless ``copy``); zero rows stay zero."""
    out = np.array(x, copy=True) if copy else x
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    np.maximum(norms, EPS, out=norms)
    out /= norms[:, None]
    return out

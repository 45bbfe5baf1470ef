"""Fixtures for stackers: digits split into two blocks, synthetic multi-block data, stores built through the API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import stackers


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    # Small matrices on a 2-core machine: threaded BLAS only spins against other work (80x slower under load).
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def digits_blocks() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 8x8 digits as two blocks: the top half and the bottom half of each image (each alone is weaker)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return {"top": X[:, :32], "bottom": X[:, 32:]}, y


@pytest.fixture
def digits_ts(digits_blocks) -> stackers.TrainingSet:
    blocks, y = digits_blocks
    return stackers.TrainingSet(blocks=dict(blocks), y=y)


def make_blocks(n: int = 600, k: int = 4, dims: tuple[int, ...] = (12, 20), strength: float = 1.0,
                seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gaussian class clusters seen through several noisy blocks; each block knows some classes better."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    blocks = {}
    for b, dim in enumerate(dims):
        means = rng.standard_normal((k, dim))
        gain = strength * (0.4 + rng.random(k))  # per-class signal strength differs by block
        X = means[y] * gain[y, None] + rng.standard_normal((n, dim)) * 1.5
        blocks[f"b{b}"] = X.astype(np.float32)
    return blocks, y


@pytest.fixture
def synthetic():
    return make_blocks


def _write_set(store, name: str, ids: np.ndarray, matrix: np.ndarray, *, spec: dict | None = None,
              version=None, extra: dict | None = None) -> None:
    """Write rows (ids in the given order) through the public store API."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    cols = {"id": pa.array(np.asarray(ids)), "embedding": emb, **{k: pa.array(v) for k, v in (extra or {}).items()}}
    store.write(name, pa.table(cols), key="id", spec=spec or {"encoder": f"external:{name}", "metric": "cosine"},
                version=version)


@pytest.fixture
def write_set():
    """``write_set(store, name, ids, matrix, spec=None, version=None, extra=None)``: rows in the given order."""
    return _write_set


@pytest.fixture
def digits_store(store, digits_blocks):
    """Two feature sets of the digits written in different row orders, plus a labels table in a third order."""
    blocks, y = digits_blocks
    n = len(y)
    ids = np.arange(n) * 10 + 7  # keys that are not row numbers
    rng = np.random.default_rng(1)
    order_top = np.arange(n)
    order_bottom = rng.permutation(n)
    _write_set(store, "top", ids[order_top], blocks["top"][order_top])
    _write_set(store, "bottom", ids[order_bottom], blocks["bottom"][order_bottom])
    label_order = rng.permutation(n)
    labels = pd.DataFrame({
        "id": ids[label_order],
        "label": np.array([f"digit{d}" for d in y])[label_order],
        "writer": (ids[label_order] // 70) % 40,  # a stand-in for "who wrote it": groups
        "parity": np.where(y[label_order] % 2 == 0, "even", "odd"),
    })
    return store, labels

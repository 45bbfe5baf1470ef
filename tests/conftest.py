"""Shared fixtures: real stores on tmp_path, small real arrays. Nothing here mocks storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featurestore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> featurestore.Store:
    return featurestore.open(tmp_path / "store")


@pytest.fixture
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)


def _run_python(code: str, *, timeout: float = 120, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (the way a second process or a killed job really behaves)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def run_python():
    """Run code in a fresh interpreter: ``run_python(code, timeout=..., env=..., check=True)``."""
    return _run_python


def _read_line(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The child's next stdout line, or an AssertionError after ``timeout`` seconds: a stuck child never hangs CI."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            raise AssertionError(f"no output from the child process within {timeout:g}s")
    return proc.stdout.readline()


@pytest.fixture
def read_line():
    """``read_line(proc, timeout=120)``: the next line a Popen child prints, with a deadline."""
    return _read_line


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


TINY_CLIP = "fs-test-tiny-clip"
_TINY_CLIP_CONFIG = {"embed_dim": 32,
                     "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
                     "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny random-init open_clip architecture registered with ``open_clip.add_model_config``: its name.

    No package ships CLIP weights, so tests run the real open_clip code on this config (``open_clip:<name>/random``).
    """
    open_clip = pytest.importorskip("open_clip")
    import json

    path = tmp_path_factory.mktemp("clip-config") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(_TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)
    return TINY_CLIP


# Two code paths that score the same model on the same vectors (serving vs stored features, the CLI vs the API, a
# batch of 110 rows vs 10) may sum in different orders: BLAS picks its kernel and blocking by the matrix's shape and
# the CPU, so probabilities can differ in the last bits (seen: 0.00048686069629598136 vs ...174 on an AMD EPYC,
# 110 rows vs 10). A relative 1e-9 is ~10^6 times that noise and ~10^6 times smaller than any real change of model or
# features, so it still catches every real difference. Keys, labels, errors and predictions stay exact.
PROBA_RTOL = 1e-9


def _same_predictions(actual, expected, *, rtol: float = PROBA_RTOL) -> None:
    """Assert two prediction outputs (Arrow tables or lists of row dicts) agree: floats to ``rtol``, the rest exactly."""
    import pyarrow as pa

    rows = [actual.to_pylist() if isinstance(actual, pa.Table) else list(actual),
            expected.to_pylist() if isinstance(expected, pa.Table) else list(expected)]
    if isinstance(actual, pa.Table) and isinstance(expected, pa.Table):
        assert actual.column_names == expected.column_names, (actual.column_names, expected.column_names)
    assert len(rows[0]) == len(rows[1]), f"{len(rows[0])} rows != {len(rows[1])} rows"
    for i, (got, want) in enumerate(zip(*rows)):
        assert got.keys() == want.keys(), f"row {i}: columns {sorted(got)} != {sorted(want)}"
        exact = {c: v for c, v in got.items() if not isinstance(v, float)}
        assert exact == {c: want[c] for c in exact}, f"row {i}: {got} != {want}"
        for c in got.keys() - exact.keys():
            assert isinstance(want[c], float) and want[c] == pytest.approx(got[c], rel=rtol, abs=1e-300), \
                f"row {i}, column {c!r}: {got[c]!r} != {want[c]!r} (rtol {rtol:g})"


@pytest.fixture
def same_predictions():
    """``same_predictions(actual, expected)``: predictions equal, probabilities within ``PROBA_RTOL`` (see above)."""
    return _same_predictions

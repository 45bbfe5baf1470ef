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

"""Fixtures of the featurestore tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weight hashes and ONNX exports of one test module go to a private temporary cache directory."""
    path = tmp_path_factory.mktemp("featurestore-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATURESTORE_CACHE_DIR", str(path))
        mp.delenv("FEATURESTORE_ALLOW_DOWNLOAD", raising=False)
        yield path

"""Fixtures of the command-line tests: a CliRunner and a store holding one small feature set."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import featurestore


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def filled(tmp_path):
    """A store with ``vecs``: keys 0..19, 8-dim vectors, spec encoder external:test, metric cosine."""
    store = featurestore.open(tmp_path / "store")
    rng = np.random.default_rng(0)
    store.write("vecs", {"id": np.arange(20), "embedding": rng.standard_normal((20, 8)).astype(np.float32)},
                spec={"encoder": "external:test", "metric": "cosine"})
    return store

"""Comparing two versions: specs side by side, keys added/removed/changed, cosine between the shared keys."""

from __future__ import annotations

import numpy as np
import pytest

import featurestore

SPEC = {"encoder": "external:diff-test"}


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def two_versions(store):
    """v1: keys 0..99. v2 (a new spec): keys 10..109; 0..9 removed, 100..109 added, 10..19 moved a little,
    20..99 the same vectors."""
    base = _vectors(110)
    store.write("d", {"id": np.arange(100), "embedding": base[:100]}, spec=SPEC)
    moved = base.copy()
    moved[10:20] += 0.05 * _vectors(10, seed=1)
    store.write("d", {"id": np.arange(10, 110), "embedding": moved[10:110]}, spec={**SPEC, "checkpoint": "b"},
                version="new")
    return store, base, moved


def test_diff_counts_keys_and_measures_how_far_shared_vectors_moved(two_versions):
    store, base, moved = two_versions
    d = store.diff("d@v1", "d@v2", examples=3)
    assert (d.a, d.b, d.rows, d.key) == ("d@v1", "d@v2", [100, 100], [["id"], ["id"]])
    assert d.spec_changed == ["checkpoint"] and d.spec["checkpoint"] == [None, "b"]
    assert d.spec["encoder"] == ["external:diff-test"] * 2
    assert (d.shared, d.added, d.removed, d.changed, d.identical) == (90, 10, 10, 10, 80)
    assert d.examples == {"added": [100, 101, 102], "removed": [0, 1, 2], "changed": [10, 11, 12]}
    a, b = base[10:100].astype(np.float64), moved[10:100].astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert d.cosine_mean == pytest.approx(cos.mean()) and d.cosine_min == pytest.approx(cos.min())
    assert 0.9 < d.cosine_min < 0.99999 and d.note is None
    assert d.to_dict()["spec_changed"] == ["checkpoint"]


def test_diff_accepts_feature_sets_names_and_times(two_versions):
    store, *_ = two_versions
    same = store.diff("d", store.get("d", 2))  # "d" is the latest: v2
    assert (same.shared, same.added, same.removed, same.changed, same.identical) == (100, 0, 0, 0, 100)
    assert same.cosine_min == pytest.approx(1.0) and same.spec_changed == []
    created = store.get("d", 1).manifest.partitions[0].created_at
    then = store.diff(f"d@{created}", "d@v1")
    assert then.a.startswith("d@v1 as of ") and then.shared == 100


def test_different_dims_compare_keys_but_not_vectors(store):
    store.write("x", {"id": np.arange(5), "embedding": _vectors(5, 8)}, spec=SPEC)
    store.write("x", {"id": np.arange(3, 8), "embedding": _vectors(5, 4)}, spec={**SPEC, "model": "small"},
                version="new")
    d = store.diff("x@v1", "x@v2")
    assert d.spec["dim"] == [8, 4] and "dim" in d.spec_changed
    assert (d.shared, d.added, d.removed) == (2, 3, 3) and d.cosine_mean is None and "dims differ" in d.note


@pytest.mark.parametrize("a, b, error, match", [
    ("nope@v1", "d@v1", featurestore.FeatureSetNotFoundError, "No feature set named 'nope'"),
    ("d@v9", "d@v1", featurestore.FeatureSetNotFoundError, "no version 9"),
    ("d@tomorrow", "d@v1", featurestore.ValidationError, "NAME, NAME@vK or NAME@<ISO time>"),
    (3, "d@v1", featurestore.ValidationError, "Got int 3"),
])
def test_bad_references_are_named(two_versions, a, b, error, match):
    store, *_ = two_versions
    with pytest.raises(error, match=match):
        store.diff(a, b)

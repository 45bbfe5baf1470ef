"""Store.drift: a known shift is found, no shift is not, every statistic equals a plain numpy/scipy computation, and
vectors of different specs are refused."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from featurestore import DriftResult, SpecMismatchError, ValidationError

SPEC = {"encoder": "external:test", "metric": "cosine"}


def _write(store, name, matrix, *, start=0, spec=SPEC, **columns):
    ids = np.arange(start, start + len(matrix))
    store.write(name, {"id": ids, "embedding": np.asarray(matrix, dtype=np.float32), **columns}, spec=spec)


def _gaussian(n, dim=8, shift=0.0, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim))
    x[:, 0] += shift
    return x


def test_a_known_shift_is_detected(store):
    _write(store, "a", _gaussian(120, seed=1))
    _write(store, "b", _gaussian(120, shift=0.8, seed=2))
    r = store.drift("a", "b", permutations=200)
    assert r.p_value < 0.01
    assert r.centroid_distance > 2 * r.centroid_noise  # 0.8 shift vs sqrt(2 * 8 / 120) = 0.37 by chance


def test_no_shift_is_not_detected(store):
    x = _gaussian(300, seed=3)
    _write(store, "a", x, half=np.where(np.arange(300) % 2 == 0, "even", "odd"))
    r = store.drift("a", where_a="half = 'even'", where_b="half = 'odd'", permutations=200)
    assert r.p_value > 0.05
    assert (r.a.rows, r.b.rows) == (150, 150)


def _mmd2_unbiased(x, y, sigma):
    kxx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma ** 2))
    kyy = np.exp(-cdist(y, y, "sqeuclidean") / (2 * sigma ** 2))
    kxy = np.exp(-cdist(x, y, "sqeuclidean") / (2 * sigma ** 2))
    m, n = len(x), len(y)
    return ((kxx.sum() - m) / (m * (m - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * kxy.mean())


def test_statistics_equal_numpy(store):
    x = _gaussian(40, dim=5, seed=4) * 2.0
    y = _gaussian(30, dim=5, shift=0.5, seed=5) + 0.3
    _write(store, "a", x)
    _write(store, "b", y)
    r = store.drift("a", "b", permutations=50, seed=7)
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)

    ca, cb = x.mean(0), y.mean(0)
    assert r.centroid_cosine == pytest.approx(ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb), rel=1e-9)
    assert r.centroid_distance == pytest.approx(np.linalg.norm(ca - cb), rel=1e-9)
    spread_a = np.sqrt(np.mean(np.sum((x - ca) ** 2, axis=1)))
    spread_b = np.sqrt(np.mean(np.sum((y - cb) ** 2, axis=1)))
    assert (r.a.spread, r.b.spread) == (pytest.approx(spread_a, rel=1e-9), pytest.approx(spread_b, rel=1e-9))
    assert r.centroid_shift == pytest.approx(np.linalg.norm(ca - cb) / np.sqrt((spread_a ** 2 + spread_b ** 2) / 2))
    assert r.centroid_noise == pytest.approx(np.sqrt(spread_a ** 2 / 40 + spread_b ** 2 / 30))
    na, nb = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    pooled = np.sqrt(((39 * na.var(ddof=1)) + (29 * nb.var(ddof=1))) / 68)
    assert r.norm_shift == pytest.approx((nb.mean() - na.mean()) / pooled, rel=1e-9)
    assert (r.a.norm_mean, r.a.norm_std) == (pytest.approx(na.mean()), pytest.approx(na.std(ddof=1)))

    z = np.vstack([x, y])
    sigma = np.sqrt(np.median(pdist(z, "sqeuclidean")))
    assert r.bandwidth == pytest.approx(sigma, rel=1e-9)
    assert r.mmd2 == pytest.approx(_mmd2_unbiased(x, y, sigma), rel=1e-9)
    rng = np.random.default_rng(7)  # the same draws, in the same order: one permutation of the pooled rows each
    perms = [rng.permutation(70) for _ in range(50)]
    null = [_mmd2_unbiased(z[p[:40]], z[p[40:]], sigma) for p in perms]
    assert r.p_value == pytest.approx((1 + sum(s >= r.mmd2 for s in null)) / 51)


def test_rows_are_capped_per_side_and_seeded(store):
    _write(store, "a", _gaussian(200, seed=8))
    _write(store, "b", _gaussian(150, seed=9))
    r = store.drift("a", "b", max_rows=50, permutations=20, seed=3)
    assert (r.a.rows, r.a.rows_tested, r.b.rows, r.b.rows_tested) == (200, 50, 150, 50)
    assert r.sample_a.shape == (50, 8) and r.sample_b.shape == (50, 8)
    again = store.drift("a", "b", max_rows=50, permutations=20, seed=3)
    assert again.to_dict() == r.to_dict()
    assert store.drift("a", "b", max_rows=50, permutations=20, seed=4).mmd2 != r.mmd2
    full = store.drift("a", "b", permutations=0)  # the shift statistics use every row, not the sample
    assert full.centroid_distance == r.centroid_distance and full.p_value is None


def test_sides_read_the_view_newest_row_per_key(store):
    _write(store, "a", _gaussian(20, seed=10))
    _write(store, "a", np.full((5, 8), 10.0))  # keys 0..4 rewritten far away
    _write(store, "b", _gaussian(20, seed=11))
    r = store.drift("a", "b", permutations=0)
    view = store.get("a").to_numpy().astype(np.float64)
    assert r.a.rows == 20
    assert r.a.norm_mean == pytest.approx(np.linalg.norm(view, axis=1).mean())


def test_two_versions_and_unit_vectors(store):
    x = _gaussian(60, seed=12)
    y = _gaussian(60, shift=2.0, seed=13)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    _write(store, "a", unit(x))
    store.write("a", {"id": np.arange(60), "embedding": unit(y).astype(np.float32)}, spec=SPEC, version="new")
    r = store.drift("a@v1", "a@v2", permutations=100)
    assert (r.a.version, r.b.version) == (1, 2)
    assert r.norm_shift is None  # unit vectors: the norm spread is float rounding
    assert r.p_value < 0.01
    assert "n/a (unit-norm vectors)" in r.summary() and "the sides differ" in r.summary()


def test_specs_must_match(store):
    _write(store, "a", _gaussian(10))
    _write(store, "other_model", _gaussian(10), spec={"encoder": "external:other", "metric": "cosine"})
    _write(store, "wide", _gaussian(10, dim=4))
    with pytest.raises(SpecMismatchError, match=r"specs differ \(encoder: 'external:test' -> 'external:other'\)"):
        store.drift("a", "other_model")
    r = store.drift("a", "other_model", permutations=0, allow_spec_differences=True)
    assert r.spec_differences == {"encoder": ["external:test", "external:other"]}
    with pytest.raises(SpecMismatchError, match=r"\(dim=8\) with 'wide' v1 \(dim=4\)"):
        store.drift("a", "wide", allow_spec_differences=True)


BAD = [
    (dict(a="a", max_rows=1), "'max_rows' parameter of Store.drift must be an int >= 2. Got 1"),
    (dict(a="a", b="b", permutations=-1), "'permutations' parameter of Store.drift"),
    (dict(a="a", b="b", seed=-2), "'seed' parameter of Store.drift"),
    (dict(a=3), "'a' parameter of Store.drift must be a feature set reference"),
    (dict(a="a"), "Both sides are a@v1"),
    (dict(a="a", b="a@v1"), "Both sides are a@v1"),
    (dict(a="a", where_a="id < 1", where_b="id >= 1"), r"Side A \(a@v1 where id < 1\) has 1 row"),
    (dict(a="a", where_a="nope = 1", where_b="id > 2"), "The where filter 'nope = 1' cannot run on 'a' v1"),
    (dict(a="a@v7", b="b"), "has no version 7"),
]


@pytest.mark.parametrize("kwargs, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_are_refused_before_any_test(store, kwargs, match):
    _write(store, "a", _gaussian(10))
    _write(store, "b", _gaussian(10, seed=1))
    with pytest.raises((ValidationError, LookupError, ValueError), match=match):
        store.drift(**kwargs)


def test_result_is_plain_data(store):
    _write(store, "a", _gaussian(30))
    _write(store, "b", _gaussian(30, seed=1))
    r = store.drift("a", "b", permutations=10)
    assert isinstance(r, DriftResult)
    d = r.to_dict()
    assert "sample_a" not in d and d["a"]["set"] == "a" and d["b"]["rows"] == 30
    assert set(d) >= {"centroid_cosine", "centroid_distance", "centroid_shift", "centroid_noise", "norm_shift",
                      "mmd2", "bandwidth", "p_value", "permutations", "seed", "spec_differences"}

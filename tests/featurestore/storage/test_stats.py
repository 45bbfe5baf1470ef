"""Per-partition statistics: written by the writer, checked when a manifest is read, pooled exactly, shown by `show`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from featurestore import CorruptStoreError
from featurestore.storage._layout import MANIFEST
from featurestore.storage._manifest import read_manifest
from featurestore.storage._stats import float32_list, pooled_stats, version_stats
from pipelines.cli import cli

SPEC = {"encoder": "external:test", "metric": "cosine"}


def _write(store, ids, matrix, name="s", **kwargs):
    return store.write(name, {"id": np.asarray(ids), "embedding": np.asarray(matrix, dtype=np.float32)}, spec=SPEC,
                       **kwargs)


def _numpy_stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    mean = x.mean(axis=0)
    return {"count": len(x), "norm_mean": norms.mean(), "norm_std": norms.std(), "mean": mean,
            "spread": np.sqrt(np.mean(np.sum((x - mean) ** 2, axis=1)))}


def test_partition_stats_equal_numpy_on_a_known_case(store):
    _write(store, [1, 2, 3], [[3, 4], [6, 8], [0, 5]])  # norms 5, 10, 5
    stats = store.get("s").manifest.partitions[0].stats
    assert stats["count"] == 3
    assert stats["norm_mean"] == pytest.approx(20 / 3, abs=1e-12)
    assert stats["norm_std"] == pytest.approx(np.std([5, 10, 5]), abs=1e-12)
    assert np.array_equal(np.float32(stats["mean"]), np.float32([3, 17 / 3]))


def test_mean_vector_is_rounded_to_float32_precision_and_reads_back_exactly():
    values = np.random.default_rng(0).standard_normal(64)
    rounded = float32_list(values)
    assert np.array_equal(np.asarray(rounded, dtype=np.float32), values.astype(np.float32))
    assert len(json.dumps(rounded)) < len(json.dumps(values.tolist())) * 0.75  # shorter than float64 text


def test_pooled_stats_over_several_partitions_equal_numpy_over_all_rows(store, monkeypatch):
    import featurestore.storage._writer as writer

    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 16)) * scale + shift for n, scale, shift in ((50, 1.0, 0.0), (7, 3.0, 2.0),
                                                                                  (120, 0.5, -1.0))]
    start = 0
    for x in parts:
        _write(store, np.arange(start, start + len(x)), x)
        start += len(x)
    monkeypatch.setattr(writer, "_SLICE_BYTES", 2000)  # one write cut into several partitions, each with its stats
    last = rng.standard_normal((90, 16)) + 5
    _write(store, np.arange(start, start + 90), last)
    m = store.get("s").manifest
    assert len(m.partitions) > 4 and all(p.stats["count"] == p.rows for p in m.partitions)

    rows = np.vstack([*parts, last]).astype(np.float32)
    want = _numpy_stats(rows)
    got = version_stats(m.partitions, m.dim, has_updates=m.has_updates)
    assert got["count"] == want["count"] == 267 and got["view"] and got["rows_without_stats"] == 0
    assert got["norm_mean"] == pytest.approx(want["norm_mean"], rel=1e-7)  # squared norms summed in float32
    assert got["norm_std"] == pytest.approx(want["norm_std"], rel=1e-6)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-6, atol=1e-7)  # float32-rounded means
    assert got["spread"] == pytest.approx(want["spread"], rel=1e-6)
    assert got["centroid_norm"] == pytest.approx(np.linalg.norm(want["mean"]), rel=1e-6)


def test_float16_sets_get_their_stats_without_overflow(store):
    rows = np.full((3, 4), 200.0)  # squared norm 160,000: past float16's 65,504
    store.write("h", {"id": np.arange(3), "embedding": rows.astype(np.float16)}, spec={**SPEC, "dtype": "float16"})
    stats = store.get("h").manifest.partitions[0].stats
    assert stats["norm_mean"] == pytest.approx(400.0) and stats["mean"] == [200.0] * 4


def test_huge_values_whose_float32_squares_overflow_get_finite_stats(store):
    big = np.full((2, 64), 2.5e18)  # a squared norm of 4e38 is past float32's 3.4e38
    _write(store, [1, 2], big)
    stats = store.get("s").manifest.partitions[0].stats
    assert stats["norm_mean"] == pytest.approx(2.5e18 * 8) and stats["mean"][0] == pytest.approx(2.5e18)


def test_pooling_weights_by_count():
    one = {"count": 1, "norm_mean": 1.0, "norm_std": 0.0, "mean": [1.0, 0.0]}
    three = {"count": 3, "norm_mean": 2.0, "norm_std": 0.0, "mean": [0.0, 2.0]}
    got = pooled_stats([one, three], 2)
    assert got["norm_mean"] == pytest.approx(1.75)
    assert got["norm_std"] == pytest.approx(np.std([1, 2, 2, 2]))
    np.testing.assert_allclose(got["mean"], [0.25, 1.5])


def test_stats_describe_committed_rows_when_a_key_is_rewritten(store):
    _write(store, [1, 2], [[1, 0], [0, 1]])
    _write(store, [2], [[0, 9]])  # key 2 rewritten: the view keeps [0, 9], the stats count both writes
    m = store.get("s").manifest
    got = version_stats(m.partitions, m.dim, has_updates=m.has_updates)
    assert got["count"] == 3 and store.get("s").count() == 2
    assert got["view"] is False
    np.testing.assert_allclose(got["mean"], [1 / 3, 10 / 3], rtol=1e-6)


def _strip_stats(path) -> None:
    data = json.loads(path.read_text())
    for p in data["partitions"]:
        p.pop("stats")
    path.write_text(json.dumps(data, indent=1))


def test_manifests_without_stats_still_load_and_later_writes_add_them(store):
    _write(store, [1, 2], [[1, 0], [0, 1]])
    fs = store.get("s")
    _strip_stats(fs.path / MANIFEST)  # what a featurestore before statistics wrote
    m = read_manifest(fs.path)
    assert m.partitions[0].stats is None
    assert version_stats(m.partitions, m.dim, has_updates=False) is None
    assert store.get("s").to_numpy().shape == (2, 2)

    _write(store, [3, 4], [[2, 0], [0, 2]])
    m = store.get("s").manifest
    got = version_stats(m.partitions, m.dim, has_updates=m.has_updates)
    assert (got["count"], got["rows_without_stats"], got["view"]) == (2, 2, False)
    assert got["norm_mean"] == pytest.approx(2.0)
    assert '"stats"' not in (store.get("s").path / MANIFEST).read_text().split('"errors"')[1]  # no null stats


def test_stats_whose_count_disagrees_with_the_rows_are_left_out(store):
    _write(store, [1, 2], [[1, 0], [0, 1]])
    _write(store, [3], [[5, 0]])
    path = store.get("s").path / MANIFEST
    data = json.loads(path.read_text())
    data["partitions"][0]["stats"]["count"] = 7  # a hand edit: the manifest still loads
    path.write_text(json.dumps(data))
    m = read_manifest(path.parent)
    got = version_stats(m.partitions, m.dim, has_updates=m.has_updates)
    assert (got["count"], got["rows_without_stats"], got["norm_mean"]) == (1, 2, 5.0)


def _set_stats(field, value, *, where="partitions"):
    def mutate(data):
        target = data[where][0]
        if field is None:
            target["stats"] = value
        else:
            target["stats"][field] = value
    return mutate


def _stats_on_errors(data):
    data["errors"] = [{**data["partitions"][0], "file": "errors-x-00009.parquet"}]


MALFORMED = [
    ("count-zero", _set_stats("count", 0), "partitions[0].stats.count"),
    ("count-bool", _set_stats("count", True), "partitions[0].stats.count"),
    ("norm-negative", _set_stats("norm_mean", -1.0), "partitions[0].stats.norm_mean"),
    ("norm-string", _set_stats("norm_std", "0.1"), "partitions[0].stats.norm_std"),
    ("norm-inf", _set_stats("norm_std", float("inf")), "partitions[0].stats.norm_std"),
    ("mean-short", _set_stats("mean", [0.5]), "partitions[0].stats.mean"),
    ("mean-nan", _set_stats("mean", [0.5, float("nan")]), "partitions[0].stats.mean"),
    ("mean-bool", _set_stats("mean", [0.5, True]), "partitions[0].stats.mean"),
    ("mean-not-list", _set_stats("mean", "0.5,0.5"), "partitions[0].stats.mean"),
    ("extra-key", _set_stats("median", 1.0), "partitions[0].stats"),
    ("missing-key", lambda d: d["partitions"][0]["stats"].pop("norm_std"), "partitions[0].stats"),
    ("not-object", _set_stats(None, [1, 2]), "partitions[0].stats"),
    ("on-errors-file", _stats_on_errors, "errors[0].stats"),
]


@pytest.mark.parametrize("label, mutate, field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_stats_are_refused_naming_the_field(store, label, mutate, field):
    _write(store, [1, 2], [[1, 0], [0, 1]])
    path = store.get("s").path / MANIFEST
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data, indent=1))
    with pytest.raises(CorruptStoreError, match=f"field '{field.replace('[', '.').replace(']', '.')}'"):
        read_manifest(path.parent)


def test_show_prints_the_statistics(store):
    rows = np.array([[3, 4], [6, 8], [0, 5]], dtype=np.float32)
    _write(store, [1, 2, 3], rows)
    runner = CliRunner()
    out = runner.invoke(cli, ["show", "s", "--store", str(store.root), "--json", "--partitions"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["stats"]["count"] == 3 and info["stats"]["view"] is True
    assert info["stats"]["norm_mean"] == pytest.approx(20 / 3)
    assert np.array_equal(np.float32(info["stats"]["mean"]), np.float32([3, 17 / 3]))
    assert info["partition_files"][0]["stats"]["norm_std"] == pytest.approx(np.std([5, 10, 5]))

    text = runner.invoke(cli, ["show", "s", "--store", str(store.root), "--partitions"])
    assert text.exit_code == 0, text.output
    assert "statistics (3 committed rows): norm 6.667 ± 2.36" in text.stdout
    assert "6.667 ± 2.36" in text.stdout.split("partitions\n", 1)[1]  # the per-partition column

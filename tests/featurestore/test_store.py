"""Round trips, versions, idempotence and validation on real Parquet files and DuckDB."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featurestore
from featurestore import FeatureSetNotFoundError, InvalidNameError, SpecMismatchError, ValidationError
from featurestore.utils._validation import InvalidParameterError

SPEC = {"encoder": "external:test-model", "metric": "cosine"}


def _table(ids, matrix, **extra):
    return {"id": np.asarray(ids), "embedding": matrix, **extra}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(store, vectors, dtype):
    x = vectors.astype(dtype)
    store.write("vecs", _table(np.arange(len(x)), x), spec=SPEC)
    fs = store.get("vecs")
    assert fs.dtype == dtype and fs.dim == 16 and fs.version == 1
    assert fs.count() == len(x)
    got = fs.to_numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.astype(np.float32))
    table = fs.to_arrow()
    assert table.schema.field("embedding").type == pa.list_(pa.float16() if dtype == "float16" else pa.float32(), 16)
    assert table.column_names[:3] == ["id", "content_hash", "embedding"]
    assert fs.keys().column("id").to_pylist() == list(range(len(x)))


def test_provenance_in_parquet_metadata_and_manifest(store, vectors):
    store.write("vecs", _table(range(10), vectors[:10]), spec={**SPEC, "model": {"layer": 3}})
    fs = store.get("vecs")
    part = fs.path / fs.manifest.partitions[0].file
    meta = pq.read_schema(part).metadata
    spec = json.loads(meta[b"featurestore.spec"])
    assert spec == fs.spec == {"encoder": "external:test-model", "metric": "cosine", "model": {"layer": 3},
                               "dim": 16, "dtype": "float32"}
    manifest = json.loads((fs.path / "manifest.json").read_text())
    assert manifest["spec"] == spec and manifest["partitions"][0]["rows"] == 10


def test_pandas_and_arrow_inputs(store, vectors):
    df = pd.DataFrame({"id": [f"k{i}" for i in range(5)], "embedding": list(vectors[:5]), "price": np.arange(5.0)})
    store.write("frame", df, spec=SPEC)
    table = pa.table({"id": ["k5"], "embedding": pa.array([vectors[5].tolist()], pa.list_(pa.float32())), "price": [5.0]})
    store.write("frame", table, spec=SPEC)
    fs = store.get("frame")
    assert fs.count() == 6
    assert store.sql("select sum(price) from frame").fetchone()[0] == 15.0


def test_reappend_identical_rows_writes_nothing(store, vectors):
    first = store.write("vecs", _table(range(100), vectors[:100]), spec=SPEC)
    again = store.write("vecs", _table(range(100), vectors[:100]), spec=SPEC)
    assert first["rows_written"] == 100
    assert again["rows_written"] == 0 and again["rows_skipped"] == 100
    assert len(store.get("vecs").manifest.partitions) == 1


def test_changed_rows_newest_wins(store, vectors):
    store.write("vecs", _table(range(100), vectors[:100]), spec=SPEC)
    changed = vectors[:100].copy()
    changed[:10] += 1.0
    result = store.write("vecs", _table(range(100), changed), spec=SPEC)
    assert result["rows_written"] == 10 and result["rows_skipped"] == 90
    fs = store.get("vecs")
    assert fs.count() == 100 and fs.manifest.has_updates
    ids = fs.keys().column("id").to_numpy()
    np.testing.assert_array_equal(fs.to_numpy(), changed[ids])
    sql = store.sql("select id, embedding from vecs order by id").numpy()
    np.testing.assert_array_equal(sql["embedding"], changed)


def test_versions_and_spec_mismatch(store, vectors):
    store.write("vecs", _table(range(10), vectors[:10]), spec=SPEC)
    other = {"encoder": "external:other-model", "metric": "cosine"}
    with pytest.raises(SpecMismatchError, match=r"encoder: 'external:test-model' -> 'external:other-model'") as e:
        store.write("vecs", _table(range(10), vectors[:10]), spec=other)
    assert 'version="new"' in str(e.value)
    store.write("vecs", _table(range(5), vectors[:5] * 2), spec=other, version="new")
    assert store.versions("vecs") == [1, 2]
    assert store.get("vecs").count() == 5 and store.get("vecs", 1).count() == 10
    assert store.sql('select count(*) from "vecs@v1"').fetchone()[0] == 10
    assert store.sql("select count(*) from vecs").fetchone()[0] == 5
    # "auto" finds the version whose spec matches
    store.write("vecs", _table(range(10, 12), vectors[10:12]), spec=SPEC, version="auto")
    assert store.get("vecs", 1).count() == 12 and store.versions("vecs") == [1, 2]


def test_dim_belongs_to_the_spec(store, vectors):
    store.write("vecs", _table(range(10), vectors[:10]), spec=SPEC)
    wide = np.hstack([vectors[:3], vectors[:3]])
    for version in (None, "auto"):
        with pytest.raises(ValidationError, match="spec has dim=16 but the rows have dim=32"):
            store.write("vecs", _table(range(3), wide), spec=SPEC, version=version)
    assert store.versions("vecs") == [1]


def _bad_cases(vectors):
    nan = vectors[:4].copy()
    nan[2, 5] = np.nan
    inf = vectors[:4].copy()
    inf[1, 0] = np.inf
    ragged = pa.array([vectors[0].tolist(), vectors[1].tolist(), vectors[2][:8].tolist()], pa.list_(pa.float32()))
    return [
        ("nan", {"id": np.arange(4), "embedding": nan}, "NaN or inf in 'embedding': id=2"),
        ("inf", {"id": np.arange(4), "embedding": inf}, "id=1"),
        ("null key", pa.table({"id": pa.array([1, None, 3]), "embedding": featurestore.storage._format.fixed_size_list(vectors[:3])}),
         "null value\\(s\\) in key column 'id' at row 1"),
        ("duplicate key", {"id": np.array([1, 2, 2, 3]), "embedding": vectors[:4]}, "appear more than once in this write: id=2"),
        ("wrong dtype", pa.table({"id": [1, 2], "embedding": pa.array([[1, 2], [3, 4]], pa.list_(pa.int64()))}),
         "must be float32 or float16"),
        ("not a list", pa.table({"id": [1, 2], "embedding": ["a", "b"]}), "expected a list of floats"),
        ("ragged", pa.table({"id": [7, 8, 9], "embedding": ragged}), "wrong dim \\(expected 16\\): id=9 has dim 8"),
        ("null embedding", pa.table({"id": [1, 2], "embedding": pa.array([vectors[0].tolist(), None], pa.list_(pa.float32()))}),
         "null embedding: id=2"),
        ("missing key", {"key": np.arange(4), "embedding": vectors[:4]}, "Key column 'id' is missing"),
        ("missing embedding", {"id": np.arange(4)}, "No 'embedding' column"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_validation_errors_name_the_rows(store, vectors, case):
    label, data, match = _bad_cases(vectors)[case]
    store.write("vecs", _table(range(100, 110), vectors[:10]), spec=SPEC)
    before = store.get("vecs").to_arrow()
    with pytest.raises(ValidationError, match=match):
        store.write("vecs", data, spec=SPEC)
    after = store.get("vecs").to_arrow()
    assert after.equals(before), f"{label}: stored rows changed after a refused write"


def test_key_type_change_is_refused(store, vectors):
    store.write("vecs", _table(range(3), vectors[:3]), spec=SPEC)
    with pytest.raises(ValidationError, match="wrong dtype or columns: id: int64 -> string"):
        store.write("vecs", {"id": np.array(["a", "b"]), "embedding": vectors[:2]}, spec=SPEC)


def test_float16_overflow_refused(store):
    x = np.full((2, 4), 1e6, dtype=np.float32)
    with pytest.raises(ValidationError, match="overflow float16"):
        store.write("half", _table(range(2), x), spec={**SPEC, "dtype": "float16"})


@pytest.mark.parametrize("name", ["../etc", "a/b", "Upper", "", "1abc", "select", "runs", "a" * 64, "x-y", None])
def test_names_are_validated(store, vectors, name):
    with pytest.raises(InvalidNameError):
        store.write(name, _table(range(2), vectors[:2]), spec=SPEC)
    assert not any((store.root / "sets").iterdir())


def test_spec_needs_an_encoder(store, vectors):
    with pytest.raises(ValidationError, match="needs a spec with an 'encoder'"):
        store.write("vecs", _table(range(2), vectors[:2]), spec={"metric": "cosine"})


def test_unknown_feature_set_lists_known(store, vectors):
    store.write("reviews_clip", _table(range(2), vectors[:2]), spec=SPEC)
    store.write("reviews_minilm", _table(range(2), vectors[:2]), spec=SPEC)
    with pytest.raises(FeatureSetNotFoundError, match="No feature set named 'reviews_minlm' in .* Known: 'reviews_clip', 'reviews_minilm'"):
        store.get("reviews_minlm")
    with pytest.raises(FeatureSetNotFoundError, match="has no version 7"):
        store.get("reviews_clip", 7)


def test_list(store, vectors):
    assert store.list() == []
    store.write("a", _table(range(5), vectors[:5]), spec=SPEC)
    store.write("a", _table(range(3), vectors[:3] + 1), spec={**SPEC, "encoder": "external:v2"}, version="new")
    [row] = store.list()
    assert (row["name"], row["version"], row["versions"], row["rows"], row["dim"]) == ("a", 2, [1, 2], 3, 16)


def test_open_refuses_foreign_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(featurestore.FeatureStoreError, match="not a feature store"):
        featurestore.open(tmp_path / "photos")
    with pytest.raises(featurestore.FeatureStoreError, match="No feature store"):
        featurestore.open(tmp_path / "missing", create=False)


def test_event_time_and_compound_keys(store, vectors):
    ts = pa.array(pd.date_range("2026-01-01", periods=4, freq="D"), pa.timestamp("us"))
    table = pa.table({"user": [1, 1, 2, 2], "item": ["a", "b", "a", "b"],
                      "embedding": featurestore.storage._format.fixed_size_list(vectors[:4]), "event_time": ts})
    store.write("pairs", table, key=["user", "item"], spec=SPEC)
    again = pa.table({"user": [1], "item": ["b"], "embedding": featurestore.storage._format.fixed_size_list(vectors[4:5]),
                      "event_time": ts[:1]})
    store.write("pairs", again, key=["user", "item"], spec=SPEC)
    fs = store.get("pairs")
    assert fs.count() == 4
    rows = store.sql("select user, item, embedding from pairs order by user, item").numpy()
    np.testing.assert_array_equal(rows["embedding"][1], vectors[4])
    with pytest.raises(SpecMismatchError, match="keyed by"):
        store.write("pairs", table.slice(1, 2), key="user", spec=SPEC)


@pytest.mark.parametrize("call, err, message", [
    (lambda s, d: s.write("vecs", d, spec=SPEC, version="latest"), InvalidParameterError,
     "The 'version' parameter of Store.write must be one of {'auto', 'new'}, an int >= 1 or None. Got 'latest' instead."),
    (lambda s, d: s.write("vecs", d, spec=SPEC, version=0), InvalidParameterError, "Got 0 instead."),
    (lambda s, d: s.write("vecs", d, spec=SPEC, version=True), InvalidParameterError, "Got True instead."),
    (lambda s, d: s.writer("vecs", spec=SPEC, version=1.5), InvalidParameterError,
     "The 'version' parameter of Store.writer must be"),
    (lambda s, d: s.write("vecs", d, spec=SPEC, lock_timeout=-1), InvalidParameterError,
     "The 'lock_timeout' parameter of Store.write must be a float >= 0. Got -1 instead."),
    (lambda s, d: featurestore.Writer(s, "vecs", spec=SPEC, lock_timeout="1"), InvalidParameterError,
     "The 'lock_timeout' parameter of Writer must be a float >= 0. Got '1' instead."),
    (lambda s, d: s.sql("select 1", timeout=0), InvalidParameterError,
     "The 'timeout' parameter of Store.sql must be a float > 0 or None. Got 0 instead."),
    (lambda s, d: s.sql("select 1", read_only="no"), InvalidParameterError,
     "The 'read_only' parameter of Store.sql must be a bool. Got 'no' instead."),
])
def test_parameters_are_checked_before_anything_is_written(store, vectors, call, err, message):
    with pytest.raises(err, match=re.escape(message)):
        call(store, _table(range(3), vectors[:3]))
    assert not any((store.root / "sets").iterdir())


def test_is_store_and_the_matrix_of_a_version(store, vectors, tmp_path):
    """featurestore.is_store tells a store's root from any folder; FeatureSet.matrix() is the search cache: a
    memory-mapped float32 matrix whose row i is key i (unit rows with unit=True)."""
    assert featurestore.is_store(store.root) and not featurestore.is_store(tmp_path)
    store.write("m", {"id": np.arange(len(vectors)), "embedding": vectors}, spec={"encoder": "external:test"})
    fs = store.get("m")
    raw, unit = fs.matrix(), fs.matrix(unit=True)
    order = raw.keys.column("id").to_numpy()
    np.testing.assert_array_equal(raw.vectors, vectors[order])
    np.testing.assert_allclose(np.linalg.norm(unit.vectors, axis=1), 1.0, rtol=1e-6)
    assert isinstance(raw.vectors, np.memmap)

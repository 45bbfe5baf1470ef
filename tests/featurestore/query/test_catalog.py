"""The DuckDB catalog: views per set and version, rebuildable, read-only SQL, cosine in SQL."""

from __future__ import annotations

import subprocess
import sys
import warnings

import duckdb
import numpy as np
import pytest

from featurestore import ReadOnlyQueryError

SPEC = {"encoder": "external:test-model"}


def _fill(store, vectors):
    store.write("a", {"id": np.arange(100), "embedding": vectors[:100]}, spec=SPEC)
    store.write("a", {"id": np.arange(50, 150), "embedding": vectors[50:150] * 2}, spec=SPEC)
    store.write("a", {"id": np.arange(10), "embedding": vectors[:10] + 1}, spec={**SPEC, "encoder": "external:v2"},
                version="new")
    store.write("b", {"id": np.arange(30), "embedding": vectors[:30, :8].astype(np.float16)}, spec=SPEC)


QUERIES = [
    "select id, embedding from a order by id",
    'select id, embedding from "a@v1" order by id',
    "select id from b order by id",
    "select name, version, latest, rows_written from feature_sets order by name, version",
    "select name, version, rows_written from runs order by name, version, rows_written",
]


def _open_catalog(store):
    """As an outside DuckDB client does: the catalog's paths are relative to the store folder."""
    con = duckdb.connect(str(store.catalog_path), read_only=True)
    con.execute(f"SET file_search_path = '{store.root}'")
    return con


def test_catalog_deleted_then_rebuilt_gives_identical_results(store, vectors):
    _fill(store, vectors)
    path = store.catalog_path
    con = _open_catalog(store)
    before = [con.sql(q).fetchall() for q in QUERIES]
    con.close()
    path.unlink()
    report = store.doctor()
    assert not report.ok and report.findings[0].kind == "catalog"
    assert store.doctor(rebuild=True).ok
    con = _open_catalog(store)
    after = [con.sql(q).fetchall() for q in QUERIES]
    con.close()
    assert after == before
    assert [store.sql(q).fetchall() for q in QUERIES] == before


def test_views_per_set_and_version(store, vectors):
    _fill(store, vectors)
    assert store.sql("select count(*) from a").fetchone()[0] == 10
    assert store.sql('select count(*) from "a@v2"').fetchone()[0] == 10
    assert store.sql('select count(*) from "a@v1"').fetchone()[0] == 150  # newest row per key
    emb = store.sql('select embedding from "a@v1" where id = 60').fetchone()[0]
    np.testing.assert_allclose(emb, vectors[60] * 2, rtol=1e-6)
    types = dict(store.sql("describe a").fetchall() and [(r[0], r[1]) for r in store.sql("describe a").fetchall()])
    assert types["embedding"] == "FLOAT[16]"
    assert dict((r[0], r[1]) for r in store.sql("describe b").fetchall())["embedding"] == "FLOAT[8]"


def test_cosine_similarity_in_sql_equals_numpy(store, vectors):
    store.write("a", {"id": np.arange(200), "embedding": vectors}, spec=SPEC)
    q = vectors[7]
    rows = store.sql(
        "select id, array_cosine_similarity(embedding, $q::FLOAT[16]) as score from a order by id",
        params={"q": q.tolist()},
    ).numpy()
    expected = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(rows["score"], expected, rtol=1e-5, atol=1e-6)
    top = store.sql("select id from a order by array_cosine_similarity(embedding, $q::FLOAT[16]) desc limit 10",
                    params={"q": q.tolist()}).numpy()["id"]
    np.testing.assert_array_equal(top, np.argsort(-expected)[:10])


@pytest.mark.parametrize("query", [
    "copy (select 1) to 'x.csv'",
    "select 1; copy a to 'x.parquet'",
    "create table t as select 1",
    "attach 'other.duckdb'",
    "set enable_external_access=true",
    "drop view a",
    "insert into feature_sets values (1)",
])
def test_sql_is_read_only(store, vectors, query):
    store.write("a", {"id": np.arange(3), "embedding": vectors[:3]}, spec=SPEC)
    with pytest.raises(ReadOnlyQueryError, match="read-only"):
        store.sql(query)


def test_sql_cannot_read_outside_the_store(store, vectors, tmp_path):
    store.write("a", {"id": np.arange(3), "embedding": vectors[:3]}, spec=SPEC)
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n1\n")
    with pytest.raises(duckdb.Error, match="disabled|Permission"):
        store.sql(f"select * from read_csv('{secret}')").fetchall()


def test_result_formats(store, vectors):
    store.write("a", {"id": np.arange(5), "embedding": vectors[:5]}, spec=SPEC)
    r = store.sql("select id, embedding from a order by id")
    assert r.df().shape == (5, 2)
    assert r.arrow().num_rows == 5
    assert r.numpy()["embedding"].shape == (5, 16)
    assert sum(b.num_rows for b in r.batches()) == 5
    assert r.columns == ["id", "embedding"]


HOLD_CATALOG = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_catalog_held_by_another_process_never_loses_data(store, vectors, tmp_path, monkeypatch, read_line):
    store.write("a", {"id": np.arange(5), "embedding": vectors[:5]}, spec=SPEC)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CATALOG, str(store.catalog_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(holder).strip() == "held"
        import featurestore.query._catalog as cat
        original = cat.write_catalog
        monkeypatch.setattr("featurestore._store.write_catalog", lambda root, entries, **kw: original(root, entries, timeout=0.5, **kw))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.write("a", {"id": np.arange(5, 10), "embedding": vectors[5:10]}, spec=SPEC)
        assert any("Could not update" in str(w.message) for w in caught)
        assert store.catalog_stale
        assert store.sql("select count(*) from a").fetchone()[0] == 10  # readers use the manifests
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert not store.doctor().ok
    assert store.doctor(rebuild=True).ok and not store.catalog_stale
    con = _open_catalog(store)
    assert con.sql("select count(*) from a").fetchall()[0][0] == 10

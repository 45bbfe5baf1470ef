"""The store against a careless user and a hostile file: every test here failed before the hardening it names."""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import featurestore
import pipelines
from featurestore import CorruptStoreError, InvalidNameError, QueryTimeoutError, ReadOnlyQueryError, ValidationError
from featurestore.storage import _format

SPEC = {"encoder": "external:test-model"}


def _rows(start: int, n: int, dim: int = 8) -> dict:
    rng = np.random.default_rng(start)
    return {"id": np.arange(start, start + n), "embedding": rng.standard_normal((n, dim)).astype(np.float32)}


def _snapshot(root: Path) -> dict[str, int]:
    """CRC32 of every file under the store except the catalog index and lock files."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in ("catalog.duckdb", "catalog.duckdb.wal") and not path.name.endswith(".lock"):
            out[str(path.relative_to(root))] = zlib.crc32(path.read_bytes())
    return out


def _edit_manifest(fs: featurestore.FeatureSet, **changes) -> Path:
    path = fs.path / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


# -- SQL reached from files on disk ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("dim", "8] AS embedding FROM read_parquet([]); COPY (SELECT 1) TO '/tmp/pwned.csv'; --"),
    ("dim", 0),
    ("dim", -3),
    ("dim", True),
    ("version", "1 AS version; COPY (SELECT 1) TO 'x.csv'; --"),
    ("key", ["id\" FROM x; --"]),  # quoted anyway; the key must still match the files' columns
    ("partitions", [{"file": "../../../etc/passwd", "rows": 1, "bytes": 1, "crc32": 0, "run_id": "r",
                     "created_at": "t"}]),
    ("partitions", [{"file": "/etc/passwd", "rows": 1, "bytes": 1, "crc32": 0, "run_id": "r", "created_at": "t"}]),
    ("name", "other"),
    ("columns", {"id": "int64); COPY (SELECT 1) TO 'y.csv'; --"}),
])
def test_a_crafted_manifest_never_reaches_sql_and_other_sets_keep_working(store, tmp_path, field, value):
    store.write("good", _rows(0, 20), spec=SPEC)
    store.write("bad", _rows(0, 5), spec=SPEC)
    path = _edit_manifest(store.get("bad"), **{field: value})
    before = _snapshot(store.root)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert store.sql("select count(*) from good").fetchone()[0] == 20
            assert [s["name"] for s in store.list()] == ["good"]
            store.write("good", _rows(20, 5), spec=SPEC)  # a write to a healthy set commits and does not raise
        assert any(str(path) in str(w.message) for w in caught)
        with pytest.raises(CorruptStoreError, match="manifest"):
            store.get("bad")
        with pytest.raises(duckdb.Error, match="manifest"):  # the view says what is wrong with it
            store.sql("select * from bad").fetchall()
        report = store.doctor()
        assert [(f.kind, f.path) for f in report.findings if f.kind == "manifest"] == [("manifest", str(path))]
        assert store.doctor(rebuild=True).findings  # still reported, and the rebuild itself runs no injected SQL
    finally:
        os.chdir(cwd)
    assert not list(tmp_path.glob("*.csv")) and not Path("/tmp/pwned.csv").exists()
    after = _snapshot(store.root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.startswith("sets/good/") for k in changed)


def test_duckdb_temp_space_is_inside_the_store(store, tmp_path):
    store.write("a", _rows(0, 5), spec=SPEC)
    temp = store.sql("select current_setting('temp_directory')").fetchone()[0]
    assert Path(temp).resolve().is_relative_to(store.root)
    outside = Path.cwd() / ".tmp"
    with pytest.raises(duckdb.PermissionException):
        store.sql(f"select * from glob('{outside}/*')").fetchall()


@pytest.mark.parametrize("query", [
    "explain analyze copy (select 1) to '{part}'",
    "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1) TO '{part}'",
    "explain analyze with t as (copy (select 1) to '{part}') select 1",
    "with t as (copy (select 1) to '{part}') select 1",
    "select 1; copy (select 1) to '{part}'",
    "pragma version",
    "call pragma_version()",
    "checkpoint",
    "set memory_limit = '1GB'",
    "export database '{folder}'",
    "create temp table t as select 1",
])
def test_sql_refuses_every_statement_that_writes_and_files_stay_unchanged(store, query):
    store.write("a", _rows(0, 5), spec=SPEC)
    fs = store.get("a")
    part = fs.path / fs.manifest.partitions[0].file
    before = _snapshot(store.root)
    with pytest.raises(ReadOnlyQueryError):
        store.sql(query.format(part=part, folder=store.root / "sets" / "x")).fetchall()
    assert _snapshot(store.root) == before


@pytest.mark.parametrize("query", [
    "explain select * from a", "explain analyze select count(*) from a", "describe a", "summarize a",
    "with t as (select id from a) select count(*) from t",
    "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r",
    "select * from a union all select * from a",
])
def test_sql_still_runs_every_reading_statement(store, query):
    store.write("a", _rows(0, 5), spec=SPEC)
    assert store.sql(query).fetchall()


def test_sql_timeout_interrupts_a_long_query(store):
    store.write("a", _rows(0, 5), spec=SPEC)
    with pytest.raises(QueryTimeoutError, match="timeout of 0.3s"):
        store.sql("select count(*) from range(100000000000) t(i)", timeout=0.3).fetchall()
    assert store.sql("select count(*) from a", timeout=5).fetchone()[0] == 5


def test_a_lock_file_that_is_a_symlink_is_never_followed(store, tmp_path):
    store.write("a", _rows(0, 5), spec=SPEC)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    lock = store.root / "sets" / "a" / ".lock"
    lock.unlink()
    lock.symlink_to(target)
    with pytest.raises(featurestore.FeatureStoreError, match="symbolic link"):
        store.write("a", _rows(5, 5), spec=SPEC)
    assert target.read_text() == "keep me"
    assert store.get("a").count() == 5


def test_import_does_not_need_fcntl(run_python):
    run_python("import sys; sys.modules['fcntl'] = None\nimport featurestore, tempfile, numpy as np\n"
               "s = featurestore.open(tempfile.mkdtemp() + '/s')\n"
               "s.write('a', {'id': np.arange(3), 'embedding': np.ones((3, 4), 'float32')}, spec={'encoder': 'x:y'})")


# -- keys --------------------------------------------------------------------------------------------------------

def test_compound_keys_that_join_to_the_same_string_stay_distinct(store):
    emb = np.eye(2, 4, dtype=np.float32)
    store.write("c", {"a": ["a\x1fb", "a"], "b": ["c", "b\x1fc"], "embedding": emb}, key=["a", "b"], spec=SPEC)
    assert store.get("c").count() == 2 == store.sql("select count(*) from c").fetchone()[0]
    # written again, one row changed: exactly that row is rewritten, and both keys stay
    result = store.write("c", {"a": ["a\x1fb", "a"], "b": ["c", "b\x1fc"], "embedding": emb[::-1].copy()},
                         key=["a", "b"], spec=SPEC)
    assert result["rows_written"] == 2
    assert store.get("c").count() == 2 == store.sql("select count(*) from c").fetchone()[0]


def test_a_binary_key_part_that_is_not_utf8_is_stored_and_later_writes_work(store):
    keys = pa.array([b"\xff\xfe", b"ok"], pa.binary())
    store.write("b", {"k": keys, "n": [1, 2], "embedding": np.ones((2, 4), np.float32)}, key=["k", "n"], spec=SPEC)
    store.write("b", {"k": pa.array([b"\x80"], pa.binary()), "n": [3], "embedding": np.ones((1, 4), np.float32)},
                key=["k", "n"], spec=SPEC)
    assert store.get("b").count() == 3 == store.sql("select count(*) from b").fetchone()[0]


def test_vector_content_hash_is_pinned():
    """Stored content hashes must never change under a numpy upgrade: these values are part of the format."""
    column = _format.fixed_size_list(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert _format.vector_hashes(column, 3).to_pylist() == [
        "f3651f503bd800593ae1382c4d32d784", "275f39102a48e61402630a8ed41e1f98"]
    wide = _format.fixed_size_list(np.linspace(-1, 1, 384, dtype=np.float32).reshape(1, 384))
    assert _format.vector_hashes(wide, 384).to_pylist() == ["cb59c2dd019c10f75298dcc03a342616"]


# -- what readers verify -----------------------------------------------------------------------------------------

def test_a_same_size_corrupted_partition_is_an_error_not_wrong_rows(store):
    store.write("a", _rows(0, 50, dim=64), spec=SPEC)
    fs = store.get("a")
    part = fs.path / fs.manifest.partitions[0].file
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the uncompressed embedding pages
    part.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=part.name):
        fs.to_numpy()
    assert [f.kind for f in store.doctor().findings] == ["checksum"]


def test_a_hand_edited_dim_is_refused_by_readers_and_flagged_by_doctor(store):
    store.write("a", _rows(0, 10, dim=8), spec=SPEC)
    fs = store.get("a")
    _edit_manifest(fs, dim=4)
    with pytest.raises(CorruptStoreError, match="dim=4"):
        store.get("a").to_numpy()
    assert [f.kind for f in store.doctor().findings if f.kind != "catalog"] == ["manifest"]
    # columns edited to agree with the dim: the manifest is consistent, the files are not
    data = json.loads((fs.path / "manifest.json").read_text())
    # (without its statistics too: their 8-value mean vector would already give the edit away)
    _edit_manifest(fs, columns={**data["columns"], "embedding": "fixed_size_list<item: float>[4]"},
                   partitions=[{k: v for k, v in p.items() if k != "stats"} for p in data["partitions"]])
    with pytest.raises(CorruptStoreError, match=r"file fixed_size_list<float>\[8\], manifest fixed_size_list<float>\[4\]"):
        store.get("a").to_numpy()
    assert [f.kind for f in store.doctor().findings] == ["schema"]


def test_a_partition_with_the_wrong_row_count_is_refused(store):
    store.write("a", _rows(0, 10), spec=SPEC)
    fs = store.get("a")
    parts = json.loads((fs.path / "manifest.json").read_text())["partitions"]
    parts[0]["rows"] = 11
    _edit_manifest(fs, partitions=parts)
    with pytest.raises(CorruptStoreError, match="11"):
        store.get("a").to_arrow()


# -- errors, runs, names, empty writes ---------------------------------------------------------------------------

def test_errors_view_keeps_one_current_error_per_key_and_drops_fixed_rows(store, tmp_path):
    path = tmp_path / "src.jsonl"

    def source(texts):
        path.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)))

    source(["fine", None, "  ", "ok"])
    pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert store.sql('select id from "r@errors" order by id').fetchall() == [(1,), (2,)]
    source(["fine", "now fixed", "  ", "ok"])
    pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert store.sql('select id from "r@errors"').fetchall() == [(2,)]
    assert store.get("r").errors().column("id").to_pylist() == [2]
    assert store.get("r").count() == 3


def test_a_killed_writer_run_record_counts_every_committed_row(store, run_python):
    run_python(f"""
import os, signal, numpy as np, featurestore
s = featurestore.open({str(store.root)!r})
with s.writer("a", spec={SPEC!r}) as w:
    for i in range(3):
        w.append({{"id": np.arange(i * 10, i * 10 + 10), "embedding": np.ones((10, 4), "float32") * (i + 1)}})
    os.kill(os.getpid(), signal.SIGKILL)
""", check=False)
    store.write("b", _rows(0, 2), spec=SPEC)  # unrelated write
    store.write("a", {"id": np.arange(30, 31), "embedding": np.ones((1, 4), np.float32)}, spec=SPEC)  # takes the lock
    runs = {r["status"]: r for r in store.get("a").runs}
    assert runs["killed"]["rows_written"] == 30
    assert store.sql("select rows_written from runs where name = 'a' and status = 'killed'").fetchone()[0] == 30


@pytest.mark.parametrize("name", ["left", "glob", "join", "values", "select", "runs", "feature_sets"])
def test_names_that_break_unquoted_sql_are_refused(store, name):
    with pytest.raises(InvalidNameError, match=repr(name)):
        store.write(name, _rows(0, 2), spec=SPEC)
    assert not (store.root / "sets" / name).exists()


def test_an_empty_write_leaves_nothing_behind(store):
    empty = {"id": np.arange(0), "embedding": np.zeros((0, 8), np.float32)}
    assert store.write("e", empty, spec={**SPEC, "dim": 8})["rows_written"] == 0
    assert not (store.root / "sets" / "e" / "v1").exists()
    assert store.doctor().ok and "e" not in store


def test_dim_zero_is_a_clear_error(store):
    with pytest.raises(ValidationError, match="at least one dimension"):
        store.write("z", {"id": np.arange(2), "embedding": np.zeros((2, 0), np.float32)}, spec=SPEC)
    with pytest.raises(ValidationError, match="at least one dimension"):
        store.write("z", {"id": [1], "embedding": pa.array([[]], pa.list_(pa.float32()))}, spec=SPEC)


# -- portability -------------------------------------------------------------------------------------------------

def test_a_copied_store_reads_its_own_files_never_the_originals(store, tmp_path):
    store.write("a", _rows(0, 10), spec=SPEC)
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    store.write("a", {"id": np.arange(10), "embedding": np.full((10, 8), 7, np.float32)}, spec=SPEC)  # original moves on
    moved = featurestore.open(copy)
    assert moved.doctor().ok
    want = np.asarray(_rows(0, 10)["embedding"])
    np.testing.assert_array_equal(moved.get("a").to_numpy(), want)
    con = duckdb.connect(str(copy / "catalog.duckdb"), read_only=True)
    con.execute(f"SET file_search_path = '{copy}'")
    got = np.array([r[0] for r in con.sql("select embedding from a order by id").fetchall()], np.float32)
    np.testing.assert_array_equal(got, want)
    shutil.rmtree(store.root)  # with the original gone, the copy's catalog still reads
    assert len(con.sql("select * from a").fetchall()) == 10

"""Guards against one-line mutations that no other test notices.

- Resume: an encoder that counts what it encodes shows that a rerun encodes nothing, that changed texts are the
  only ones encoded again, and that with several layers only the rows some set lacks are encoded.
- doctor, through the API and the CLI, names each kind of damage (missing-file, size, checksum, row-count).
- A manifest replace that fails leaves the old manifest, and readers see the old rows.
- Provenance in each partition's Parquet key-value metadata agrees with the manifest and names its run.
- store.sql refuses every statement that could write or escape the store, and nothing under the store changes.
- `featurestore sql --timeout` stops a slow query with a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore.storage._atomic as manifest_module  # manifests are replaced through its atomic_write_text
import pipelines
from featurestore import FeatureSetNotFoundError, FeatureStoreError, ReadOnlyQueryError
from featurestore.encoders import HashEncoder, get_encoder, list_encoders, register
from pipelines.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"encoder": "external:test-model", "metric": "cosine"}


# -- a counting encoder -----------------------------------------------------------------------------------------

class CountingEncoder(HashEncoder):
    """``counting:<dim>``: the hash encoder's vectors, per layer, counting every text it encodes.

    ``counts[layer]`` is what the encoder of that layer encoded; ``counts["pass"]`` is the texts that went through
    one shared pass (``encode_batches`` / ``encode_batches_with``), i.e. what the model would have run on.
    """

    counts: dict[Any, int] = {}

    def __init__(self, model: str = "16", *, layer: int | None = None, pooling: str | None = None, **options: Any):
        super().__init__(model, **options)
        self.layer = layer
        self.pooling = pooling
        self.name = f"counting:{model}"

    def spec(self) -> dict[str, Any]:
        spec = {**super().spec(), "encoder": f"counting:{self.dim}"}
        if self.layer is not None:
            spec.update(layer=self.layer, pooling=self.pooling or "mean")
        return spec

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        counts = type(self).counts
        counts[self.layer] = counts.get(self.layer, 0) + len(texts)
        prefix = "" if self.layer is None else f"layer{self.layer}:"
        return super()._encode_list([prefix + t for t in texts], batch_size=batch_size, progress=progress)

    def encode_batches(self, chunks):
        for chunk in chunks:
            chunk = list(chunk)
            type(self).counts["pass"] = type(self).counts.get("pass", 0) + len(chunk)
            yield from super().encode_batches([chunk])

    def encode_batches_with(self, others, chunks):
        for chunk in chunks:
            chunk = list(chunk)
            type(self).counts["pass"] = type(self).counts.get("pass", 0) + len(chunk)
            yield from super().encode_batches_with(others, [chunk])


if "counting" not in list_encoders():
    register("counting")(CountingEncoder)
Counting = type(get_encoder("counting:16"))  # the registered class (this module may be imported twice)


@pytest.fixture
def counts():
    Counting.counts = {}
    return Counting.counts


def _source(n: int, changed: dict[int, str] | None = None) -> pd.DataFrame:
    texts = [f"review {i} soft cotton dress number {i * 7}" for i in range(n)]
    for i, t in (changed or {}).items():
        texts[i] = t
    return pd.DataFrame({"id": np.arange(n), "review": texts})


def _embed(store, df, **kwargs):
    kwargs = {"key": "id", "text": "review", "encoder": "counting:16", "name": "r", "progress": False,
              "chunk_rows": 64, "partition_rows": 50, **kwargs}
    return pipelines.embed(store, df, **kwargs)


def _encoded(counts) -> int:
    return counts.get("pass", 0)


def test_resume_encodes_only_what_is_missing_or_changed(store, counts):
    first = _embed(store, _source(200))
    assert (first.rows_written, first.rows_skipped, _encoded(counts)) == (200, 0, 200)

    counts.clear()
    again = _embed(store, _source(200))
    assert (again.rows_written, again.rows_skipped) == (0, 200)
    assert _encoded(counts) == 0 and counts.get(None, 0) == 0, counts

    counts.clear()
    changed = {3: "brand new text", 50: "another", 51: "a third", 120: "fourth one", 199: "last changed"}
    third = _embed(store, _source(200, changed))
    assert (third.rows_written, third.rows_skipped) == (5, 195)
    assert _encoded(counts) == 5 and counts[None] == 5, counts
    fs = store.get("r")
    assert fs.count() == 200
    got = store.sql("select id, embedding from r where id in (3, 50, 51, 120, 199) order by id").numpy()
    np.testing.assert_allclose(got["embedding"], get_encoder("hash:16").encode(list(changed.values())), rtol=1e-6)

    counts.clear()
    grown = _embed(store, _source(207, changed))
    assert (grown.rows_written, grown.rows_skipped, _encoded(counts)) == (7, 200, 7)

    counts.clear()  # bad rows are never sent to the encoder, on the first run or a rerun
    bad = _source(207, changed)
    bad.loc[[10, 11], "review"] = ["", None]
    result = _embed(store, bad)
    assert (result.rows_written, result.rows_failed, _encoded(counts)) == (0, 2, 0), counts


def test_resume_with_several_layers_encodes_only_rows_some_set_lacks(store, counts):
    layered = lambda df, layers: pipelines.embed_layers(  # noqa: E731
        store, df, name="r", layers=layers, key="id", text="review", encoder="counting:16", progress=False,
        chunk_rows=64, partition_rows=50)

    first = layered(_source(100), [None, 1])
    assert [r.name for r in first] == ["r", "r_layer1"]
    assert [r.rows_written for r in first] == [100, 100]
    assert _encoded(counts) == 100 and counts[None] == 100 and counts[1] == 100, counts
    assert store.get("r").spec.get("layer") is None and store.get("r_layer1").spec["layer"] == 1

    counts.clear()
    again = layered(_source(100), [None, 1])
    assert [r.rows_written for r in again] == [0, 0] and _encoded(counts) == 0, counts

    counts.clear()  # a new layer: every row for that set, nothing written again for the others
    third = layered(_source(100), [None, 1, 2])
    assert [r.rows_written for r in third] == [0, 0, 100] and _encoded(counts) == 100, counts

    counts.clear()  # 10 new rows for the first two sets only; then the third set catches up with exactly those
    layered(_source(110), [None, 1])
    assert _encoded(counts) == 10, counts
    counts.clear()
    caught_up = layered(_source(110), [None, 1, 2])
    assert [r.rows_written for r in caught_up] == [0, 0, 10] and _encoded(counts) == 10, counts

    counts.clear()  # 4 changed texts: 4 encoded, 4 written to each set
    changed = {0: "new zero", 9: "new nine", 55: "new fifty five", 109: "new last"}
    fourth = layered(_source(110, changed), [None, 1, 2])
    assert [r.rows_written for r in fourth] == [4, 4, 4] and _encoded(counts) == 4, counts
    for name in ("r", "r_layer1", "r_layer2"):
        assert store.get(name).count() == 110

    counts.clear()  # the layers get 10 rows the base set lacks; the lead set of the next pass needs exactly those
    layered(_source(120, changed), [1, 2])
    assert _encoded(counts) == 10, counts
    counts.clear()
    last = layered(_source(120, changed), [None, 1, 2])
    assert [r.rows_written for r in last] == [10, 0, 0] and _encoded(counts) == 10, counts
    assert [r.rows_skipped for r in last] == [110, 120, 120]
    for name in ("r", "r_layer1", "r_layer2"):
        assert store.get(name).count() == 120
    v = store.sql("select embedding from r_layer2 where id = 9").numpy()["embedding"][0]
    np.testing.assert_allclose(v, get_encoder("hash:16").encode(["layer2:new nine"])[0], rtol=1e-6)


# -- doctor -------------------------------------------------------------------------------------------------------

def _filled(store) -> Path:
    rng = np.random.default_rng(1)
    store.write("a", {"id": np.arange(30), "embedding": rng.standard_normal((30, 8)).astype(np.float32)}, spec=SPEC)
    store.write("a", {"id": np.arange(30, 50), "embedding": rng.standard_normal((20, 8)).astype(np.float32)}, spec=SPEC)
    store.write("b", {"id": np.arange(10), "embedding": rng.standard_normal((10, 4)).astype(np.float32)}, spec=SPEC)
    fs = store.get("a")
    return fs.path / fs.manifest.partitions[0].file


def _delete(part: Path) -> None:
    part.unlink()


def _truncate(part: Path) -> None:
    data = part.read_bytes()
    part.write_bytes(data[: len(data) - 100])


def _flip(part: Path) -> None:
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))


def _wrong_rows(part: Path) -> None:
    path = part.parent / "manifest.json"
    m = json.loads(path.read_text())
    for p in m["partitions"]:
        if p["file"] == part.name:
            p["rows"] += 1
    path.write_text(json.dumps(m, indent=1))


DAMAGE = [("deleted", _delete, "missing-file"), ("truncated", _truncate, "size"),
          ("byte-flipped", _flip, "checksum"), ("manifest-row-count", _wrong_rows, "row-count")]


def test_doctor_on_a_healthy_store_is_ok(store):
    _filled(store)
    report = store.doctor()
    assert report.ok and report.findings == [] and report.sets_checked == 2 and report.partitions_checked == 3
    result = CliRunner().invoke(cli, ["doctor", "--store", str(store.root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize("label, damage, kind", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_doctor_names_each_kind_of_damage_api_and_cli(store, label, damage, kind):
    part = _filled(store)
    size_before = part.stat().st_size
    damage(part)
    if label == "byte-flipped":
        assert part.stat().st_size == size_before
    report = store.doctor()
    assert not report.ok
    about_part = [(f.kind, f.path) for f in report.findings if f.kind != "catalog"]
    assert about_part == [(kind, str(part))], report.to_dict()
    assert all(not f.repaired for f in report.findings)

    runner = CliRunner()
    result = runner.invoke(cli, ["doctor", "--store", str(store.root), "--json"])
    assert result.exit_code == 3, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is False
    assert [(f["kind"], f["path"]) for f in out["findings"] if f["kind"] != "catalog"] == [(kind, str(part))]
    text = runner.invoke(cli, ["doctor", "--store", str(store.root)])
    assert text.exit_code == 3 and kind in text.stdout and part.name in text.stdout
    rebuilt = runner.invoke(cli, ["doctor", "--store", str(store.root), "--rebuild", "--clean", "--json"])
    assert rebuilt.exit_code == 3, "a rebuild of the catalog cannot repair a damaged partition"
    assert (kind, str(part)) in [(f["kind"], f["path"]) for f in json.loads(rebuilt.stdout)["findings"]]


# -- a manifest replace that fails --------------------------------------------------------------------------------

class _FailingManifestReplace:
    """Stands in for ``os`` inside featurestore.storage._manifest: ``replace`` onto a manifest.json raises OSError."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == "manifest.json":
            self.calls += 1
            raise OSError(28, "No space left on device (simulated)")
        os.replace(src, dst, *args, **kwargs)


def _fail_manifest_replace(monkeypatch) -> _FailingManifestReplace:
    fake = _FailingManifestReplace()
    monkeypatch.setattr(manifest_module, "os", fake)
    if hasattr(manifest_module, "replace"):  # in case it is ever imported by name
        monkeypatch.setattr(manifest_module, "replace", fake.replace)
    return fake


def test_a_failed_manifest_replace_leaves_the_old_manifest_and_rows(store, vectors, monkeypatch):
    store.write("a", {"id": np.arange(10), "embedding": vectors[:10]}, spec=SPEC)
    fs = store.get("a")
    manifest = fs.path / "manifest.json"
    old_bytes = manifest.read_bytes()
    old_rows = fs.to_arrow()

    fake = _fail_manifest_replace(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        store.write("a", {"id": np.arange(10, 15), "embedding": vectors[10:15]}, spec=SPEC)
    assert fake.calls >= 1, "the manifest was not replaced through os.replace in featurestore.storage._atomic"
    assert manifest.read_bytes() == old_bytes
    assert not [p.name for p in fs.path.iterdir() if p.name.startswith(".tmp-")], "temporary manifest left behind"
    assert store.get("a").to_arrow().equals(old_rows)
    assert store.get("a").count() == 10
    assert store.sql("select count(*) from a").fetchone()[0] == 10

    with pytest.raises(OSError):  # the first commit of a new set: no version appears
        store.write("b", {"id": np.arange(3), "embedding": vectors[:3]}, spec=SPEC)
    assert "b" not in store.names()
    with pytest.raises(FeatureSetNotFoundError):
        store.get("b")
    monkeypatch.undo()

    report = store.doctor()  # the uncommitted partition is a leftover, nothing else
    assert {f.kind for f in report.findings if f.kind != "catalog"} <= {"leftover"}
    store.write("a", {"id": np.arange(10, 15), "embedding": vectors[10:15]}, spec=SPEC)
    assert store.get("a").count() == 15 and store.sql("select count(*) from a").fetchone()[0] == 15
    assert store.doctor(rebuild=True, clean=True).ok  # the half-made first version of "b" is a leftover
    assert store.doctor().ok and "b" not in store.names()


# -- provenance in the Parquet files ------------------------------------------------------------------------------

def test_provenance_in_parquet_metadata_matches_the_manifest(store, tmp_path):
    src = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pandas(_source(120), preserve_index=False), src)
    first = pipelines.embed(store, src, key="id", text="review", encoder="hash:16", name="r", progress=False,
                            chunk_rows=40, partition_rows=50)
    second = pipelines.embed(store, _source(130), key="id", text="review", encoder="hash:16", name="r",
                             progress=False)
    fs = store.get("r")
    assert len(fs.manifest.partitions) >= 3
    run_ids = {first.run_id, second.run_id}
    assert len(run_ids) == 2
    for p in fs.manifest.partitions:
        meta = pq.read_schema(fs.path / p.file).metadata
        spec = json.loads(meta[b"featurestore.spec"])
        assert spec == fs.spec == fs.manifest.spec
        assert spec["encoder"] == "hash:16" and spec["dim"] == 16 and spec["dtype"] == "float32"
        prov = json.loads(meta[b"featurestore.provenance"])
        assert prov["run_id"] == p.run_id and prov["run_id"] in run_ids
        assert prov["backend"] == "hash" and prov["device"] == "cpu"
        assert prov.get("source_fingerprint"), prov
        info = json.loads(meta[b"featurestore.set"])
        assert (info["name"], info["version"], info["key"]) == ("r", fs.version, ["id"])
        # the run_id column agrees with the file's metadata
        assert set(pq.read_table(fs.path / p.file, columns=["run_id"]).column("run_id").to_pylist()) == {p.run_id}
    first_parts = [p for p in fs.manifest.partitions if p.run_id == first.run_id]
    assert sum(p.rows for p in first_parts) == 120
    prov = json.loads(pq.read_schema(fs.path / first_parts[0].file).metadata[b"featurestore.provenance"])
    assert prov["source"] == str(src) and fs.manifest.provenance["backend"] == "hash"
    assert [r["run_id"] for r in fs.runs] == [first.run_id, second.run_id]


# -- read-only SQL -------------------------------------------------------------------------------------------------

def _everything(root: Path) -> dict[str, Any]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _check_crcs(store) -> None:
    for name in store.names():
        for v in store.versions(name):
            fs = store.get(name, v)
            for p in [*fs.manifest.partitions, *fs.manifest.errors]:
                data = (fs.path / p.file).read_bytes()
                assert zlib.crc32(data) == p.crc32 and len(data) == p.bytes, f"{p.file} changed"


@pytest.fixture
def sql_store(store, vectors, tmp_path):
    store.write("a", {"id": np.arange(10), "embedding": vectors[:10]}, spec=SPEC)
    store.write("a", {"id": np.arange(10, 20), "embedding": vectors[10:20]}, spec=SPEC)
    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other" / "x.parquet")
    return store


def _refused_queries() -> list[tuple[str, str, Any]]:
    """(id, query template, the errors that count as a refusal, or None where running is harmless too).

    {store}, {part}, {outside} and {tmp} (DuckDB's temp directory in the reader's connection) are filled in.
    """
    ro = ReadOnlyQueryError
    any_error = (FeatureStoreError, duckdb.Error)
    return [
        ("explain-analyze-copy-new-file", "EXPLAIN ANALYZE COPY (select 1) TO '{store}/sets/a/v1/part-x.parquet'", ro),
        ("explain-analyze-copy-over-partition",
         "EXPLAIN ANALYZE COPY (select 42 as id) TO '{part}' (FORMAT parquet)", ro),
        ("explain-analyse-copy", "explain analyse copy (select 1) to '{store}/x.csv'", ro),
        ("explain-copy", "EXPLAIN COPY (select 1) TO '{store}/x.csv'", None),  # plans only: may run or be refused
        ("copy", "COPY (select 1) TO '{store}/x.csv'", ro),
        ("select-then-copy", "select 1; copy a to '{store}/a.parquet'", ro),
        ("pragma", "PRAGMA database_list", ro),
        ("pragma-setting", "PRAGMA enable_external_access", ro),
        ("call", "CALL pragma_version()", ro),
        ("set", "SET threads = 1", ro),
        ("set-external-access", "SET enable_external_access = true", ro),
        ("reset", "RESET allowed_directories", ro),
        ("cte-insert", "WITH x AS (SELECT 1) INSERT INTO feature_sets SELECT * FROM feature_sets", ro),
        ("cte-copy", "with t as (select 1) copy t to '{store}/t.csv'", any_error),
        ("cte-holding-a-copy", "with t as (copy (select 1) to '{store}/cte.csv') select 1", any_error),
        ("create-table", "create table t as select 1", ro),
        ("attach", "ATTACH '{store}/evil.duckdb' AS evil", ro),
        ("detach", "DETACH memory", ro),
        ("install", "INSTALL httpfs", ro),
        ("load", "LOAD httpfs", ro),
        ("export-database", "EXPORT DATABASE '{store}/export'", ro),
        ("checkpoint", "CHECKPOINT", ro),
        ("query-function-copy", "select * from query('copy (select 1) to ''{store}/q.csv''')", any_error),
        ("read-etc-passwd", "select * from read_csv('/etc/passwd')", any_error),
        ("read-outside-absolute", "select * from read_parquet('{outside}')", any_error),
        ("read-outside-dotdot", "select * from read_parquet('{store}/../other/x.parquet')", any_error),
        ("read-outside-relative", "select * from read_parquet('../other/x.parquet')", any_error),
        ("glob-outside", "select * from glob('/tmp/*')", any_error),
        # DuckDB's default spill folder is <cwd>/.tmp; ours lies inside the store (checked below), so this is outside
        ("glob-duckdb-default-temp-dir", "select * from glob('{cwd}/.tmp/*')", any_error),
        ("read-duckdb-default-temp-dir", "select * from read_blob('{cwd}/.tmp/*')", any_error),
    ]


REFUSED = _refused_queries()


@pytest.mark.parametrize("label, template, refusal", REFUSED, ids=[q[0] for q in REFUSED])
def test_sql_refuses_and_nothing_under_the_store_changes(sql_store, tmp_path, label, template, refusal):
    store = sql_store
    fs = store.get("a")
    temp_dir = store.sql("select current_setting('temp_directory')").fetchone()[0]
    assert Path(temp_dir).resolve().is_relative_to(store.root)
    query = template.format(store=store.root, part=fs.path / fs.manifest.partitions[0].file,
                            outside=tmp_path / "other" / "x.parquet", cwd=Path.cwd())
    _check_crcs(store)
    before = _everything(store.root)
    time.sleep(0.01)
    try:
        store.sql(query).fetchall()
        outcome: BaseException | None = None
    except Exception as exc:
        outcome = exc
    after = _everything(store.root)
    ran = "it ran" if outcome is None else f"{type(outcome).__name__}: {outcome}"
    assert sorted(set(after) - set(before)) == [], f"new files under the store ({ran})"
    assert [k for k in before if before[k] != after.get(k)] == [], f"files under the store changed ({ran})"
    _check_crcs(store)
    if refusal is not None:
        assert outcome is not None, "the statement ran instead of being refused"
        assert isinstance(outcome, refusal), ran
    assert store.sql("select count(*) from a").fetchone()[0] == 20


def test_sql_still_reads_inside_the_store(sql_store):
    """The refusals above are not a blanket refusal: SELECT and EXPLAIN of a SELECT run."""
    assert sql_store.sql("select count(*) from a").fetchone()[0] == 20
    assert sql_store.sql("explain select count(*) from a").fetchall()
    assert sql_store.sql("with t as (select id from a) select count(*) from t").fetchone()[0] == 20


# -- timeouts ------------------------------------------------------------------------------------------------------

SLOW = "select count(*) from range(1000000) a, range(1000000) b where (a.range * b.range) % 7 = 3"


def test_cli_sql_timeout_stops_a_slow_query(sql_store):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", SLOW, "--store", str(sql_store.root),
                           "--timeout", "1"], capture_output=True, text=True, timeout=90, cwd=ROOT)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "timeout" in proc.stderr.lower() or "timed out" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 30, f"the query ran {elapsed:.0f}s despite --timeout 1"
    fast = CliRunner().invoke(cli, ["sql", "select count(*) as n from a", "--store", str(sql_store.root),
                                    "--timeout", "30", "--json"])
    assert fast.exit_code == 0 and json.loads(fast.stdout) == [{"n": 20}], fast.output


def test_api_sql_timeout_stops_a_slow_query(sql_store):
    t0 = time.monotonic()
    with pytest.raises(FeatureStoreError, match="(?i)time"):
        sql_store.sql(SLOW, timeout=0.5).fetchall()
    assert time.monotonic() - t0 < 20
    assert sql_store.sql("select count(*) from a", timeout=30).fetchone()[0] == 20


def test_cli_sql_stops_at_ctrl_c(sql_store):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sql", SLOW, "--store", str(sql_store.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        time.sleep(3)  # started and inside the query
        assert proc.poll() is None, proc.communicate(timeout=10)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10, "the query kept running after Ctrl-C"
    finally:
        proc.kill()  # never leave a runaway query behind, whatever failed
        proc.wait(timeout=30)
    assert proc.returncode == 1 and "Interrupted" in err, (proc.returncode, err)

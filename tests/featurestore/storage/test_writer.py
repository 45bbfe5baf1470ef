"""Crashes, concurrent writers and locks, on real files and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import featurestore
from featurestore import LockTimeoutError
from featurestore.storage import _manifest, _writer

SPEC = {"encoder": "external:test-model"}


def _rows(start, n, dim=8):
    rng = np.random.default_rng(start)
    return {"id": np.arange(start, start + n), "embedding": rng.standard_normal((n, dim)).astype(np.float32)}


def test_crash_before_rename_leaves_nothing_visible(store, monkeypatch):
    store.write("vecs", _rows(0, 10), spec=SPEC)

    def crash(src, dst):
        raise OSError("simulated crash between temp write and rename")

    monkeypatch.setattr(_writer.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write("vecs", _rows(10, 10), spec=SPEC)
    monkeypatch.undo()
    # a temp file that the crashed writer never renamed: ignored by readers ...
    vdir = store.get("vecs").path
    (vdir / ".tmp-deadbeef-part-x.parquet").write_bytes(b"half written")
    reopened = featurestore.open(store.root)
    assert reopened.get("vecs").count() == 10
    assert reopened.sql("select count(*) from vecs").fetchone()[0] == 10
    report = reopened.doctor()
    assert not report.ok and [f.kind for f in report.findings] == ["leftover"]
    # ... and cleaned by the next writer, which then commits normally
    reopened.write("vecs", _rows(10, 10), spec=SPEC)
    assert not list(vdir.glob(".tmp-*"))
    assert reopened.get("vecs").count() == 20
    assert reopened.doctor().ok


def test_crash_between_rename_and_manifest_commit(store, monkeypatch):
    store.write("vecs", _rows(0, 10), spec=SPEC)

    def crash(version_dir, manifest):
        raise OSError("simulated crash before the manifest commit")

    monkeypatch.setattr(_writer, "write_manifest", crash)
    with pytest.raises(OSError):
        store.write("vecs", _rows(10, 10), spec=SPEC)
    monkeypatch.undo()
    vdir = store.get("vecs").path
    orphans = [p for p in vdir.glob("part-*.parquet") if p.name not in {q.file for q in store.get("vecs").manifest.partitions}]
    assert len(orphans) == 1  # renamed but never committed
    assert store.get("vecs").count() == 10 and store.sql("select count(*) from vecs").fetchone()[0] == 10
    assert store.doctor(clean=True).findings[0].repaired
    assert not orphans[0].exists() and store.doctor().ok


KILL_WRITER = """
import sys, numpy as np, featurestore
store = featurestore.open(sys.argv[1])
with store.writer("vecs", key="id", spec={"encoder": "external:test-model"}) as w:
    for start in range(0, 1_000_000, 500):
        rng = np.random.default_rng(start)
        w.append({"id": np.arange(start, start + 500), "embedding": rng.standard_normal((500, 8)).astype(np.float32)})
        print(start, flush=True)
"""


def test_killed_writer_leaves_whole_partitions_and_marks_its_run(store, tmp_path, read_line):
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(store.root)], stdout=subprocess.PIPE, text=True)
    lines = 0
    while lines < 6:
        assert read_line(proc), "writer died early"
        lines += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    fs = store.get("vecs")
    n = fs.count()
    assert n % 500 == 0 and n >= 3000
    ids = np.sort(fs.keys().column("id").to_numpy())
    np.testing.assert_array_equal(ids, np.arange(n))
    store.write("vecs", _rows(n, 10), spec=SPEC)  # next writer takes the lock at once (flock died with the process)
    runs = store.get("vecs").runs
    assert runs[0]["status"] == "killed" and runs[-1]["status"] == "ok"
    store.doctor(rebuild=True, clean=True)
    assert store.doctor().ok


TWO_WRITERS = """
import sys, numpy as np, featurestore
store = featurestore.open(sys.argv[1])
offset = int(sys.argv[2])
for i in range(15):
    start = offset + i * 40
    rng = np.random.default_rng(start)
    store.write("vecs", {"id": np.arange(start, start + 40), "embedding": rng.standard_normal((40, 8)).astype(np.float32)},
                spec={"encoder": "external:test-model"})
"""


def test_two_writer_processes_lose_no_rows(store, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_WRITERS)
    procs = [subprocess.Popen([sys.executable, str(script), str(store.root), str(off)],
                              stderr=subprocess.PIPE, text=True) for off in (0, 100_000)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    fs = store.get("vecs")
    assert fs.count() == 2 * 15 * 40
    assert len(fs.manifest.partitions) == 30
    assert store.sql("select count(distinct id) from vecs").fetchone()[0] == 1200
    assert store.doctor().ok


def test_second_writer_times_out_with_a_clear_message(store):
    store.write("vecs", _rows(0, 5), spec=SPEC)
    with store.writer("vecs", spec=SPEC):
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError, match="Another writer has held the lock on feature set 'vecs' for more than 0.3s"):
            with store.writer("vecs", spec=SPEC, lock_timeout=0.3):
                pass
        assert time.monotonic() - t0 < 3
        # readers never block on a writer
        assert store.get("vecs").count() == 5
        assert store.sql("select count(*) from vecs").fetchone()[0] == 5


def test_writer_session_commits_each_append(store):
    with store.writer("vecs", spec=SPEC) as w:
        assert w.append(_rows(0, 10)) == 10
        assert store.get("vecs").count() == 10  # visible before the run ends
        assert w.append(_rows(0, 10)) == 0
        assert w.append(_rows(10, 5)) == 5
    run = store.get("vecs").runs[-1]
    assert (run["status"], run["rows_written"], run["rows_skipped"]) == ("ok", 15, 10)
    assert store.sql("select rows_written from runs").fetchone()[0] == 15


def test_manifest_is_replaced_atomically(store, tmp_path):
    store.write("vecs", _rows(0, 3), spec=SPEC)
    vdir = store.get("vecs").path
    before = (vdir / "manifest.json").read_text()
    m = _manifest.read_manifest(vdir)
    m.provenance["note"] = "x" * 10
    _manifest.write_manifest(vdir, m)
    assert (vdir / "manifest.json").read_text() != before
    assert not [p for p in os.listdir(vdir) if p.startswith(".tmp-")]

"""Run records: stamped with each commit, closed by ``finish``, marked killed by the next writer."""

from __future__ import annotations

import numpy as np

from featurestore.storage import _manifest, _runs

SPEC = {"encoder": "external:test-model"}


def _rows(ids):
    ids = np.asarray(list(ids))
    return {"id": ids, "embedding": np.ones((len(ids), 4), np.float32) * ids[:, None]}


def test_a_dead_run_is_marked_killed_with_counts_from_its_partitions(store):
    with store.writer("s", spec=SPEC, run_id="dead") as w:
        w.append(_rows(range(4)))
        w.append(_rows(range(4, 6)))
    vdir = store.get("s").path
    m = _manifest.read_manifest(vdir)
    m.runs[-1].update(status="running", rows_written=1)  # as a run killed after its last commit leaves it
    assert _runs.mark_killed(m) and not _runs.mark_killed(m)
    assert (m.runs[-1]["status"], m.runs[-1]["rows_written"], m.runs[-1]["rows_failed"]) == ("killed", 6, 0)


def test_close_counts_rows_per_second_from_what_the_run_saw():
    run = _runs.new_run("r", {"source": "x.parquet"})
    stats = {"rows_written": 30, "rows_skipped": 10, "rows_failed": 2, "partitions": 1}
    assert _runs.close(run, stats, 2.0, "ok") == 40
    assert (run["status"], run["rows_written"], run["rows_failed"], run["rows_per_s"]) == ("ok", 30, 2, 20.0)
    run = _runs.new_run("r")
    assert _runs.close(run, stats, 2.0, "ok", rows_read=100) == 100 and run["rows_per_s"] == 50.0


def test_record_replaces_the_runs_earlier_record():
    m = _manifest.Manifest(name="s", version=1, key=["id"], dim=4, dtype="float32", spec={}, columns={})
    _runs.record(m, {"run_id": "a", "status": "running"})
    _runs.record(m, {"run_id": "b", "status": "running"})
    _runs.record(m, {"run_id": "a", "status": "ok"})
    assert m.runs == [{"run_id": "a", "status": "ok"}, {"run_id": "b", "status": "running"}]

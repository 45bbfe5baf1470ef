"""Run records: one per writer run, kept in its version's manifest; the ``runs`` table lists them.

A record is saved with each commit of its run (so a killed run still has one, reading ``running``) and closed by
``Writer.finish``. The next writer, holding the lock the dead one held, marks it ``killed`` with its counts taken from
the committed partitions themselves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from featurestore.storage._manifest import Manifest, now

RUNNING, KILLED = "running", "killed"
COUNTERS = ("rows_written", "rows_skipped", "rows_failed")  # copied from a writer's stats into its record


def new_run_id() -> str:
    """A run id that sorts by start time: ``20240131T120000-3fa2c1``."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def new_run(run_id: str, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run that starts now."""
    return {"run_id": run_id, "status": RUNNING, "started_at": now(), **dict(info or {})}


def stamp(run: dict[str, Any], stats: Mapping[str, int], seconds: float) -> None:
    """Copy the counters and the elapsed seconds into the record."""
    run.update({k: stats[k] for k in COUNTERS}, seconds=round(seconds, 3))


def close(run: dict[str, Any], stats: Mapping[str, int], seconds: float, status: str, /, **info: Any) -> int:
    """End the record: status, finish time, counters, seconds, rows/s. Returns the rows the run saw.

    Rows seen are the rows read when the caller counted them (an embedding job), else rows written plus skipped.
    """
    run.update(info, status=status, finished_at=now())
    stamp(run, stats, seconds)
    seen = run.get("rows_read", stats["rows_written"] + stats["rows_skipped"])
    run["rows_per_s"] = round(seen / max(run["seconds"], 1e-9), 1)
    return seen


def record(m: Manifest, run: Mapping[str, Any]) -> None:
    """Put (or replace) the run's record in the manifest; the caller writes the manifest."""
    for i, r in enumerate(m.runs):
        if r["run_id"] == run["run_id"]:
            m.runs[i] = dict(run)
            return
    m.runs.append(dict(run))


def mark_killed(m: Manifest) -> bool:
    """Mark the manifest's ``running`` runs ``killed``; returns whether any was (the caller writes the manifest).

    Only call this holding the feature set's lock: then no run can still be running. A record was saved with its
    run's last commit, but counts are taken from the committed partitions themselves, to be exact.
    """
    changed = False
    for r in m.runs:
        if r.get("status") == RUNNING:
            r["status"] = KILLED
            r["rows_written"] = sum(p.rows for p in m.partitions if p.run_id == r["run_id"])
            r["rows_failed"] = sum(p.rows for p in m.errors if p.run_id == r["run_id"])
            changed = True
    return changed

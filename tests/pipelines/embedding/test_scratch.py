"""A killed job's scratch folders (the key index, Ray's staging) are removed by the next job, never a live one's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

import pipelines
from pipelines.embedding._scratch import _host, remove_orphans

ROOT = Path(__file__).resolve().parents[3]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_folders_of_this_machines_dead_processes_are_removed(tmp_path):
    host = _host()
    dead = tmp_path / f"featurestore-keys-{host}-{_dead_pid()}-abc"
    live = tmp_path / f"featurestore-keys-{host}-{os.getpid()}-def"
    other_kind = tmp_path / f"featurestore-ray-{host}-{_dead_pid()}-ghi"
    other_host = tmp_path / f"featurestore-keys-{'0' * 8 if host != '0' * 8 else '1' * 8}-{_dead_pid()}-jkl"
    for folder in (dead, live, other_kind, other_host):
        (folder / "spill").mkdir(parents=True)
    assert remove_orphans("keys", tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other_kind.exists() and other_host.exists()


def test_a_job_killed_mid_scan_leaves_a_folder_the_next_job_removes(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child = ("import os, pipelines.embedding._source_keys as sk\n"
             "index = sk.SourceKeys(['id'], 'a source')\n"
             "os._exit(9)  # killed: no cleanup runs\n")
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env={**os.environ, "TMPDIR": str(scratch)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    left = list(scratch.glob("featurestore-keys-*"))
    assert len(left) == 1 and (left[0] / "keys.duckdb").exists()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pipelines.embed(tmp_path / "store", pa.table({"id": np.arange(5), "text": ["a dress"] * 5}), encoder="hash:8",
                    name="t", progress=False)
    assert list(scratch.glob("featurestore-keys-*")) == []  # the dead job's and this job's own

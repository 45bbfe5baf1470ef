"""Memory and speed of one `featurestore embed` job as the input grows: is the local engine flat?

    python -m benchmarks.bench_embed_scale                          # 30k, 300k and 3M rows (~6 min on 2 cores)
    python -m benchmarks.bench_embed_scale --sizes 20000,200000
    python -m benchmarks.bench_embed_scale --quick                  # 5k and 50k rows, seconds
    python -m benchmarks.bench_embed_scale --engine ray             # the driver's and the actors' peaks on Ray

Each size gets a synthetic Parquet file (an int64 ``id``, a ten-word ``text`` drawn from a 2,870-word vocabulary, row
groups of 20k rows at every size), then two `featurestore embed ... -e hash:384` runs, each in its own process: the first embeds
every row, the rerun skips them all (resume). The peak RSS of each process is the kernel's (``wait4``'s
``ru_maxrss``), so imports, the key index and DuckDB count too. The ``hash`` encoder costs no model: what grows is the
job's own. (The vocabulary is small on purpose: the hash encoder caches word vectors, up to 65,536 of 384 floats,
about 100 MB, which would otherwise grow with a synthetic input's distinct words and hide the job's own memory.)
Goal (issue 17): peak RSS growth from the smallest to the largest size under 100 MB, and rows/s not falling; on Ray
(``--engine ray``, a local cluster started by each job) the same bound for the driver (the job's process) and for the
actors (the largest peak RSS of any ``ray::`` worker process, sampled from ``/proc`` every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._common import header

ENCODER = "hash:384"
GOAL_MB = 100.0
_ROW_GROUP = 20_000  # the same at every size: a row group is read whole, so a larger one would look like growth
_SYLLABLES = ["so", "ft", "co", "tt", "on", "dr", "es", "fi", "ts", "we", "ll", "bl", "ue", "re", "da", "mi"]


def write_source(rows: int, path: Path, *, seed: int = 0) -> Path:
    """``rows`` synthetic texts (ten words each from a fixed vocabulary) keyed 0..rows-1, written row group by row
    group so that 3M rows never sit in this process's memory either."""
    rng = np.random.default_rng(seed)
    vocab = np.array(sorted({"".join(rng.choice(_SYLLABLES, 3)) for _ in range(5000)}))
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, _ROW_GROUP):
            n = min(_ROW_GROUP, rows - start)
            words = vocab[rng.integers(0, len(vocab), (n, 10))]
            text = pc.binary_join_element_wise(*[pa.array(words[:, j]) for j in range(10)], " ")
            writer.write_table(pa.table({"id": np.arange(start, start + n), "text": text}, schema=schema))
    return path


def _rss_mb(pid: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM")), 0.0)
    except OSError:  # gone
        return 0.0


class WorkerPeaks:
    """The largest peak RSS (``VmHWM``) of any Ray worker process (``ray::...``) seen while it runs: Linux only."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if not f.read(5).startswith(b"ray::"):
                            continue
                except OSError:
                    continue
                self.peak_mb = max(self.peak_mb, _rss_mb(pid))

    def __enter__(self) -> "WorkerPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_embed(source: Path, store: Path, *, extra: tuple[str, ...] = ()) -> dict:
    """One `featurestore embed` in a fresh process: its JSON result plus ``peak_mb`` (the process's peak RSS) and
    ``wall_s`` (start to exit, imports included); with ``--engine ray``, ``actor_peak_mb`` too."""
    root = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.argv[0] = 'featurestore'; main()",
           "embed", "--store", str(store), "--source", str(source), "--key", "id", "--text", "text",
           "-e", ENCODER, "--name", "bench", "--no-progress", "--json", *extra]
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, WorkerPeaks() as workers:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=root, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest child's so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"featurestore embed failed ({proc.returncode}):\n{stderr[-3000:]}")
    try:
        result = json.loads(stdout)[0]
    except ValueError:
        raise RuntimeError(f"featurestore embed printed no JSON result:\n{stdout[-2000:]}\n{stderr[-2000:]}") from None
    result.update(peak_mb=usage.ru_maxrss / 1024, wall_s=wall)
    if "ray" in extra:
        result["actor_peak_mb"] = workers.peak_mb
    return result


def measure(rows: int, tmp: Path, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """The first run and the rerun of a job over ``rows`` synthetic rows (files under ``tmp``, removed after)."""
    source = write_source(rows, tmp / f"texts-{rows}.parquet")
    store = tmp / f"store-{rows}"
    try:
        first = run_embed(source, store, extra=extra)
        rerun = run_embed(source, store, extra=extra)
    finally:
        shutil.rmtree(store, ignore_errors=True)
        source.unlink(missing_ok=True)
    if first["rows_written"] != rows or rerun["rows_skipped"] != rows or rerun["rows_written"]:
        raise RuntimeError(f"rows={rows}: first run wrote {first['rows_written']}, rerun skipped "
                           f"{rerun['rows_skipped']} and wrote {rerun['rows_written']}")
    return {"first": first, "rerun": rerun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="30000,300000,3000000", help="comma-separated row counts")
    parser.add_argument("--quick", action="store_true", help="5k and 50k rows (the smoke test)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="ray: a local Ray cluster per job; prints the actors' peak RSS too")
    args = parser.parse_args()
    extra = ("--engine", "ray") if args.engine == "ray" else ()
    sizes = [5_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    header("pyarrow", "duckdb", "numpy")
    print(f"# encoder {ENCODER}; engine {args.engine}; each run is `featurestore embed` in its own process; peak RSS "
          "from wait4" + ("; actors' peak from /proc VmHWM of ray:: processes" if extra else ""))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        seen: dict[int, dict[str, dict]] = {}
        base = sizes[0]
        for rows in sizes:
            seen[rows] = m = measure(rows, tmp, extra)
            for run in ("first", "rerun"):
                r, b = m[run], seen[base][run]
                actors = (f"   actors' peak {r['actor_peak_mb']:5.0f} MB ({r['actor_peak_mb'] - b['actor_peak_mb']:+.0f})"
                          if extra else "")
                print(f"scale rows={rows:<9,} {run:<5}  peak RSS {r['peak_mb']:6.0f} MB   {r['rows_per_s']:>9,.0f} rows/s "
                      f"({r['seconds']:.1f} s)   vs rows={base:,}: RSS {r['peak_mb'] - b['peak_mb']:+.0f} MB   "
                      f"rows/s {r['rows_per_s'] / b['rows_per_s']:.2f}x{actors}")
        top = sizes[-1]
        for run in ("first", "rerun"):
            for who, field in [("driver", "peak_mb"), ("actors", "actor_peak_mb")][:2 if extra else 1]:
                growth = seen[top][run][field] - seen[base][run][field]
                verdict = "met" if growth < GOAL_MB else "missed"
                print(f"goal  rows={base:,} -> {top:,} {run:<5} {who if extra else '':<6} peak RSS growth {growth:+.0f} MB "
                      f"(goal < {GOAL_MB:.0f} MB: {verdict})   rows/s {top:,} vs {base:,} "
                      f"{seen[top][run]['rows_per_s'] / seen[base][run]['rows_per_s']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

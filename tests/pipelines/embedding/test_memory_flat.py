"""The local engine keeps no per-row state: the Python memory a job holds while it runs does not grow with the rows.

Before the key index (``pipelines/embedding/_source_keys.py``) a job kept every key and content hash in Python dicts and lists
(the writer's committed-hash dict, the resume lookup): about 0.5 KB a row that never left (`featurestore embed` peaked
at 351 MB for 30k rows, 1,181 MB for 3M). Here ``tracemalloc`` samples the memory Python holds at every progress
report of a first run and of a rerun (everything skipped), at 10k and at 60k rows, after a warm-up job that does the
imports: the difference is what scales with the rows. Python objects and numpy arrays are traced; DuckDB's memory
(capped, spilling) and Arrow's pool are not,
which is why ``benchmarks/bench_embed_scale.py`` measures the process's peak RSS as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SMALL, LARGE = 10_000, 60_000
#: allowed growth of the held Python memory from SMALL to LARGE rows. The old engine grew by ~9 MB on the first run
#: (the writer's dict of 50k more keys and hashes) and ~8 MB on the rerun; now it is under 1 MB.
BOUND_MB = 3.0

# In a fresh process: tracemalloc counts every thread's allocations, and other tests leave threads behind (Ray's).
CHILD = """
import json, sys, tracemalloc
import numpy as np, pyarrow as pa, pipelines

def held_mb(root, table):
    samples = []
    tracemalloc.start()
    try:
        pipelines.embed(root, pipelines.TableSource(table, batch_rows=2048), encoder="hash:16", name="t",
                        progress=False, partition_rows=2000, chunk_rows=1024,
                        on_progress=lambda done, total: samples.append(tracemalloc.get_traced_memory()[0]))
    finally:
        tracemalloc.stop()
    return max(samples) / 2**20

held_mb(f"{sys.argv[1]}/warm", pa.table({"id": np.arange(100), "text": ["warm up"] * 100}))  # imports, caches
out = {}
for rows in map(int, sys.argv[2:]):
    table = pa.table({"id": np.arange(rows), "text": [f"soft cotton dress {i % 97}" for i in range(rows)]})
    root = f"{sys.argv[1]}/s{rows}"
    out[f"{rows} first"] = held_mb(root, table)
    out[f"{rows} rerun"] = held_mb(root, table)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The most memory Python held at any progress report of each job, in MB."""
    tmp = tmp_path_factory.mktemp("flat")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp), str(SMALL), str(LARGE)], capture_output=True,
                          text=True, timeout=240, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("run", ["first", "rerun"])
def test_held_memory_does_not_grow_with_rows(held, run):
    small, large = held[f"{SMALL} {run}"], held[f"{LARGE} {run}"]
    assert large - small < BOUND_MB, (f"{run}: Python held {small:.1f} MB at {SMALL:,} rows, {large:.1f} MB at "
                                      f"{LARGE:,} rows")


@pytest.mark.parametrize("row_groups", [40, 1])
def test_a_parquet_source_is_streamed_not_held(tmp_path, row_groups):
    """Reading a Parquet source holds about a page per column, whatever the file's size or row groups.

    ``ParquetFile.iter_batches`` with pyarrow's defaults pre-buffered column chunks and kept them until the end: Arrow's
    memory grew by 130 MB over a 3M-row file, and a file of one row group was held whole.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.sources import TableSource

    rows = 200_000
    text = pa.array([f"review {i:07d} " + "soft cotton dress " * 10 for i in range(rows)])  # ~200 B a row
    path = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"id": np.arange(rows), "text": text}), path, row_group_size=rows // row_groups,
                   compression="none", use_dictionary=False)
    del text
    before = pa.total_allocated_bytes()
    most, seen = 0, 0
    for batch in TableSource(path).batches(["id", "text"], text="text"):
        seen += batch.num_rows
        most = max(most, pa.total_allocated_bytes() - before)
        del batch
    assert seen == rows
    file_mb, most_mb = path.stat().st_size / 2**20, most / 2**20
    assert most_mb < 8, f"reading a {file_mb:.0f} MB file ({row_groups} row groups) held {most_mb:.0f} MB of Arrow memory"

"""The Ray engine against the local engine on the same input, in one run: what running on Ray Data costs.

    python -m benchmarks.bench_embed_ray --rows 4000             # MiniLM on review sentences, local vs Ray
    python -m benchmarks.bench_embed_ray --quick                 # hash:64 on 3,000 rows: seconds, for the smoke test

Both engines write a fresh store from the same Parquet file with the same encoder; each is warmed once first (the
local engine loads its model, Ray starts its worker processes), so the figures are the steady cost of a job. The Ray
cluster is local (`ray.init(num_cpus=<cores>)`), started before timing: a real cluster is already running. With
CUDA present, one more line gives rows/s with one actor per GPU (`num_gpus_per_worker=1`, `concurrency=<gpus>`).
Goal (issue 17): Ray/local time <= 1.3x on 2 cores for a real model.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ._common import header

MODEL = "sentence-transformers:all-MiniLM-L6-v2"


def timed(source: Path, root: Path, encoder: str, **options) -> float:
    import featurestore
    import pipelines

    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    result = pipelines.embed(featurestore.open(root), source, key="id", text="text", encoder=encoder, name="bench",
                             progress=False, **options)
    seconds = time.perf_counter() - t0
    if result.rows_written != result.rows_read:
        raise RuntimeError(f"{options}: wrote {result.rows_written} of {result.rows_read} rows")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="hash:64 on 3,000 synthetic rows")
    args = parser.parse_args()
    import ray

    from .bench_embed_scale import write_source

    header("ray", "pyarrow", "torch", "sentence-transformers")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cores = os.cpu_count() or 1
    try:
        source = tmp / "texts.parquet"
        if args.quick:
            encoder, rows, label = "hash:64", 3000, "hash:64"
            write_source(rows, source)
        else:
            import numpy as np
            import pyarrow as pa
            import pyarrow.parquet as pq

            from .bench_embed_text import sentences

            encoder, rows, label = MODEL, args.rows, "minilm"
            pq.write_table(pa.table({"id": np.arange(rows), "text": sentences(rows)}), source)
        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
        started = time.perf_counter() - t0
        print(f"# local Ray with {cores} CPUs started in {started:.1f} s (not counted below); one actor, 1 CPU each")
        timed(source, tmp / "warm-local", encoder, limit=256)
        timed(source, tmp / "warm-ray", encoder, limit=256, engine="ray", concurrency=1)
        local = timed(source, tmp / "local", encoder)
        on_ray = timed(source, tmp / "ray", encoder, engine="ray", concurrency=1)
        print(f"ray   rows={rows} {label} cpu   local engine {local:.1f} s ({rows / local:,.0f} rows/s)   "
              f"ray engine {on_ray:.1f} s ({rows / on_ray:,.0f} rows/s)   ray/local {on_ray / local:.2f}x")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            on_gpus = timed(source, tmp / "gpu", encoder, engine="ray", num_gpus_per_worker=1, concurrency=gpus)
            print(f"ray   rows={rows} {label} gpu   ray engine, one actor per GPU ({gpus}) {on_gpus:.1f} s "
                  f"({rows / on_gpus:,.0f} rows/s)   gpu/cpu-local {on_gpus / local:.2f}x")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

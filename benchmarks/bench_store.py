"""Store write/read vs plain pyarrow on the same table, and SQL top-10 cosine vs numpy.

    python -m benchmarks.bench_store --rows 200000 --dim 384

Prints one line per case ending in a ratio against the baseline named on the line. Goal: the store moves rows at
>= 0.8x the speed of plain pyarrow both ways (ratio = pyarrow time / store time).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import featurestore
from featurestore.storage import fixed_size_list

from ._common import header, median_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header("pyarrow", "duckdb", "numpy")
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    table = pa.table({"id": np.arange(args.rows), "embedding": fixed_size_list(matrix)})
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    spec = {"encoder": "external:bench", "metric": "cosine"}
    try:
        raw_path = tmp / "raw.parquet"
        counter = iter(range(10**6))

        def raw_write():
            pq.write_table(table, raw_path)

        def store_write():
            store = featurestore.open(tmp / f"store{next(counter)}")
            store.write("vecs", table, spec=spec)

        def raw_read():
            t = pq.read_table(raw_path)
            return t.column("embedding").combine_chunks().values.to_numpy().reshape(-1, args.dim)

        t_raw_w = median_time(raw_write, args.repeat)
        t_store_w = median_time(store_write, args.repeat)
        store = featurestore.open(tmp / "store0")
        fs = store.get("vecs")
        t_raw_r = median_time(raw_read, args.repeat)
        t_store_r = median_time(fs.to_numpy, args.repeat)
        assert np.array_equal(fs.to_numpy(), matrix)
        n = f"rows={args.rows} dim={args.dim}"
        print(f"write {n}   pyarrow {t_raw_w:.2f} s   store {t_store_w:.2f} s   store/pyarrow speed {t_raw_w / t_store_w:.2f}x")
        print(f"read  {n}   pyarrow {t_raw_r:.2f} s   store {t_store_r:.2f} s   store/pyarrow speed {t_raw_r / t_store_r:.2f}x")

        q = matrix[123]
        normed = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

        def numpy_top10():
            scores = normed @ (q / np.linalg.norm(q))
            top = np.argpartition(-scores, 10)[:10]
            return top[np.argsort(-scores[top])]

        sql = store.sql(f"select id from vecs order by array_cosine_similarity(embedding, $q::FLOAT[{args.dim}]) desc limit 10",
                        params={"q": q.tolist()})

        def sql_top10():
            return sql.relation.fetchall()

        t_np = median_time(numpy_top10, args.repeat)
        t_sql = median_time(sql_top10, args.repeat)
        assert [r[0] for r in sql_top10()] == numpy_top10().tolist()
        print(f"top10 cosine {n}   numpy {t_np * 1e3:.1f} ms   duckdb sql {t_sql * 1e3:.1f} ms   sql/numpy time {t_sql / t_np:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

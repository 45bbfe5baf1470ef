"""Top-k vector search: our exact search and ANN index against the baselines a user would write, in one run.

    python -m benchmarks.bench_search --rows 1000000 --dim 384       # the issue's size (needs ~10 GB of RAM)
    python -m benchmarks.bench_search --quick                        # seconds: the smoke test's size
    python -m benchmarks.bench_search --rows 0 --minilm 3000         # ANN on real MiniLM vectors of demo reviews

Each line ends in a ratio against numpy over the same float32 matrix in RAM (``X @ q`` + ``argpartition``), measured
in the same run: our exact search (``store.search``, memory-mapped cache), 1,000 queries batched, faiss flat, DuckDB's
``array_cosine_similarity`` over a native table and over the store's Parquet (``store.sql``), and the HNSW index
(recall@10 against exact search, build seconds, index bytes). Goals: exact <= 1.0x numpy with the same answers;
ANN recall@10 >= 0.95 at >= 10x faster than our exact search.

The synthetic rows are clustered (unit vectors near 1,000 random centres): on pure Gaussian noise no index does
better than brute force, so its recall would say nothing about real embeddings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.storage import fixed_size_list

from ._common import header, median_time

K = 10


def synthetic(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors near ``min(1000, rows)`` random centres, written block by block (no float64 copies)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((min(1000, max(rows, 1)), dim), dtype=np.float32)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        block = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + n] = block
    return out


def numpy_top_k(x: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    scores = x @ q
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(-scores[top])]


def numpy_batch(x: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 64) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ x.T
        top = np.argpartition(scores, -k, axis=1)[:, -k:]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def recall_at_k(found: list[list[int]], exact: list[list[int]]) -> float:
    return sum(len(set(f) & set(e)) for f, e in zip(found, exact)) / sum(len(e) for e in exact)


def run_synthetic(args: argparse.Namespace, tmp: Path) -> None:
    n, dim = args.rows, args.dim
    t0 = time.perf_counter()
    x = synthetic(n, dim)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((args.queries, dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
    queries = x[rng.integers(0, n, args.queries)] + noise  # a near neighbour of a row, not one of them
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    q = queries[0]
    store = featurestore.open(tmp / "store")
    store.write("vecs", {"id": np.arange(n), "embedding": x}, spec={"encoder": "external:bench", "metric": "cosine"})
    t_cache = time.perf_counter()
    store.search("vecs", q, k=K)  # builds the memory-mapped cache once
    print(f"# setup rows={n} dim={dim}: data+write {t_cache - t0:.1f} s, search cache {time.perf_counter() - t_cache:.1f} s")
    label = f"search rows={n} dim={dim} k={K}"

    t_np = median_time(lambda: numpy_top_k(x, q), args.repeat)
    t_ours = median_time(lambda: store.search("vecs", q, k=K), args.repeat)
    same = all(store.search("vecs", qq, k=K).column("id").to_pylist() == numpy_top_k(x, qq).tolist()
               for qq in queries[:20])
    print(f"{label}  numpy {ms(t_np)}   ours exact {ms(t_ours)}   same top-10 {same}   ours/numpy {t_ours / t_np:.2f}x")

    batch = queries
    t_np_b = median_time(lambda: numpy_batch(x, batch), 1)
    t_ours_b = median_time(lambda: store.search("vecs", batch, k=K), 1)
    print(f"{label}  batch={len(batch)}  numpy {t_np_b:.2f} s ({ms(t_np_b / len(batch))}/q)   ours exact "
          f"{t_ours_b:.2f} s ({ms(t_ours_b / len(batch))}/q)   ours/numpy {t_ours_b / t_np_b:.2f}x")

    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        t_flat = median_time(lambda: flat.search(q[None, :], K), args.repeat)
        del flat
        print(f"{label}  numpy {ms(t_np)}   faiss flat {ms(t_flat)}   faiss-flat/numpy {t_flat / t_np:.2f}x")

    import duckdb

    with duckdb.connect() as con:
        con.register("arrow_vecs", pa.table({"id": np.arange(n), "embedding": fixed_size_list(x)}))
        con.execute(f"CREATE TABLE vecs AS SELECT id, embedding::FLOAT[{dim}] AS embedding FROM arrow_vecs")
        con.unregister("arrow_vecs")
        sql = (f"SELECT id, array_cosine_similarity(embedding, $q::FLOAT[{dim}]) AS s FROM vecs "
               f"ORDER BY s DESC LIMIT {K}")
        t_duck = median_time(lambda: con.execute(sql, {"q": q.tolist()}).fetchall(), args.repeat)
    print(f"{label}  numpy {ms(t_np)}   duckdb table {ms(t_duck)}   duckdb-table/numpy {t_duck / t_np:.2f}x")
    sql = (f"SELECT id, array_cosine_similarity(embedding, $q::FLOAT[{dim}]) AS s FROM vecs "
           f"ORDER BY s DESC LIMIT {K}")
    t_parquet = median_time(lambda: store.sql(sql, params={"q": q.tolist()}).arrow(), 1, warmup=0)
    print(f"{label}  numpy {ms(t_np)}   duckdb over parquet (store.sql) {ms(t_parquet)}   "
          f"duckdb-parquet/numpy {t_parquet / t_np:.2f}x")

    if faiss is not None and not args.no_ann:
        run_ann(store, "vecs", queries, label, t_ours, args.repeat)


def run_ann(store: featurestore.Store, name: str, queries: np.ndarray, label: str, t_exact: float | None,
            repeat: int) -> None:
    """Build the set's HNSW index, then recall@10 and time per query against exact search on ``queries``."""
    t0 = time.perf_counter()
    info = store.build_index(name, force=True)
    build = time.perf_counter() - t0
    exact = store.search(name, queries, k=K)
    approx = store.search(name, queries, k=K, index="ann")

    def ids(table: pa.Table) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in range(len(queries))]
        for qi, key in zip(table.column("query").to_pylist(), table.column(table.column_names[1]).to_pylist()):
            groups[qi].append(key)
        return groups

    recall = recall_at_k(ids(approx), ids(exact))
    q = queries[0]
    t_ann = median_time(lambda: store.search(name, q, k=K, index="ann"), repeat)
    if t_exact is None:
        t_exact = median_time(lambda: store.search(name, q, k=K), repeat)
    print(f"{label}  ours exact {ms(t_exact)}   ann {ms(t_ann)} (ef {info['ef_search']}, recall@10 {recall:.3f} on "
          f"{len(queries)} queries; built-in estimate {info['recall_at_10']:.3f})   build {build:.1f} s "
          f"(hnsw {info['build_seconds']:.1f} s)   index {info['bytes'] / 2**20:.0f} MiB   "
          f"exact/ann {t_exact / t_ann:.1f}x")


def run_minilm(args: argparse.Namespace, tmp: Path) -> None:
    """ANN on real all-MiniLM-L6-v2 vectors of ``--minilm`` demo reviews; 300 other reviews are the queries."""
    import pipelines
    from pipelines.demos import demo_tables

    source, _, _ = demo_tables(args.minilm + 300, seed=0)
    store = featurestore.open(tmp / "minilm")
    t0 = time.perf_counter()
    pipelines.embed(store, source.slice(0, args.minilm), key="id", text="text", name="reviews_minilm",
                    encoder="sentence-transformers:all-MiniLM-L6-v2", progress=False)
    from featurestore.encoders import encoder_from_spec

    spec = store.get("reviews_minilm").spec
    queries = encoder_from_spec(spec).encode(source.slice(args.minilm).column("text").to_pylist()).astype(np.float32)
    print(f"# minilm: embedded {args.minilm} reviews and 300 queries in {time.perf_counter() - t0:.1f} s")
    run_ann(store, "reviews_minilm", queries, f"search minilm rows={args.minilm} dim={queries.shape[1]} k={K}",
            None, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Synthetic rows (0: skip the synthetic cases).")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000, help="Queries in the batch (and for ANN recall).")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-ann", action="store_true", help="Skip the HNSW index on the synthetic rows.")
    parser.add_argument("--minilm", type=int, default=0, help="Also ANN on this many real MiniLM review vectors.")
    parser.add_argument("--quick", action="store_true", help="20,000 x 64, 100 queries: a few seconds.")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.dim, args.queries, args.repeat = 20_000, 64, 100, 3
    header("numpy", "duckdb", "pyarrow", "faiss-cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        if args.rows:
            run_synthetic(args, tmp)
        if args.minilm:
            run_minilm(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

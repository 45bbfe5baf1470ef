"""An optional approximate index per feature set version: faiss HNSW, persisted beside the version, with its recall.

Chosen by measurement (3,000 MiniLM review vectors, 600 other reviews as queries; 2-core AMD EPYC, shared): faiss
HNSW (M 32) and usearch (connectivity 16) reach the same recall@10 at the same ef (0.971 / 0.965 at 32, 0.992 / 0.992
at 64), usearch built 2x faster (1.0 vs 2.1 s) but faiss answered a single query 2-3x faster (0.14 vs 0.38 ms at ef
32), and queries are what an index is for. DuckDB's vss persists HNSW only behind an experimental flag without WAL
recovery (corruption and file-bloat reports), so it is not used.

The index is built on demand (``store.build_index(name)`` or ``store.search(..., index="ann")``) from the search
matrix (``_search``), so row ``i`` of the index is row ``i`` of the matrix and its keys. It is written as
``ann-<fingerprint>-<metric>.faiss`` with ``ann-<fingerprint>-<metric>.json`` (written last: the index is complete
once its info is there). The fingerprint covers the manifest's partitions, so after an append the files no longer
match and the next ANN search builds a new index (the old files are removed): a stale index is never used.

At build, the index's ``efSearch`` is chosen by measurement: the smallest of ``EF_CHOICES`` whose recall@10 against
exact search reaches ``recall`` on ``RECALL_QUERIES`` midpoints of two of the set's rows (see ``_choose_ef``). The
recall reached is stored with the index and returned by ``index_info``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.errors import CorruptStoreError
from featurestore.query._featureset import FeatureSet
from featurestore.search._matrix import Matrix, fingerprint, remove_stale
from featurestore.search._scoring import exact_scores, order_hits, top_candidates
from featurestore.storage._atomic import atomic_write_text, fsync_path
from featurestore.storage._manifest import now
from featurestore.utils._optional import import_optional, library_version
from featurestore.utils._progress import progress_enabled, rich_progress
from featurestore.utils._vectors import unit_rows

if TYPE_CHECKING:
    from featurestore._store import Store

ANN_PREFIX = "ann-"
KIND = "faiss-hnsw"
HNSW_M = 32  # neighbours per node: 32 reached recall@10 >= 0.95 on MiniLM vectors at ef 64 (DESIGN.md)
EF_CONSTRUCTION = 64
EF_CHOICES = (16, 32, 64, 128, 256, 512, 1024)
RECALL_QUERIES = 200
RECALL_K = 10
_ADD_ROWS = 50_000  # rows added per step (progress, and bounded copies from the memory-mapped matrix)

_INDEXES: dict[str, tuple[Any, dict[str, Any]]] = {}
_INDEXES_LOCK = threading.Lock()


def _faiss() -> Any:
    return import_optional("faiss", extra="ann", what="The approximate (ANN) search index")


def index_files(vdir: Path, fp: str, metric: str) -> tuple[Path, Path]:
    """(index, info) files of a version's ANN index for rows ``fp`` scored by ``metric``."""
    stem = f"{ANN_PREFIX}{fp}-{metric}"
    return vdir / f"{stem}.faiss", vdir / f"{stem}.json"


def index_info(fs: FeatureSet, metric: str) -> dict[str, Any]:
    """What is known about the version's ANN index for ``metric``: ``{"status": "ready"|"stale"|"missing", ...}``.

    ``ready``: built for the rows the version holds now, with the recall measured at build. ``stale``: an index of
    an earlier state of the version (it will be rebuilt before use). ``missing``: none.
    """
    fp = fingerprint(fs.manifest)
    _, info_path = index_files(fs.path, fp, metric)
    if info_path.is_file():
        return {"status": "ready", **_read_info(info_path)}
    stale = sorted(fs.path.glob(f"{ANN_PREFIX}*-{metric}.json"))
    if stale:
        return {"status": "stale", **_read_info(stale[-1])}
    return {"status": "missing", "metric": metric}


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"Unreadable ANN index info {path}: {exc}.\n  Help: rebuild it with "
                                "store.build_index(name, force=True).") from None
    if not isinstance(info, dict):
        raise CorruptStoreError(f"Unreadable ANN index info {path}: not a JSON object.")
    return info


def build_index(store: "Store", fs: FeatureSet, matrix: Matrix, metric: str, *, recall: float = 0.95,
                force: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Build (or find) the version's HNSW index for the rows ``matrix`` holds; return its info."""
    index_path, info_path = index_files(fs.path, matrix.fingerprint, metric)
    if not force and load_index(fs, matrix, metric) is not None:
        return {"status": "ready", **_read_info(info_path)}
    faiss = _faiss()
    t0 = time.perf_counter()
    dim = matrix.vectors.shape[1]
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    n = matrix.n_rows
    with rich_progress(f"ann index {fs.name} v{fs.version}", n, enabled=progress_enabled(progress)) as bar:
        for start in range(0, n, _ADD_ROWS):
            index.add(np.ascontiguousarray(matrix.vectors[start:start + _ADD_ROWS], dtype=np.float32))
            bar(min(n, start + _ADD_ROWS))
    build_s = time.perf_counter() - t0
    ef, reached, n_queries = _choose_ef(index, matrix, metric, recall)
    index.hnsw.efSearch = ef
    tmp = index_path.with_name(f".tmp-{uuid.uuid4().hex}-{index_path.name}")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, index_path)
        fsync_path(index_path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {
        "kind": KIND, "library": f"faiss {library_version('faiss-cpu') or getattr(faiss, '__version__', '?')}",
        "fingerprint": matrix.fingerprint, "metric": metric, "rows": n, "dim": dim,
        "partitions": [p.file for p in fs.manifest.partitions], "M": HNSW_M, "ef_construction": EF_CONSTRUCTION,
        "ef_search": ef, "recall_at_10": reached, "recall_target": recall, "recall_queries": n_queries,
        "build_seconds": round(build_s, 3), "bytes": index_path.stat().st_size, "created_at": now(),
    }
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    remove_stale(fs.path, prefix=ANN_PREFIX, keep=matrix.fingerprint)
    with _INDEXES_LOCK:
        _INDEXES.clear()  # one index per process, as load_index keeps: they are as large as the matrix
        _INDEXES[str(index_path)] = (index, info)
    return {"status": "ready", **info}


def _choose_ef(index: Any, matrix: Matrix, metric: str, target: float) -> tuple[int, float, int]:
    """(efSearch, recall@10 reached, queries): the smallest ef whose recall reaches ``target``, else the largest.

    The queries are midpoints of two random rows of the set. A row itself makes too easy a query (it sits in the
    graph): on 3,000 MiniLM review vectors, ef 16 reached 0.969 from the rows themselves but 0.926 from 600 other
    reviews, and 0.909 from midpoints; at ef 32, 0.989 / 0.971 / 0.968. Midpoints err on the safe side.
    """
    n = matrix.n_rows
    k = min(RECALL_K, n)
    if n < 2:
        return EF_CHOICES[0], 1.0, 0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, RECALL_QUERIES), rng.integers(0, n, RECALL_QUERIES)
    queries = (np.asarray(matrix.vectors[a], dtype=np.float32) + np.asarray(matrix.vectors[b], dtype=np.float32)) / 2
    if matrix.unit:
        queries = unit_rows(queries)
    exact = top_candidates(matrix, queries, k, metric)
    kth = [order_hits(matrix, rows, queries[i], metric, k)[1][-1] for i, rows in enumerate(exact)]
    reached = 0.0
    for ef in EF_CHOICES:
        index.hnsw.efSearch = max(ef, k)
        _, ids = index.search(queries, k)
        hits = 0
        for i, row in enumerate(ids):
            row = row[row >= 0]
            hits += int((exact_scores(matrix, queries[i], row, metric) >= kth[i] - 1e-6).sum())
        reached = round(hits / (k * len(queries)), 4)
        if reached >= target:
            return ef, reached, len(queries)
    return EF_CHOICES[-1], reached, len(queries)


def load_index(fs: FeatureSet, matrix: Matrix, metric: str) -> tuple[Any, dict[str, Any]] | None:
    """The ready index of the version's current rows (from memory, else from its files), or None."""
    index_path, info_path = index_files(fs.path, matrix.fingerprint, metric)
    with _INDEXES_LOCK:
        found = _INDEXES.get(str(index_path))
    if found is not None:
        return found
    if not (index_path.is_file() and info_path.is_file()):
        return None
    try:
        info = _read_info(info_path)
    except CorruptStoreError:
        return None  # derived data: built again
    if info.get("fingerprint") != matrix.fingerprint or info.get("rows") != matrix.n_rows:
        return None
    faiss = _faiss()
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError:
        return None  # unreadable: built again
    if index.ntotal != matrix.n_rows or index.d != matrix.vectors.shape[1]:
        return None
    index.hnsw.efSearch = int(info.get("ef_search", 64))
    with _INDEXES_LOCK:
        _INDEXES.clear()  # one index per process: they are as large as the matrix
        _INDEXES[str(index_path)] = (index, info)
    return index, info


def ann_candidates(store: "Store", fs: FeatureSet, matrix: Matrix, queries: np.ndarray, k: int, metric: str, *,
                   progress: bool | None = None) -> list[np.ndarray]:
    """Per query, the rows of the index's k nearest; builds the index first when it is missing or stale."""
    loaded = load_index(fs, matrix, metric)
    if loaded is None:
        build_index(store, fs, matrix, metric, progress=progress)
        loaded = load_index(fs, matrix, metric)
    index, info = loaded
    index.hnsw.efSearch = max(int(info.get("ef_search", 64)), k)
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return [row[row >= 0].astype(np.int64) for row in ids]  # rescored exactly and ordered by the caller

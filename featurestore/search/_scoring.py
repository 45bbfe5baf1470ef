"""Exact scoring: float32 products choose the candidates, float64 rescoring orders them, ties by key.

Scoring is a float32 matrix product and ``np.argpartition`` (one product for a single query; blocks of rows for a
batch or a filtered subset), keeping every row within float32 rounding of the k-th score; those few candidates are
rescored in float64 and ordered by score, then key, so the answer is exact and ties always come out the same. The
ANN index (``_ann``) orders its candidates with the same :func:`order_hits`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.search._matrix import Matrix

# Rows scored per block. 32k rows x 384 dims is 48 MB: large enough that BLAS runs at full speed, small enough that
# a block's scores stay in cache for argpartition; a batch of queries shrinks it so scores stay near 64 MB.
BLOCK_ROWS = 32_768
_SCORE_BYTES = 64 << 20


def top_candidates(matrix: Matrix, queries: np.ndarray, k: int, metric: str,
                   rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Per query, the row numbers of every row that can be among its ``k`` best (ties and near-ties included).

    ``queries`` is (q, dim) float32, already unit length for cosine; ``rows`` (sorted row numbers) limits scoring to
    those rows. Float32 scores choose the candidates: every row within float32 rounding (``_slack``) of the k-th
    best is kept, so :func:`order_hits`, which rescores them in float64, ranks exactly; identical vectors tie exactly
    and are ordered by key.
    """
    vectors = matrix.vectors
    n = vectors.shape[0] if rows is None else len(rows)
    n_queries = queries.shape[0]
    # One query over contiguous rows: a single matrix-vector product, as plain numpy does (it is memory bound, and
    # 30 smaller calls measured up to 2x slower on 1M x 384, 2 shared cores); batches and gathered rows go by block.
    block_rows = n if n_queries == 1 and rows is None else max(1024, min(BLOCK_ROWS, _SCORE_BYTES // (4 * n_queries)))
    found_rows: list[list[np.ndarray]] = [[] for _ in range(n_queries)]
    found_scores: list[list[np.ndarray]] = [[] for _ in range(n_queries)]
    sq = matrix.sq_norms() if metric == "l2" else None
    q_sq = np.einsum("ij,ij->i", queries, queries)
    slack = _slack(matrix, q_sq, metric)
    for start in range(0, n, max(1, block_rows)):
        stop = min(n, start + block_rows)
        ids = None if rows is None else rows[start:stop]
        block = vectors[start:stop] if ids is None else vectors[ids]
        scores = (block @ queries[0])[None, :] if n_queries == 1 else queries @ block.T
        if metric == "l2":  # -(|q|^2 - 2 q.x + |x|^2), without the |q|^2 every row shares
            scores *= 2
            scores -= (sq[start:stop] if ids is None else sq[ids])[None, :]
        width = scores.shape[1]
        if width > k:
            part = np.argpartition(scores, width - k, axis=1)[:, width - k:]
            kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        else:
            kth = scores.min(axis=1)
        for i in range(n_queries):
            local = np.flatnonzero(scores[i] >= kth[i] - slack[i])  # the block's top k and all within rounding
            found_rows[i].append(local + start if ids is None else ids[local])
            found_scores[i].append(scores[i, local])
    out = []
    for i in range(n_queries):
        r = np.concatenate(found_rows[i]) if found_rows[i] else np.empty(0, dtype=np.int64)
        s = np.concatenate(found_scores[i]) if found_scores[i] else np.empty(0, dtype=np.float32)
        if len(s) > k:  # only rows within rounding of the overall k-th score can be among the k
            kth = np.partition(s, len(s) - k)[len(s) - k]
            r = r[s >= kth - slack[i]]
        out.append(r.astype(np.int64, copy=False))
    return out


def _slack(matrix: Matrix, q_sq: np.ndarray, metric: str) -> np.ndarray:
    """Per query, a bound on the float32 rounding error of a score (a sum of ``dim`` products; BLAS order varies)."""
    q_norm = np.sqrt(q_sq.astype(np.float64))
    x_norm = 1.0 if matrix.unit else float(np.sqrt(matrix.sq_norms().max(initial=0.0)))
    scale = q_norm * x_norm if metric != "l2" else (q_norm + x_norm) ** 2
    return (_ROUNDING * matrix.vectors.shape[1] * scale + 1e-30).astype(np.float32)


# float32 epsilon, doubled: |sum of d products - exact| <= d * eps * |q| |x| bounds the worst case of any order.
_ROUNDING = 2.0 * float(np.finfo(np.float32).eps)


def exact_scores(matrix: Matrix, query: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Scores of ``rows`` for one query in float64 (minus the squared distance for ``l2``)."""
    block = np.asarray(matrix.vectors[rows], dtype=np.float64)
    q = query.astype(np.float64)
    if metric == "l2":
        diff = block - q[None, :]
        return -np.einsum("ij,ij->i", diff, diff)
    return block @ q


def order_hits(matrix: Matrix, rows: np.ndarray, query: np.ndarray, metric: str,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of ``rows`` by float64 score descending, then key ascending (ties always come out the same);
    returns (rows, scores)."""
    scores = exact_scores(matrix, query, rows, metric)
    if len(rows) <= 1:
        return rows, scores
    table = matrix.keys.take(pa.array(rows)).append_column("__score", pa.array(-scores))
    order = pc.sort_indices(table, sort_keys=[("__score", "ascending")] + [(c, "ascending") for c in matrix.key])
    order = order.to_numpy()[:k]
    return rows[order], scores[order]

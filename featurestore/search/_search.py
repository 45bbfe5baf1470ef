"""Vector search over a feature set version: exact by default, through the version's HNSW index on request.

``_matrix`` holds the cached float32 matrix of a version, ``_queries`` turns what the caller asked into query vectors
(and runs ``where`` and ``columns`` through SQL), ``_scoring`` ranks exactly; ``_ann`` is the optional index.
Measured on 1M x 384 (2-core AMD EPYC, shared): one exact query takes what plain numpy over the same matrix in RAM
takes (see ``benchmarks/bench_search.py``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.errors import ValidationError
from featurestore.search._matrix import METRICS, Matrix, load_matrix, resolve_metric
from featurestore.search._queries import hit_columns, parse_queries, where_rows
from featurestore.search._scoring import order_hits, top_candidates
from featurestore.utils._validation import InstanceOf, Interval, StrOptions, validate_params

if TYPE_CHECKING:
    from featurestore._store import Store

SCORE, RANK, QUERY = "score", "rank", "query"

_PARAMS: dict[str, list] = {
    "k": [Interval(numbers.Integral, 1, None, closed="left")],
    "where": [InstanceOf(str, "an SQL predicate (str)"), None],
    "metric": [StrOptions(set(METRICS)), None],
    "include_self": ["boolean"],
    "index": [StrOptions({"exact", "ann"})],
}


def search(store: "Store", name: str, query: Any = None, *, key: Any = None, image: Any = None, k: int = 10,
           where: str | None = None, columns: Sequence[str] | None = None, version: int | None = None,
           metric: str | None = None, include_self: bool = False, index: str = "exact",
           progress: bool | None = None) -> pa.Table:
    """See :meth:`Store.search`."""
    validate_params({"k": k, "where": where, "metric": metric, "include_self": include_self, "index": index},
                    _PARAMS, "Store.search")
    columns = _column_list(columns)
    fs = store.get(name, version)
    metric = resolve_metric(fs, metric)
    unit = metric == "cosine"
    matrix = load_matrix(fs, unit=unit, progress=progress)
    queries = parse_queries(store, fs, matrix, query, key, unit, image)
    rows = None if where is None else where_rows(store, fs, matrix, where)
    drop_self = queries.self_rows is not None and not include_self
    want = k + 1 if drop_self else k
    if index == "ann":
        if where is not None:
            raise ValidationError("index='ann' cannot apply a where filter (an approximate index would miss rows the "
                                  "filter keeps). Help: leave index='exact' with where: only the kept rows are scored.")
        from featurestore.search._ann import ann_candidates

        candidates = ann_candidates(store, fs, matrix, queries.vectors, want, metric, progress=progress)
    else:
        candidates = top_candidates(matrix, queries.vectors, want, metric, rows)
    parts = []
    for i, r in enumerate(candidates):
        r, s = order_hits(matrix, r, queries.vectors[i], metric, want)
        if drop_self:
            keep = r != queries.self_rows[i]
            r, s = r[keep], s[keep]
        r, s = r[:k], s[:k]
        if metric == "l2":  # minus the distance: higher is nearer, as for the other metrics
            s = -np.sqrt(np.maximum(-s, 0))
        part = matrix.keys.take(pa.array(r, pa.int64()))
        part = part.append_column(SCORE, pa.array(s.astype(np.float32)))
        part = part.append_column(RANK, pa.array(np.arange(1, len(r) + 1, dtype=np.int32)))
        if queries.batch:
            part = part.add_column(0, QUERY, pa.array(np.full(len(r), i, dtype=np.int32)))
        parts.append(part)
    result = pa.concat_tables(parts) if parts else _empty_result(matrix, queries.batch)
    return hit_columns(store, fs, result, columns)


def _column_list(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise ValidationError(f"columns must be a list of column names. Got {columns!r} instead.")
    return list(dict.fromkeys(columns))


def _empty_result(matrix: Matrix, batch: bool) -> pa.Table:
    table = matrix.keys.slice(0, 0).append_column(SCORE, pa.array([], pa.float32()))
    table = table.append_column(RANK, pa.array([], pa.int32()))
    return table.add_column(0, QUERY, pa.array([], pa.int32())) if batch else table


_INDEX_PARAMS: dict[str, list] = {
    "recall": [Interval(numbers.Real, 0, 1, closed="right")],
    "force": ["boolean"],
    "metric": [StrOptions(set(METRICS)), None],
}


def build_index(store: "Store", name: str, *, version: int | None = None, metric: str | None = None,
                recall: float = 0.95, force: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """See :meth:`Store.build_index`."""
    from featurestore.search._ann import build_index as build

    validate_params({"recall": recall, "force": force, "metric": metric}, _INDEX_PARAMS, "Store.build_index")
    fs = store.get(name, version)
    metric = resolve_metric(fs, metric)
    matrix = load_matrix(fs, unit=metric == "cosine", progress=progress)
    return build(store, fs, matrix, metric, recall=recall, force=force, progress=progress)


def index_info(store: "Store", name: str, *, version: int | None = None, metric: str | None = None) -> dict[str, Any]:
    """See :meth:`Store.index_info`."""
    from featurestore.search._ann import index_info as info

    validate_params({"metric": metric}, _INDEX_PARAMS, "Store.index_info")
    fs = store.get(name, version)
    return info(fs, resolve_metric(fs, metric))

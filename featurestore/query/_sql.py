"""SQL over the store: a read-only guard and a small result object with DuckDB's output names."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from featurestore.errors import QueryTimeoutError, ReadOnlyQueryError
from featurestore.storage._format import EMBEDDING, to_matrix

T = TypeVar("T")

# Query tree nodes that only read. Anything else (COPY_QUERY_NODE, INSERT_QUERY_NODE... inside a CTE) writes.
_READING_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
_EXPLAIN = re.compile(r"^\s*explain\b\s*(?:analyze\b|analyse\b|\([^()]*\))?\s*", re.IGNORECASE)
_NODE_TYPE = re.compile(r'"type":\s*"([A-Z_]+_NODE)"')


def check_read_only(con: Any, query: str) -> None:
    """Refuse anything that could write, statement by statement, looking at what would really execute.

    The statement type is not enough: ``EXPLAIN ANALYZE`` runs the statement it explains, and a SELECT may carry a
    CTE that copies or inserts (``with t as (copy ... to ...) select 1``). So EXPLAIN is checked by its inner
    statement, and every SELECT's parse tree (DuckDB's ``json_serialize_sql``) may hold only reading query nodes.
    """
    for statement in con.extract_statements(query):
        _check_statement(con, statement.query, statement.type.name)


def _refuse(kind: str) -> ReadOnlyQueryError:
    return ReadOnlyQueryError(
        f"store.sql() is read-only: a {kind} statement is not allowed. Only SELECT and EXPLAIN of a SELECT run here; "
        "write feature sets with store.write() or `featurestore embed`."
    )


def _check_statement(con: Any, text: str, kind: str) -> None:
    if kind == "EXPLAIN":
        inner = _EXPLAIN.sub("", text, count=1)
        statements = con.extract_statements(inner) if inner.strip() else []
        if len(statements) != 1 or statements[0].type.name == "EXPLAIN":
            raise _refuse("EXPLAIN of something other than one SELECT")
        _check_statement(con, statements[0].query, statements[0].type.name)
        return
    if kind != "SELECT":
        raise _refuse(kind)
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0][0])
    if tree.get("error"):
        raise ReadOnlyQueryError(f"store.sql() could not check this statement ({tree.get('error_message')}); refused.")
    writes = sorted(set(_NODE_TYPE.findall(json.dumps(tree))) - _READING_NODES)
    if writes:
        raise _refuse(f"SELECT with a writing clause ({', '.join(w.removesuffix('_QUERY_NODE') for w in writes)})")


def _with_timeout(con: Any, timeout: float | None, run: Callable[[], T]) -> T:
    """Run ``run``; interrupt DuckDB after ``timeout`` seconds, or at Ctrl-C.

    DuckDB notices a pending Ctrl-C only between tasks, so a long join could run on for minutes: while a query runs
    on the main thread, SIGINT calls ``con.interrupt()`` (which stops it within a vector), then surfaces as
    KeyboardInterrupt as usual.
    """
    import duckdb

    fired = {"timeout": False, "sigint": False}

    def stop(reason: str) -> None:
        fired[reason] = True
        con.interrupt()

    timer = threading.Timer(timeout, stop, args=("timeout",)) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop("sigint"))
    try:
        return run()
    except (duckdb.InterruptException, RuntimeError) as exc:
        if not isinstance(exc, duckdb.InterruptException) and "interrupted" not in str(exc).lower():
            raise
        if fired["timeout"] and not fired["sigint"]:
            raise QueryTimeoutError(f"The query ran past its timeout of {timeout:g}s and was stopped.") from None
        raise KeyboardInterrupt from None
    finally:
        if timer is not None:
            timer.cancel()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class Result:
    """The lazy result of ``store.sql``: pick the output at the end, as with a DuckDB relation.

    ``df()`` pandas, ``arrow()`` a pyarrow Table, ``batches()`` a RecordBatchReader, ``pl()`` polars,
    ``numpy()`` a dict of arrays with ``embedding`` as a (rows, dim) float32 matrix. The underlying DuckDB
    relation is ``.relation``. A ``timeout`` given to ``store.sql`` applies to each of these calls.
    """

    def __init__(self, relation: Any, connection: Any, *, timeout: float | None = None) -> None:
        self.relation = relation
        self._con = connection  # keeps the in-memory catalog alive as long as the result
        self.timeout = timeout

    def _run(self, run: Callable[[], T]) -> T:
        return _with_timeout(self._con, self.timeout, run)

    @property
    def columns(self) -> list[str]:
        return list(self.relation.columns)

    def df(self):
        return self._run(self.relation.df)

    def arrow(self) -> pa.Table:
        return self._run(self.relation.to_arrow_table)

    def batches(self, batch_size: int = 100_000) -> pa.RecordBatchReader:
        return self._run(lambda: self.relation.to_arrow_reader(batch_size))

    def pl(self):
        return self._run(self.relation.pl)

    def numpy(self) -> dict[str, np.ndarray]:
        table = self.arrow()
        out: dict[str, np.ndarray] = {}
        for name in table.column_names:
            col = table.column(name)
            if name == EMBEDDING or pa.types.is_fixed_size_list(col.type):
                out[name] = to_matrix(col, col.type.list_size)
            else:
                out[name] = col.to_numpy()
        return out

    def fetchall(self) -> list[tuple]:
        return self._run(self.relation.fetchall)

    def fetchone(self) -> tuple | None:
        rows = self._run(self.relation.limit(1).fetchall)
        return rows[0] if rows else None

    def show(self, **kwargs: Any) -> None:
        self._run(lambda: self.relation.show(**kwargs))

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        # DuckDB's relation streams its batches itself; nothing is materialised here.
        return self.relation.__arrow_c_stream__(requested_schema)

    def __len__(self) -> int:
        return self._run(lambda: len(self.relation))

    def __repr__(self) -> str:
        return repr(self.relation)

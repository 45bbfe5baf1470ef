"""SQL over the store: a read-only guard and a small result object with DuckDB's output names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ._format import EMBEDDING, to_matrix
from .errors import ReadOnlyQueryError

_ALLOWED = {"SELECT", "EXPLAIN"}


def check_read_only(con: Any, query: str) -> None:
    """Refuse anything but SELECT/EXPLAIN, statement by statement (so ``select 1; copy ...`` is caught too)."""
    for statement in con.extract_statements(query):
        kind = statement.type.name
        if kind not in _ALLOWED:
            raise ReadOnlyQueryError(
                f"store.sql() is read-only: a {kind} statement is not allowed. Only SELECT and EXPLAIN run here; "
                "write feature sets with store.write() or `featurestore embed`."
            )


class Result:
    """The lazy result of ``store.sql``: pick the output at the end, as with a DuckDB relation.

    ``df()`` pandas, ``arrow()`` a pyarrow Table, ``batches()`` a RecordBatchReader, ``pl()`` polars,
    ``numpy()`` a dict of arrays with ``embedding`` as a (rows, dim) float32 matrix. The underlying DuckDB
    relation is ``.relation``.
    """

    def __init__(self, relation: Any, connection: Any) -> None:
        self.relation = relation
        self._con = connection  # keeps the in-memory catalog alive as long as the result

    @property
    def columns(self) -> list[str]:
        return list(self.relation.columns)

    def df(self):
        return self.relation.df()

    def arrow(self) -> pa.Table:
        return self.relation.to_arrow_table()

    def batches(self, batch_size: int = 100_000) -> pa.RecordBatchReader:
        return self.relation.to_arrow_reader(batch_size)

    def pl(self):
        return self.relation.pl()

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
        return self.relation.fetchall()

    def fetchone(self) -> tuple | None:
        rows = self.relation.limit(1).fetchall()
        return rows[0] if rows else None

    def show(self, **kwargs: Any) -> None:
        self.relation.show(**kwargs)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.arrow().__arrow_c_stream__(requested_schema)

    def __len__(self) -> int:
        return len(self.relation)

    def __repr__(self) -> str:
        return repr(self.relation)

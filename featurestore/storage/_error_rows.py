"""Error rows: the rows an embedding job could not embed, stored as data (a kind and a message), not prose.

An error file (``errors-<run>-<n>.parquet``) holds the key column(s), ``kind`` (a short code: ``null``, ``empty``,
``non-string``, ``undecodable``, ``invalid-json``...), ``message`` (what a person reads), any extra scalar columns,
and the ``run_id`` that wrote it. Files written before this format hold one prose column, ``reason``
(``"<kind>: <message>"``); the errors view reads both, and shows ``kind``, ``message`` and ``reason`` for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from featurestore.errors import ValidationError
from featurestore.storage._format import RUN_ID, check_strings, to_table

KIND = "kind"
MESSAGE = "message"
REASON = "reason"  # older files' only column; in the view, derived as "<kind>: <message>"
COLUMNS = (KIND, MESSAGE)


def error_table(errors: Any, key: Sequence[str]) -> pa.Table:
    """Check rows for :meth:`Writer.record_errors` and return them as stored: key(s), kind, message, the rest.

    Keys may be null (a source line whose key could not be read); ``kind`` and ``message`` are string columns and
    ``kind`` is never null.
    """
    table = to_table(errors)
    clash = [k for k in key if k in (*COLUMNS, REASON)]
    if clash:
        raise ValidationError(f"Key column(s) {clash} clash with the error rows' own columns {[*COLUMNS, REASON]}.")
    missing = [c for c in [*key, *COLUMNS] if c not in table.column_names]
    if missing:
        raise ValidationError(
            f"Error rows need the key column(s) {list(key)}, {KIND!r} and {MESSAGE!r}; missing {missing}. "
            f"Columns: {table.column_names}"
        )
    if REASON in table.column_names:
        raise ValidationError(
            f"Error rows carry {KIND!r} and {MESSAGE!r}, not {REASON!r}: the errors view derives the reason "
            f"as '<kind>: <message>'."
        )
    check_strings(table, KIND, key, rows="error row(s)", what=" of the error rows")
    check_strings(table, MESSAGE, key, what=" of the error rows", allow_null=True)  # the kind alone may say enough
    if RUN_ID in table.column_names:  # the writer stamps its own
        table = table.drop_columns([RUN_ID])
    rest = [c for c in table.column_names if c not in (*key, *COLUMNS)]
    return table.select([*key, *COLUMNS, *rest])


def error_rows_sql(relation: str) -> str:
    """A SELECT over the rows of ``relation`` (error files read with ``union_by_name``) with ``kind``, ``message``
    and ``reason`` for every row, whichever format its file has; other columns pass through, ``run_id`` last.
    """
    # Pad with an empty relation of all three columns, so each exists whatever mix of files there is (a column
    # no file has would otherwise be an unknown name).
    padded = (f"SELECT * FROM {relation} UNION ALL BY NAME "
              f"SELECT NULL::VARCHAR AS {KIND}, NULL::VARCHAR AS {MESSAGE}, NULL::VARCHAR AS {REASON} WHERE false")
    # An old reason is "<kind>: <message>"; the kind never holds ': '.
    cut = f"strpos({REASON}, ': ')"
    old_kind = f"CASE WHEN {cut} > 0 THEN left({REASON}, {cut} - 1) ELSE {REASON} END"
    old_message = f"CASE WHEN {cut} > 0 THEN substr({REASON}, {cut} + 2) END"
    derived = (f"coalesce({KIND}, {old_kind}) AS __kind, coalesce({MESSAGE}, {old_message}) AS __message, "
               f"coalesce({REASON}, concat_ws(': ', {KIND}, {MESSAGE})) AS __reason")
    return (f"SELECT * EXCLUDE (__kind, __message, __reason, {RUN_ID}), __kind AS {KIND}, __message AS {MESSAGE}, "
            f"__reason AS {REASON}, {RUN_ID} FROM (SELECT * EXCLUDE ({KIND}, {MESSAGE}, {REASON}), {derived} "
            f"FROM ({padded}))")

"""Rows that cannot be embedded, as data: a short ``kind`` token and a ``message`` in prose.

A source reports what it finds while reading (a JSONL line that is not JSON, a number among texts) in two reserved
columns beside the row, never inside its values, so no real text can be mistaken for a report. The job adds what it
finds in the text itself (null, empty, undecodable bytes, a value of another type) and stores each bad row with its
keys, ``kind`` and ``message`` (``Writer.record_errors``; the errors view derives ``reason`` = ``kind: message``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pyarrow as pa

#: Column names embedding jobs keep for themselves; a source's key and text columns may not start with it.
RESERVED = "__featurestore_"
#: With ``batches(..., text=...)``, every batch ends with these: null, or why the source could not give that row's text.
ERROR_KIND, ERROR_MESSAGE = RESERVED + "error_kind", RESERVED + "error_message"

NULL, EMPTY, NON_STRING, UNDECODABLE, INVALID_JSON = "null", "empty", "non-string", "undecodable", "invalid-json"
KINDS = (NULL, EMPTY, NON_STRING, UNDECODABLE, INVALID_JSON)

_Rows = TypeVar("_Rows", pa.RecordBatch, pa.Table)


def non_string_message(type_name: str) -> str:
    """The message of a ``non-string`` error row: ``a int value, not text``."""
    return f"a {type_name} value, not text"


def with_error_columns(data: _Rows, kinds: Sequence[str | None] | None = None,
                       messages: Sequence[str | None] | None = None) -> _Rows:
    """``data`` (a record batch or table) with the two report columns appended: null where nothing was found."""
    if kinds is None or messages is None:
        kinds = messages = [None] * data.num_rows
    schema = data.schema.append(pa.field(ERROR_KIND, pa.string())).append(pa.field(ERROR_MESSAGE, pa.string()))
    arrays = [*data.columns, pa.array(kinds, pa.string()), pa.array(messages, pa.string())]
    return type(data).from_arrays(arrays, schema=schema)

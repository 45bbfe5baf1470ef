"""Which rows of a source batch a job encodes: bad rows are set aside as error rows, rows already held are skipped.

A row whose text cannot be embedded becomes an error row: its keys, a ``kind`` token and a ``message`` (see
``sources._errors``). A row that a feature set already holds with the same content hash (text and encoder spec) is
skipped for that set; a row every set holds is not encoded at all. That is how a rerun resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore import _format as fmt
from featurestore._error_rows import COLUMNS as ERROR_COLUMNS

from .sources._errors import (EMPTY, ERROR_KIND, ERROR_MESSAGE, NON_STRING, NULL, RESERVED, UNDECODABLE,
                              non_string_message)

if TYPE_CHECKING:
    from ._sinks import Sink


def hash_column(sink: int) -> str:
    """The content hash of each row under sink ``sink``'s spec, carried beside the keys through chunking."""
    return f"{RESERVED}hash_{sink}"


def need_column(sink: int) -> str:
    """Whether sink ``sink`` lacks the row (another sink may need it encoded while this one holds it)."""
    return f"{RESERVED}need_{sink}"


class Screen:
    """Screens a job's source batches; keeps the error rows and their count by kind."""

    def __init__(self, sinks: Sequence[Sink], keys: list[str], text: str, carry: Sequence[str] = ()) -> None:
        self.sinks, self.keys, self.text = sinks, keys, text
        self.carry = list(carry)  # source columns kept beside the vectors (``keep``), passed through as they are
        self.error_counts: dict[str, int] = {}
        self._errors: list[pa.Table] = []

    def __call__(self, table: pa.Table) -> tuple[pa.Table, int]:
        """(rows to encode, rows settled here: set aside or held by every sink).

        A batch from ``TableSource.batches(..., text=...)`` in; out: the keys, the carried (kept) columns, then a
        content hash and a "needs it" flag per sink (reserved names), then the text as strings.
        """
        texts, kinds, messages = classify_texts(table.column(self.text), table.column(ERROR_KIND),
                                                table.column(ERROR_MESSAGE))
        bad = np.flatnonzero(kinds != None)  # noqa: E711 - object array comparison
        if len(bad):
            errors = table.select(self.keys).take(pa.array(bad))
            for name, values in zip(ERROR_COLUMNS, (kinds[bad], messages[bad])):
                errors = errors.append_column(name, pa.array(values.tolist(), pa.string()))
            self._errors.append(errors)
            for kind in kinds[bad].tolist():
                self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        good = np.flatnonzero(kinds == None)  # noqa: E711
        table = table.select([*self.keys, *self.carry]).take(pa.array(good))
        good_texts = [texts[i] for i in good.tolist()]
        tokens = fmt.key_tokens(table, self.keys).to_pylist() if any(s.committed for s in self.sinks) else None
        needed = np.zeros(len(good_texts), dtype=bool)
        for i, sink in enumerate(self.sinks):
            hashes = fmt.text_hashes(good_texts, sink.fingerprint)
            need = np.ones(len(good_texts), dtype=bool)
            if sink.committed and tokens is not None:
                need = fmt.changed_rows(tokens, hashes.to_pylist(), sink.committed)
                sink.writer.stats["rows_skipped"] += int((~need).sum())
            needed |= need
            table = table.append_column(hash_column(i), hashes).append_column(need_column(i), pa.array(need))
        table = table.append_column(self.text, pa.array(good_texts, pa.string()))
        return table.filter(pa.array(needed)), len(bad) + int((~needed).sum())

    def errors(self) -> pa.Table | None:
        """Every error row so far: the keys, ``kind`` and ``message``; None when there were none."""
        return pa.concat_tables(self._errors) if self._errors else None


def classify_texts(column: pa.ChunkedArray, kinds: pa.ChunkedArray,
                   messages: pa.ChunkedArray) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Texts as Python strings, and each row's error kind and message (None when the row is fine).

    ``kinds`` and ``messages`` are what the source already found (a line it could not read, a value of another
    type among texts); those rows keep it.
    """
    typ = column.type
    values = column.to_pylist()
    kinds_out = np.array(kinds.to_pylist(), dtype=object)
    messages_out = np.array(messages.to_pylist(), dtype=object)
    is_binary = pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    for i, v in enumerate(values):
        if kinds_out[i] is not None:
            continue
        if v is None:
            kinds_out[i], messages_out[i] = NULL, "the text is null"
            continue
        if is_binary:
            try:
                v = values[i] = v.decode("utf-8")
            except UnicodeDecodeError as exc:
                kinds_out[i], messages_out[i] = UNDECODABLE, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                continue
        elif not is_text:
            kinds_out[i], messages_out[i] = NON_STRING, non_string_message(str(typ))
            continue
        if not v.strip():
            kinds_out[i], messages_out[i] = EMPTY, "the text is empty or only whitespace"
    return values, kinds_out, messages_out

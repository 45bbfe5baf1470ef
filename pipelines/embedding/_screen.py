"""Which rows of a source batch a job encodes: bad rows are set aside as error rows, rows already held are skipped.

A row whose text cannot be embedded becomes an error row: its keys, a ``kind`` token and a ``message`` (see
``sources._errors``). A row that a feature set already holds with the same content hash (text and encoder spec) is
skipped for that set; a row every set holds is not encoded at all. That is how a rerun resumes. What a set holds comes
from ``Sink.held``: for a text job, a stream of committed hashes by source row number (``_source_keys``), so the
screen keeps nothing per row; error rows wait here until the job stores them (``take_errors``), a partition's worth
at most.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.storage import ERROR_COLUMNS, text_hashes
from pipelines.sources._errors import (
    EMPTY,
    ERROR_KIND,
    ERROR_MESSAGE,
    NON_STRING,
    NULL,
    RESERVED,
    UNDECODABLE,
    non_string_message,
)

if TYPE_CHECKING:
    from pipelines.embedding._sinks import Sink


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
        self.error_rows = 0  # error rows waiting in ``_errors``
        self._lock = threading.Lock()  # the screen runs in the encoder's reading thread; the job takes errors

    def __call__(self, table: pa.Table, start: int | None = None) -> tuple[pa.Table, int]:
        """(rows to encode, rows settled here: set aside or held by every sink).

        A batch from ``TableSource.batches(..., text=...)`` in; out: the keys, the carried (kept) columns, then a
        content hash and a "needs it" flag per sink (reserved names), then the text as strings. ``start``: the
        batch's first row number in the source, which a sink's committed-hash stream is read by.
        """
        texts, kinds, messages = classify_texts(table.column(self.text), table.column(ERROR_KIND),
                                                table.column(ERROR_MESSAGE))
        bad = self.set_aside(table, kinds, messages)
        good = np.flatnonzero(kinds == None)  # noqa: E711
        table = table.select([*self.keys, *self.carry]).take(pa.array(good))
        good_texts = [texts[i] for i in good.tolist()]
        rows = None if start is None else good + start
        table, needed = self.mark(table, [text_hashes(good_texts, sink.fingerprint) for sink in self.sinks], rows)
        table = table.append_column(self.text, pa.array(good_texts, pa.string()))
        return table.filter(pa.array(needed)), bad + int((~needed).sum())

    def set_aside(self, table: pa.Table, kinds: np.ndarray, messages: np.ndarray) -> int:
        """Keep the rows of ``table`` whose kind is not None as error rows (keys, kind, message); returns how many."""
        bad = np.flatnonzero(kinds != None)  # noqa: E711 - object array comparison
        if len(bad):
            errors = table.select(self.keys).take(pa.array(bad))
            for name, values in zip(ERROR_COLUMNS, (kinds[bad], messages[bad])):
                errors = errors.append_column(name, pa.array(values.tolist(), pa.string()))
            with self._lock:
                self._errors.append(errors)
                self.error_rows += errors.num_rows
                for kind in kinds[bad].tolist():
                    self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        return len(bad)

    def mark(self, table: pa.Table, hashes: Sequence[pa.Array],
             rows: np.ndarray | None = None) -> tuple[pa.Table, np.ndarray]:
        """``table`` (good rows) with each sink's content hash and "needs it" flag appended, and which rows any sink
        needs. ``hashes[i]`` are the rows' content hashes under sink ``i``'s spec; rows a sink holds count as skipped.
        ``rows``: the rows' numbers in the source, for sinks that look committed hashes up by row (see ``Sink.held``).
        """
        needed = np.zeros(table.num_rows, dtype=bool)
        for i, (sink, sink_hashes) in enumerate(zip(self.sinks, hashes)):
            need = np.ones(table.num_rows, dtype=bool)
            held = sink.held(table, self.keys, rows)
            if held is not None:
                need = held != np.asarray(sink_hashes.to_pylist(), dtype=object)
                sink.writer.stats["rows_skipped"] += int((~need).sum())
                if not sink.updates and (need & (held != None)).any():  # noqa: E711 - object array comparison
                    sink.updates = True  # a held key gets new content: the version's views keep the newest row
            needed |= need
            table = table.append_column(hash_column(i), sink_hashes).append_column(need_column(i), pa.array(need))
        return table, needed

    def errors(self) -> pa.Table | None:
        """Every error row not yet taken: the keys, ``kind`` and ``message``; None when there were none."""
        with self._lock:
            return pa.concat_tables(self._errors) if self._errors else None

    def take_errors(self) -> pa.Table | None:
        """The error rows so far, forgotten here: a job stores them in batches so they never pile up in memory."""
        with self._lock:
            errors, self._errors, self.error_rows = self._errors, [], 0
        return pa.concat_tables(errors) if errors else None


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

    def check(i: int, v: Any) -> tuple[str, str] | None:
        if is_binary:
            try:
                v = values[i] = v.decode("utf-8")
            except UnicodeDecodeError as exc:
                return UNDECODABLE, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        elif not is_text:
            return NON_STRING, non_string_message(str(typ))
        return None if v.strip() else (EMPTY, "the text is empty or only whitespace")

    settle_rows(values, kinds_out, messages_out, "the text is null", check)
    return values, kinds_out, messages_out


def settle_rows(values: Sequence[Any], kinds: np.ndarray, messages: np.ndarray, null_message: str,
                check: Callable[[int, Any], tuple[str, str] | None]) -> None:
    """Give each row the source did not flag its error kind and message, in place (None stays: the row is fine).

    A null value is kind ``null`` with ``null_message``; ``check(i, value)`` returns ``(kind, message)`` for any other
    error of row ``i``. The one loop every screen (texts, images) runs, so a flagged row is never looked at again.
    """
    for i, v in enumerate(values):
        if kinds[i] is not None:
            continue
        found = (NULL, null_message) if v is None else check(i, v)
        if found is not None:
            kinds[i], messages[i] = found

"""CSV and JSONL read row by row into batches, where a value that is not what its column holds becomes an error row.

CSV/TSV goes through pyarrow's streaming CSV reader, one file at a time, with every column asked for read as text: a
key ``007`` stays ``"007"`` (``key_types={"id": "int64"}`` reads it as a number instead), and an empty key cell is
null. A row bigger than a read block (a 5 MB review in one cell) makes the reader start that file again with a
bigger block rather than fail. JSONL is read line by line with the json module, so one row with a number where text
belongs, or a line that is not valid UTF-8 or not valid JSON, becomes an error row instead of failing the job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.errors import ValidationError
from pipelines.sources._errors import (
    INVALID_JSON,
    NON_STRING,
    RESERVED,
    UNDECODABLE,
    non_string_message,
    with_error_columns,
)
from pipelines.sources._files import RemoteFile, binary_lines

#: CSV read block sizes, tried in turn when a row does not fit in a block (pyarrow's default is the first).
CSV_BLOCK_SIZES = (1 << 20, 16 << 20, 256 << 20)


# A mixed column on its way out of ``to_table``: the texts, and beside them the type name of each other value.
TEXT_FIELD, NON_TEXT_FIELD = RESERVED + "text", RESERVED + "non_text_type"
MIXED = pa.struct([(TEXT_FIELD, pa.string()), (NON_TEXT_FIELD, pa.string())])


def split_non_strings(values: list[Any]) -> pa.StructArray:
    """Strings and nulls stay; any other value becomes a null text, its type name kept beside it."""
    names = [None if v is None or isinstance(v, str) else type(v).__name__ for v in values]
    texts = [v if n is None else None for v, n in zip(values, names)]
    return pa.StructArray.from_arrays([pa.array(texts, pa.string()), pa.array(names, pa.string())],
                                      fields=list(MIXED))


def non_string_errors(names: Sequence[str | None]) -> tuple[list[str | None], list[str | None]]:
    """The report columns (kinds, messages) for a text column's values that are not text."""
    return ([None if n is None else NON_STRING for n in names],
            [None if n is None else non_string_message(n) for n in names])


def mixed_types_error(column: str, types: set[str], where: str) -> ValidationError:
    return ValidationError(f"Column {column!r} of {where} holds values of several types "
                           f"({', '.join(sorted(types))}); only the text column may (its values that are not text "
                           f"become error rows). Give every {column!r} value the same type.")


# -- CSV ----------------------------------------------------------------------------------------------------------


def _csv_reader(path: Path | RemoteFile, block_size: int, types: Mapping[str, pa.DataType] | None = None):
    import pyarrow.csv as csv

    convert = csv.ConvertOptions()
    if types is not None:
        # Only "" is null (not pyarrow's NA/NULL/None/nan list: those are real keys); strings keep "" (see below).
        convert = csv.ConvertOptions(column_types=dict(types), include_columns=list(types), null_values=[""],
                                     strings_can_be_null=False)
    parse = csv.ParseOptions(newlines_in_values=True, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    stream = path.open_stream() if isinstance(path, RemoteFile) else path
    return csv.open_csv(stream, read_options=csv.ReadOptions(block_size=block_size), parse_options=parse,
                        convert_options=convert)


def _too_big(exc: Exception) -> bool:
    return isinstance(exc, pa.ArrowInvalid) and "straddl" in str(exc)


def _too_big_error(path: Path | RemoteFile) -> ValidationError:
    return ValidationError(
        f"Cannot read {str(path)!r}: a CSV row is larger than {CSV_BLOCK_SIZES[-1] / 2**20:g} MiB (the largest read "
        "block tried), or a quote is left open so the rest of the file reads as one value. Close the quote, split "
        "that text, or convert the file to Parquet or JSONL, which have no such limit."
    )


def csv_header(path: Path | RemoteFile) -> list[str]:
    for block_size in CSV_BLOCK_SIZES:
        try:
            return _csv_reader(path, block_size).schema.names
        except pa.ArrowException as exc:
            if not _too_big(exc):
                raise ValidationError(f"Cannot read {str(path)!r} as CSV: {exc}") from None
    raise _too_big_error(path)


def csv_file_batches(path: Path | RemoteFile, types: Mapping[str, pa.DataType], empty_is_null: Sequence[str],
                      batch_rows: int) -> Iterator[pa.RecordBatch]:
    """One file's rows in batches of at most ``batch_rows``.

    A row bigger than the read block fails inside pyarrow ("straddling object straddles two block boundaries"):
    the file is then read again with a bigger block, skipping the rows already yielded.
    """
    import pyarrow.compute as pc

    done = 0
    for block_size in CSV_BLOCK_SIZES:
        skip = done
        try:
            for batch in _csv_reader(path, block_size, types):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch, skip = batch.slice(skip), 0
                for name in empty_is_null:  # an empty key cell is a missing key, as it was when keys were numbers
                    i = batch.schema.get_field_index(name)
                    column = batch.column(i)
                    empty = pc.equal(column, "")
                    if pc.any(empty).as_py():
                        batch = batch.set_column(i, name, pc.if_else(empty, pa.scalar(None, column.type), column))
                for start in range(0, batch.num_rows, batch_rows):
                    piece = batch.slice(start, batch_rows)
                    yield piece
                    done += piece.num_rows
            return
        except pa.ArrowException as exc:
            if not _too_big(exc):
                raise ValidationError(f"Cannot read {str(path)!r} as CSV: {exc}") from None
    raise _too_big_error(path)


# -- JSONL --------------------------------------------------------------------------------------------------------


def count_lines(path: Path | RemoteFile) -> int:
    return sum(1 for line in binary_lines(path) if line.strip())


def jsonl_rows(path: Path | RemoteFile, label: str, limit: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, JSON object or BadLine) for each non-blank line of the first ``limit`` lines."""
    for number, raw in enumerate(binary_lines(path), 1):
        if limit is not None and number > limit:
            return
        if not raw.strip():
            continue
        yield number, _parse_line(raw, f"{label}:{number}", first=number == 1)


def _parse_line(raw: bytes, where: str, *, first: bool) -> Any:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine(UNDECODABLE, where, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        raw.decode("utf-8", "replace"))
    if first:
        line = line.removeprefix("\ufeff")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        message = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg  # "Invalid control character at"
        return BadLine(INVALID_JSON, where, f"not valid JSON ({message} at column {exc.colno})", line)
    if not isinstance(row, dict):
        return BadLine(INVALID_JSON, where, f"a JSON {type(row).__name__}, not an object", line)
    return row


# A JSON string or number, the values a key can have.
_JSON_SCALAR = r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?'


class BadLine:
    """A JSONL line that cannot be read: why, where, and its text (bad bytes replaced) to recover keys from."""

    def __init__(self, kind: str, where: str, detail: str, text: str) -> None:
        self.kind, self.where, self.detail, self.text = kind, where, detail, text

    @property
    def message(self) -> str:
        """What the error row says besides its kind: ``reviews.jsonl:7: not valid JSON (...)``."""
        return f"{self.where}: {self.detail}"

    def recover(self, column: str) -> Any:
        """The line's value of ``column`` if it can be read for certain despite the damage, else None."""
        try:
            row = json.loads(self.text)
        except ValueError:
            name = re.escape(json.dumps(column)[1:-1])
            found = re.findall(rf'"{name}"\s*:\s*({_JSON_SCALAR})\s*[,}}]', self.text)
            if len(found) != 1:
                return None
            try:
                value = json.loads(found[0])
            except ValueError:
                return None
        else:
            value = row.get(column) if isinstance(row, dict) else None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        if isinstance(value, str) and "\ufffd" in value:  # the bad bytes are in this value itself
            return None
        return value


class JsonlBuffer:
    """JSONL rows gathered into batches, with what was wrong with each row when ``text`` is given."""

    def __init__(self, columns: list[str], text: str | None, where: str) -> None:
        self.columns, self.text, self.where = columns, text, where
        self.types: dict[str, pa.DataType] = {}  # each column's type in the first batch where it was not all null
        self._reset()

    def _reset(self) -> None:
        self.values: dict[str, list[Any]] = {c: [] for c in self.columns}
        self.kinds: list[str | None] = []
        self.messages: list[str | None] = []
        self.rows = 0

    def add(self, row: dict[str, Any], kind: str | None = None, message: str | None = None) -> None:
        for c in self.columns:
            self.values[c].append(row.get(c))
        self.kinds.append(kind)
        self.messages.append(message)
        self.rows += 1

    def flush(self) -> pa.RecordBatch:
        """The rows so far as one batch; a column that is all null here takes the type it had in earlier batches, so
        batches concatenate."""
        arrays = []
        for c in self.columns:
            try:
                array = pa.array(self.values[c])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                if c != self.text:
                    types = {type(v).__name__ for v in self.values[c] if v is not None}
                    raise mixed_types_error(c, types, self.where) from None
                mixed = split_non_strings(self.values[c])
                array = mixed.field(TEXT_FIELD)
                for i, (kind, message) in enumerate(zip(*non_string_errors(mixed.field(NON_TEXT_FIELD).to_pylist()))):
                    if kind is not None:
                        self.kinds[i], self.messages[i] = kind, message
            if pa.types.is_null(array.type):
                if c in self.types:
                    array = array.cast(self.types[c])
            else:
                self.types.setdefault(c, array.type)
            arrays.append(array)
        batch = pa.RecordBatch.from_arrays(arrays, names=self.columns)
        if self.text is not None:
            batch = with_error_columns(batch, self.kinds, self.messages)
        self._reset()
        return batch

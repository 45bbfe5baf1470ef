"""Table sources read in streaming batches: the whole file is never in memory.

Parquet is streamed row group by row group, page by page (``parquet_batches``). CSV/TSV goes through pyarrow's
streaming CSV reader, one file at a time, with every column asked for read as text: a key ``007`` stays ``"007"``
(``key_types={"id": "int64"}`` reads it as a number instead), and an empty key cell is null. A row bigger than a read
block (a 5 MB review in one cell) makes the reader start that file again with a bigger block rather than fail. JSONL
is read line by line with the json module, so one row with a number where text belongs, or a line that is not valid
UTF-8 or not valid JSON, becomes an error row instead of failing the job. A path may be a URI on any filesystem
pyarrow or fsspec reads (``s3://``, ``gs://``, ``memory://``...): such files are :class:`RemoteFile` objects, which the
readers take wherever they take a ``Path``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import ValidationError
from featurestore.storage import to_table
from pipelines.sources._errors import (
    with_error_columns,
)
from pipelines.sources._files import FORMATS, RemoteFile, listed, locate, parquet_batches, parquet_file
from pipelines.sources._formats import (
    MIXED,
    NON_TEXT_FIELD,
    TEXT_FIELD,
    BadLine,
    JsonlBuffer,
    count_lines,
    csv_file_batches,
    csv_header,
    jsonl_rows,
    mixed_types_error,
    non_string_errors,
    split_non_strings,
)


class TableSource:
    """A table to embed: ``batches(columns)`` yields Arrow record batches; ``count_rows()`` sizes the progress bar.

    ``key_types`` (CSV/TSV only) maps key columns to the Arrow type to read them as, e.g. ``{"id": "int64"}``;
    without it every CSV column is read as a string, so keys such as ``007`` or ``0x1`` keep their spelling.
    Pass the source to ``pipelines.embed`` as ``TableSource("reviews.csv", key_types={"id": "int64"})``, or set
    ``key_types`` in a job spec.
    """

    def __init__(self, source: Any, *, format: str | None = None, batch_rows: int = 8192,
                 key_types: Mapping[str, Any] | None = None) -> None:
        self.batch_rows = batch_rows
        self.key_types = dict(key_types or {})
        self._table: pa.Table | None = None
        self._mixed: dict[str, pa.ChunkedArray] = {}  # see _to_table
        self.paths: list[Path | RemoteFile] = []
        self._root: Path | RemoteFile | None = None
        if isinstance(source, (str, os.PathLike)):
            path = locate(source)
            if not path.exists():
                raise ValidationError(f"Source {str(path)!r} does not exist.")
            files = listed(path) if path.is_dir() else [path]
            if not files:
                raise ValidationError(f"No .parquet, .csv or .jsonl files under {str(path)!r}.")
            kinds = {format or FORMATS.get(p.suffix.lower()) for p in files}
            if None in kinds:
                raise ValidationError(f"Cannot tell the format of {str(files[0])!r}: pass format='parquet'|'csv'|'jsonl'.")
            if len(kinds) > 1:
                raise ValidationError(f"{str(path)!r} mixes formats {sorted(kinds)}; point at one kind of file.")
            self.format = kinds.pop()
            self.paths = files
            self._root = path if path.is_dir() else path.parent
            self.description = str(path)
        else:
            self._table, self._mixed = _to_table(source)
            self.format = "table"
            self.description = f"<{type(source).__name__} with {self._table.num_rows} rows>"
        self._arrow_key_types = _arrow_types(self.key_types)
        if self.key_types and self.format != "csv":
            raise ValidationError(f"The 'key_types' option applies to CSV/TSV files, whose cells are all text; "
                                  f"{self.description} is {self.format}, which keeps its own column types.")

    # -- facts ------------------------------------------------------------------------------------------------
    def column_names(self) -> list[str]:
        if self._table is not None:
            return self._table.column_names
        if self.format == "jsonl":
            names: dict[str, None] = {}
            for _, row in jsonl_rows(self.paths[0], self._label(self.paths[0]), limit=100):
                if isinstance(row, dict):
                    names.update(dict.fromkeys(row))
            return list(names)
        if self.format == "csv":
            return csv_header(self.paths[0])
        return parquet_file(self.paths[0]).schema_arrow.names

    def count_rows(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        if self.format == "jsonl":
            return sum(count_lines(p) for p in self.paths)
        if self.format == "csv":
            total = 0
            for p in self.paths:
                first = csv_header(p)[0]  # one column, as bytes: nothing to convert or check
                total += sum(b.num_rows for b in csv_file_batches(p, {first: pa.binary()}, (), 1 << 30))
            return total
        return sum(parquet_file(p).metadata.num_rows for p in self.paths)

    def fingerprint(self) -> str:
        """Paths, sizes and modification times: enough to tell a changed source in provenance."""
        h = hashlib.blake2b(digest_size=8)
        if self._table is not None:
            h.update(str(self._table.schema).encode() + str(self._table.num_rows).encode())
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    @property
    def local_root(self) -> Path | None:
        """The folder the source's files are in, when on local disk (relative image paths resolve against it)."""
        return self._root if isinstance(self._root, Path) else None

    def check_columns(self, needed: Sequence[str]) -> None:
        names = self.column_names()
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValidationError(f"Source {self.description} has no column(s) {missing}. Columns: {names}")
        if self.format == "parquet" and len(self.paths) > 1:
            self._check_parquet_files_agree(list(needed))

    def _check_parquet_files_agree(self, columns: list[str]) -> None:
        """Every file of a folder has the columns, with the first file's types: checked on the footers, before any work."""
        first: tuple[Path, pa.Schema] | None = None
        for path in self.paths:
            schema = parquet_file(path).schema_arrow
            absent = [c for c in columns if c not in schema.names]
            if absent:
                raise ValidationError(f"{str(path)!r} has no column(s) {absent}. Columns: {schema.names}")
            wanted = pa.schema([schema.field(c) for c in columns])
            if first is None:
                first = (path, wanted)
            elif not wanted.equals(first[1]):
                diff = [f"{a.name}: {a.type} in {path.name}, {b.type} in {first[0].name}"
                        for a, b in zip(wanted, first[1]) if a.type != b.type]
                raise ValidationError(f"The files of {self.description} disagree on column types ({'; '.join(diff)}). "
                                      "All files of one source must have the same types.")

    # -- reading ----------------------------------------------------------------------------------------------
    def batches(self, columns: Sequence[str], *, binary: Sequence[str] = (),
                text: str | None = None) -> Iterator[pa.RecordBatch]:
        """Yield batches of ``columns``.

        From CSV, columns in ``binary`` come as raw bytes (so bad UTF-8 is per row), columns in ``key_types`` as
        those types, and the others as strings, an empty cell being null except in ``text`` and ``binary`` columns.
        ``text`` names the column embedded. With it, every batch ends with two more columns, ``ERROR_KIND`` and
        ``ERROR_MESSAGE`` (see ``_errors``): null, or why the source could not give that row's text. A JSONL line that
        cannot be read becomes such a row (``invalid-json``, ``reviews.jsonl:7: not valid JSON ...``), its text null
        and its other columns what could be recovered from the line, else null; so does a value of another type
        among the texts (``non-string``, ``a int value, not text``). Without ``text`` an unreadable line raises
        ValidationError, and in any column but ``text`` values of several types do.
        """
        columns = list(columns)
        if self._table is not None:
            yield from self._table_batches(columns, text=text)
        elif self.format == "jsonl":
            yield from self._jsonl_batches(columns, text=text, bad="row" if text is not None else "raise")
        else:
            for batch in self._file_batches(columns, binary=binary, text=text):
                yield batch if text is None else with_error_columns(batch)

    def read_columns(self, columns: Sequence[str]) -> pa.Table:
        """A few (small) columns of every row, e.g. the keys for the up-front null/duplicate check.

        A JSONL line that cannot be read counts here only when ``columns`` could be recovered from it (the job
        records it as an error row).
        """
        columns = list(columns)
        if self.format == "jsonl":
            batches = list(self._jsonl_batches(columns, text=None, bad="recovered"))
        else:
            batches = list(self.batches(columns))
        return pa.Table.from_batches(batches) if batches else pa.table({c: pa.array([], pa.string()) for c in columns})

    def _file_batches(self, columns: list[str], *, binary: Sequence[str],
                      text: str | None) -> Iterator[pa.RecordBatch]:
        if self.format == "csv":
            types = {c: pa.string() for c in columns}
            types.update({c: t for c, t in self._arrow_key_types.items() if c in types})
            types.update({c: pa.binary() for c in binary})
            empty_is_null = [c for c in columns if c != text and types[c] == pa.string()]
            for path in self.paths:
                yield from csv_file_batches(path, types, empty_is_null, self.batch_rows)
        else:  # file by file, so an unreadable file is named
            for path in self.paths:
                try:
                    yield from parquet_batches(path, columns, self.batch_rows)
                except pa.ArrowException as exc:
                    raise ValidationError(f"Cannot read {str(path)!r} as Parquet: {exc}") from None

    def _table_batches(self, columns: list[str], *, text: str | None) -> Iterator[pa.RecordBatch]:
        for c in columns:
            if c in self._mixed and c != text:
                types = set(self._mixed[c].drop_null().to_pylist())
                if self._table.column(c).null_count < self._table.num_rows:
                    types.add("str")
                raise mixed_types_error(c, types, self.description)
        table = self._table.select(columns)
        if text is not None:
            names = self._mixed[text].to_pylist() if text in self._mixed else [None] * table.num_rows
            table = with_error_columns(table, *non_string_errors(names))
        yield from table.to_batches(max_chunksize=self.batch_rows)

    def _label(self, path: Path | RemoteFile) -> str:
        """How error reasons name a file: its path inside the source folder, or its name."""
        return path.relative_to(self._root).as_posix() if self._root is not None else path.name

    def _jsonl_batches(self, columns: list[str], *, text: str | None, bad: str) -> Iterator[pa.RecordBatch]:
        """Rows of JSON objects, with the report columns when ``text`` is given (see ``batches``).

        ``bad`` says what a line that cannot be read becomes: "row" (an error row, see ``batches``), "recovered"
        (a row only if every column could be recovered, else skipped) or "raise".
        """
        buf = JsonlBuffer(columns, text, self.description)
        for path in self.paths:
            for _, row in jsonl_rows(path, self._label(path)):
                if isinstance(row, BadLine):
                    if bad == "raise":
                        raise ValidationError(f"Cannot read {row.where}: {row.detail}. Fix or drop that line.")
                    values = {c: row.recover(c) for c in columns if c != text}
                    if bad == "recovered" and any(v is None for v in values.values()):
                        continue
                    buf.add(values, row.kind, row.message)
                else:
                    buf.add(row)
                if buf.rows >= self.batch_rows:
                    yield buf.flush()
        if buf.rows:
            yield buf.flush()


def open_source(source: Any, **options: Any) -> TableSource:
    return source if isinstance(source, TableSource) else TableSource(source, **options)


def _arrow_types(key_types: Mapping[str, Any]) -> dict[str, pa.DataType]:
    out = {}
    for name, typ in key_types.items():
        if isinstance(typ, str):
            try:
                typ = pa.type_for_alias(typ)
            except (ValueError, KeyError):
                typ = None
        if not isinstance(typ, pa.DataType):
            raise ValidationError(f"The 'key_types' option of TableSource must map column names to Arrow types such "
                                  f"as 'int64', 'string' or pa.int64(). Got {dict(key_types)!r} instead.")
        out[str(name)] = typ
    return out


def _to_table(data: Any) -> tuple[pa.Table, dict[str, pa.ChunkedArray]]:
    """An in-memory source as Arrow, and for each DataFrame column that mixes texts with other values, the type name
    of each value that is not text (null for texts and nulls); such a column keeps its texts, the rest null."""
    is_pandas = type(data).__module__.startswith("pandas")
    try:
        table = to_table(data, mixed=split_non_strings)
    except pa.ArrowException:
        raise
    except TypeError:  # not a table at all
        raise ValidationError(f"Cannot read a source of type {type(data).__name__}: pass a path, an Arrow table or "
                              "a DataFrame.") from None
    if is_pandas:  # pandas' own schema metadata (index, dtypes) describes the frame, not the rows a job writes
        table = table.replace_schema_metadata(None)
    mixed = {}
    for i, f in enumerate(table.schema):
        if f.type == MIXED:
            column = table.column(i)
            mixed[f.name] = pc.struct_field(column, NON_TEXT_FIELD)
            table = table.set_column(i, f.name, pc.struct_field(column, TEXT_FIELD))
    return table, mixed

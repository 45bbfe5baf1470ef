"""Table sources read in streaming batches: the whole file is never in memory.

Parquet is streamed row group by row group, page by page (``_parquet_batches``). CSV/TSV goes through pyarrow's
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
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore.storage import _format as fmt
from featurestore.errors import ValidationError

from pipelines.sources._errors import INVALID_JSON, NON_STRING, RESERVED, UNDECODABLE, non_string_message, with_error_columns

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
#: CSV read block sizes, tried in turn when a row does not fit in a block (pyarrow's default is the first).
CSV_BLOCK_SIZES = (1 << 20, 16 << 20, 256 << 20)


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
            path = _locate(source)
            if not path.exists():
                raise ValidationError(f"Source {str(path)!r} does not exist.")
            files = _listed(path) if path.is_dir() else [path]
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
            for _, row in _jsonl_rows(self.paths[0], self._label(self.paths[0]), limit=100):
                if isinstance(row, dict):
                    names.update(dict.fromkeys(row))
            return list(names)
        if self.format == "csv":
            return _csv_header(self.paths[0])
        return _parquet_file(self.paths[0]).schema_arrow.names

    def count_rows(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        if self.format == "jsonl":
            return sum(_count_lines(p) for p in self.paths)
        if self.format == "csv":
            total = 0
            for p in self.paths:
                first = _csv_header(p)[0]  # one column, as bytes: nothing to convert or check
                total += sum(b.num_rows for b in _csv_file_batches(p, {first: pa.binary()}, (), 1 << 30))
            return total
        return sum(_parquet_file(p).metadata.num_rows for p in self.paths)

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
            schema = _parquet_file(path).schema_arrow
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
                yield from _csv_file_batches(path, types, empty_is_null, self.batch_rows)
        else:  # file by file, so an unreadable file is named
            for path in self.paths:
                try:
                    yield from _parquet_batches(path, columns, self.batch_rows)
                except pa.ArrowException as exc:
                    raise ValidationError(f"Cannot read {str(path)!r} as Parquet: {exc}") from None

    def _table_batches(self, columns: list[str], *, text: str | None) -> Iterator[pa.RecordBatch]:
        for c in columns:
            if c in self._mixed and c != text:
                types = set(self._mixed[c].drop_null().to_pylist())
                if self._table.column(c).null_count < self._table.num_rows:
                    types.add("str")
                raise _mixed_types_error(c, types, self.description)
        table = self._table.select(columns)
        if text is not None:
            names = self._mixed[text].to_pylist() if text in self._mixed else [None] * table.num_rows
            table = with_error_columns(table, *_non_string_errors(names))
        yield from table.to_batches(max_chunksize=self.batch_rows)

    def _label(self, path: Path | RemoteFile) -> str:
        """How error reasons name a file: its path inside the source folder, or its name."""
        return path.relative_to(self._root).as_posix() if self._root is not None else path.name

    def _jsonl_batches(self, columns: list[str], *, text: str | None, bad: str) -> Iterator[pa.RecordBatch]:
        """Rows of JSON objects, with the report columns when ``text`` is given (see ``batches``).

        ``bad`` says what a line that cannot be read becomes: "row" (an error row, see ``batches``), "recovered"
        (a row only if every column could be recovered, else skipped) or "raise".
        """
        buf = _JsonlBuffer(columns, text, self.description)
        for path in self.paths:
            for _, row in _jsonl_rows(path, self._label(path)):
                if isinstance(row, _BadLine):
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


class RemoteFile:
    """A file or folder on a pyarrow filesystem (``s3://``, ``gs://``, ``hdfs://``, or any fsspec protocol), with
    the few ``pathlib.Path`` methods a source uses, so reading code takes either."""

    def __init__(self, filesystem: Any, path: str, uri: str, info: Any = None) -> None:
        self.filesystem, self.path, self.uri = filesystem, path.rstrip("/") or "/", uri
        self._known = info  # a FileInfo the folder listing already returned: no second round trip for it

    def __str__(self) -> str:
        return self.uri

    def __lt__(self, other: "RemoteFile") -> bool:
        return self.path < other.path

    def _info(self) -> Any:
        if self._known is None:
            self._known = self.filesystem.get_file_info(self.path)
        return self._known

    def exists(self) -> bool:
        from pyarrow import fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        from pyarrow import fs as pafs

        return self._info().type == pafs.FileType.Directory

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]

    @property
    def parent(self) -> "RemoteFile":
        head = self.path.rsplit("/", 1)[0]
        return RemoteFile(self.filesystem, head, self.uri[: len(self.uri) - len(self.name)].rstrip("/"))

    def child(self, info: Any) -> "RemoteFile":
        """The file ``info`` (a FileInfo from listing this folder) names."""
        relative = info.path[len(self.path):].lstrip("/")
        return RemoteFile(self.filesystem, info.path, f"{self.uri.rstrip('/')}/{relative}", info)

    def relative_to(self, root: "RemoteFile") -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(root.path)

    def resolve(self) -> str:
        return self.uri

    def stat(self) -> SimpleNamespace:
        """Size and modification time (None where the filesystem does not keep one), for the fingerprint."""
        info = self._info()
        return SimpleNamespace(st_size=info.size, st_mtime_ns=info.mtime_ns)

    def open_input(self) -> Any:
        """A random-access file (Parquet needs seeks)."""
        return self.filesystem.open_input_file(self.path)

    def open_stream(self) -> Any:
        return self.filesystem.open_input_stream(self.path)


def _locate(source: str | os.PathLike[str]) -> Path | RemoteFile:
    """A local path (a ``file://`` URI too), or a :class:`RemoteFile` for a URI on another filesystem: pyarrow's own
    (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``), else any protocol fsspec knows (``memory://``, ``az://``...)."""
    text = str(source)
    if "://" not in text:
        return Path(text).expanduser()
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError) as exc:
        filesystem, path = _fsspec_filesystem(text, exc)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    return RemoteFile(filesystem, path, text)


def _fsspec_filesystem(uri: str, arrow_error: Exception) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ValidationError(f"Cannot read source {uri!r}: {arrow_error}. Help: pyarrow reads s3://, gs://, hdfs:// "
                              "and file://; install fsspec (and the filesystem's package) for others.") from None
    from pyarrow import fs as pafs

    try:
        filesystem, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValidationError(f"Cannot read source {uri!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def _listed(folder: Path | RemoteFile) -> list[Path | RemoteFile]:
    """The data files under ``folder`` (recursively, sorted; hidden and ``_``-prefixed files left out)."""
    def wanted(name: str) -> bool:
        return os.path.splitext(name)[1].lower() in FORMATS and not name.startswith((".", "_"))

    if isinstance(folder, Path):
        return sorted(p for p in folder.rglob("*") if p.is_file() and wanted(p.name))
    from pyarrow import fs as pafs

    infos = folder.filesystem.get_file_info(pafs.FileSelector(folder.path, recursive=True))
    return sorted(folder.child(i) for i in infos if i.type == pafs.FileType.File and wanted(i.base_name))


def _open_input(path: Path | RemoteFile) -> Any:
    return path.open_input() if isinstance(path, RemoteFile) else path


def _binary_lines(path: Path | RemoteFile) -> Iterator[bytes]:
    """A file's lines as bytes (newline kept), read in 1 MB blocks from a remote stream."""
    if isinstance(path, Path):
        with open(path, "rb") as f:
            yield from f
        return
    with path.open_stream() as f:
        rest = b""
        while block := f.read(1 << 20):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def _parquet_file(path: Path | RemoteFile, **options: Any):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(_open_input(path), **options)
    except pa.ArrowException as exc:
        raise ValidationError(f"Cannot read {str(path)!r} as Parquet: {exc}") from None


#: read buffer per column when streaming a Parquet file: pages are decoded as batches need them
_PARQUET_BUFFER_BYTES = 1 << 20


def _parquet_batches(path: Path | RemoteFile, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A Parquet file's batches, streamed page by page, one row group at a time.

    ``ParquetFile.iter_batches`` with its defaults pre-buffers column chunks and keeps them until the reader is done:
    on a 3M-row file (150 row groups) Arrow's memory grew by 130 MB as it read, and a file of one big row group was
    held whole. Unbuffered, with a read buffer, a reader per row group holds about one page per column (4-7 MB on both
    files, as fast; ``benchmarks/bench_embed_scale``). Sources are local files, where pre-buffering gains nothing.
    """
    file = _parquet_file(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
    for group in range(file.num_row_groups):
        yield from file.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group])


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
        table = fmt.to_table(data, mixed=_split_non_strings)
    except pa.ArrowException:
        raise
    except TypeError:  # not a table at all
        raise ValidationError(f"Cannot read a source of type {type(data).__name__}: pass a path, an Arrow table or "
                              "a DataFrame.") from None
    if is_pandas:  # pandas' own schema metadata (index, dtypes) describes the frame, not the rows a job writes
        table = table.replace_schema_metadata(None)
    mixed = {}
    for i, f in enumerate(table.schema):
        if f.type == _MIXED:
            column = table.column(i)
            mixed[f.name] = pc.struct_field(column, _NON_TEXT)
            table = table.set_column(i, f.name, pc.struct_field(column, _TEXT))
    return table, mixed


# A mixed column on its way out of ``fmt.to_table``: the texts, and beside them the type name of each other value.
_TEXT, _NON_TEXT = RESERVED + "text", RESERVED + "non_text_type"
_MIXED = pa.struct([(_TEXT, pa.string()), (_NON_TEXT, pa.string())])


def _split_non_strings(values: list[Any]) -> pa.StructArray:
    """Strings and nulls stay; any other value becomes a null text, its type name kept beside it."""
    names = [None if v is None or isinstance(v, str) else type(v).__name__ for v in values]
    texts = [v if n is None else None for v, n in zip(values, names)]
    return pa.StructArray.from_arrays([pa.array(texts, pa.string()), pa.array(names, pa.string())],
                                      fields=list(_MIXED))


def _non_string_errors(names: Sequence[str | None]) -> tuple[list[str | None], list[str | None]]:
    """The report columns (kinds, messages) for a text column's values that are not text."""
    return ([None if n is None else NON_STRING for n in names],
            [None if n is None else non_string_message(n) for n in names])


def _mixed_types_error(column: str, types: set[str], where: str) -> ValidationError:
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


def _csv_header(path: Path | RemoteFile) -> list[str]:
    for block_size in CSV_BLOCK_SIZES:
        try:
            return _csv_reader(path, block_size).schema.names
        except pa.ArrowException as exc:
            if not _too_big(exc):
                raise ValidationError(f"Cannot read {str(path)!r} as CSV: {exc}") from None
    raise _too_big_error(path)


def _csv_file_batches(path: Path | RemoteFile, types: Mapping[str, pa.DataType], empty_is_null: Sequence[str],
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


def _count_lines(path: Path | RemoteFile) -> int:
    return sum(1 for line in _binary_lines(path) if line.strip())


def _jsonl_rows(path: Path | RemoteFile, label: str, limit: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, JSON object or _BadLine) for each non-blank line of the first ``limit`` lines."""
    for number, raw in enumerate(_binary_lines(path), 1):
        if limit is not None and number > limit:
            return
        if not raw.strip():
            continue
        yield number, _parse_line(raw, f"{label}:{number}", first=number == 1)


def _parse_line(raw: bytes, where: str, *, first: bool) -> Any:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _BadLine(UNDECODABLE, where, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        raw.decode("utf-8", "replace"))
    if first:
        line = line.removeprefix("\ufeff")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        message = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg  # "Invalid control character at"
        return _BadLine(INVALID_JSON, where, f"not valid JSON ({message} at column {exc.colno})", line)
    if not isinstance(row, dict):
        return _BadLine(INVALID_JSON, where, f"a JSON {type(row).__name__}, not an object", line)
    return row


# A JSON string or number, the values a key can have.
_JSON_SCALAR = r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?'


class _BadLine:
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


class _JsonlBuffer:
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
                    raise _mixed_types_error(c, types, self.where) from None
                mixed = _split_non_strings(self.values[c])
                array = mixed.field(_TEXT)
                for i, (kind, message) in enumerate(zip(*_non_string_errors(mixed.field(_NON_TEXT).to_pylist()))):
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

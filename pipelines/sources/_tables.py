"""Table sources read in streaming batches: the whole file is never in memory.

Parquet and CSV go through pyarrow.dataset. JSONL is read line by line with the json module, so one row with a
number where text belongs, or a line that is not valid UTF-8, becomes an error row instead of failing the job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.errors import ValidationError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
DECODE_ERROR = "__featurestore_undecodable__"


class TableSource:
    """A table to embed: ``batches(columns)`` yields Arrow record batches; ``count_rows()`` sizes the progress bar."""

    def __init__(self, source: Any, *, format: str | None = None, batch_rows: int = 8192) -> None:
        self.batch_rows = batch_rows
        self._table: pa.Table | None = None
        self.paths: list[Path] = []
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            if not path.exists():
                raise ValidationError(f"Source {str(path)!r} does not exist.")
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith((".", "_"))) if path.is_dir() else [path]
            if not files:
                raise ValidationError(f"No .parquet, .csv or .jsonl files under {str(path)!r}.")
            kinds = {format or FORMATS.get(p.suffix.lower()) for p in files}
            if None in kinds:
                raise ValidationError(f"Cannot tell the format of {str(files[0])!r}: pass format='parquet'|'csv'|'jsonl'.")
            if len(kinds) > 1:
                raise ValidationError(f"{str(path)!r} mixes formats {sorted(kinds)}; point at one kind of file.")
            self.format = kinds.pop()
            self.paths = files
            self.description = str(path)
        else:
            self._table = _to_table(source)
            self.format = "table"
            self.description = f"<{type(source).__name__} with {self._table.num_rows} rows>"

    # -- facts ------------------------------------------------------------------------------------------------
    def column_names(self) -> list[str]:
        if self._table is not None:
            return self._table.column_names
        if self.format == "jsonl":
            names: dict[str, None] = {}
            for row in _jsonl_rows(self.paths[0], limit=100):
                if isinstance(row, dict):
                    names.update(dict.fromkeys(row))
            return list(names)
        return self._dataset().schema.names

    def count_rows(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        if self.format == "jsonl":
            return sum(_count_lines(p) for p in self.paths)
        return self._dataset().count_rows()

    def fingerprint(self) -> str:
        """Paths, sizes and modification times: enough to tell a changed source in provenance."""
        h = hashlib.blake2b(digest_size=8)
        if self._table is not None:
            h.update(str(self._table.schema).encode() + str(self._table.num_rows).encode())
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def check_columns(self, needed: Sequence[str]) -> None:
        names = self.column_names()
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValidationError(f"Source {self.description} has no column(s) {missing}. Columns: {names}")

    # -- reading ----------------------------------------------------------------------------------------------
    def batches(self, columns: Sequence[str], *, binary: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        """Yield batches of ``columns``. Columns in ``binary`` come as raw bytes from CSV so bad UTF-8 is per row."""
        columns = list(columns)
        if self._table is not None:
            yield from self._table.select(columns).to_batches(max_chunksize=self.batch_rows)
        elif self.format == "jsonl":
            yield from _jsonl_batches(self.paths, columns, self.batch_rows)
        elif self.format == "csv":
            import pyarrow.dataset as ds
            import pyarrow.csv as csv

            types = {c: pa.binary() for c in binary}
            fmt = ds.CsvFileFormat(convert_options=csv.ConvertOptions(column_types=types),
                                   parse_options=csv.ParseOptions(newlines_in_values=True,
                                                                  delimiter="\t" if self.paths[0].suffix == ".tsv" else ","))
            dataset = ds.dataset([str(p) for p in self.paths], format=fmt)
            yield from dataset.to_batches(columns=columns, batch_size=self.batch_rows)
        else:
            yield from self._dataset().to_batches(columns=columns, batch_size=self.batch_rows)

    def read_columns(self, columns: Sequence[str]) -> pa.Table:
        """A few (small) columns of every row, e.g. the keys for the up-front null/duplicate check."""
        batches = list(self.batches(columns))
        return pa.Table.from_batches(batches) if batches else pa.table({c: pa.array([], pa.string()) for c in columns})

    def _dataset(self):
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.paths], format=self.format)


def open_source(source: Any, **options: Any) -> TableSource:
    return source if isinstance(source, TableSource) else TableSource(source, **options)


def _to_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.startswith("pandas"):
        # Mixed-type object columns (a number among texts) must not fail the whole job: keep them as Python objects.
        columns = {}
        for name in data.columns:
            values = data[name]
            try:
                columns[str(name)] = pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                columns[str(name)] = _mark_non_strings(values.tolist())
        return pa.table(columns)
    if hasattr(data, "to_arrow"):
        return data.to_arrow()
    if isinstance(data, dict):
        return pa.table(data)
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise ValidationError(f"Cannot read a source of type {type(data).__name__}: pass a path, an Arrow table or a DataFrame.")


def _mark_non_strings(values: list[Any]) -> pa.Array:
    """Strings stay; other values become a tagged string the runner reports as a non-string error row."""
    out = []
    for v in values:
        if v is None or isinstance(v, str):
            out.append(v)
        else:
            out.append(f"{NON_STRING}{type(v).__name__}")
    return pa.array(out, pa.string())


NON_STRING = "__featurestore_non_string__:"


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _jsonl_rows(path: Path, limit: int | None = None) -> Iterator[Any]:
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if limit is not None and i >= limit:
                return
            if not raw.strip():
                continue
            try:
                yield json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield _BadLine(f"{path.name}:{i + 1}: {exc}", raw)


class _BadLine:
    def __init__(self, reason: str, raw: bytes) -> None:
        self.reason = reason
        self.raw = raw


def _jsonl_batches(paths: list[Path], columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows of JSON objects; values that are not strings are tagged so the runner can report them row by row."""
    buf: dict[str, list[Any]] = {c: [] for c in columns}
    for path in paths:
        for row in _jsonl_rows(path):
            if isinstance(row, _BadLine) or not isinstance(row, dict):
                reason = row.reason if isinstance(row, _BadLine) else f"{path.name}: a line that is not a JSON object"
                raise ValidationError(f"Cannot read {reason}. Fix or drop that line (its key is unknown).")
            for c in columns:
                buf[c].append(row.get(c))
            if len(buf[columns[0]]) >= batch_rows:
                yield _jsonl_batch(buf, columns)
                buf = {c: [] for c in columns}
    if buf[columns[0]]:
        yield _jsonl_batch(buf, columns)


def _jsonl_batch(buf: dict[str, list[Any]], columns: list[str]) -> pa.RecordBatch:
    arrays = []
    for c in columns:
        try:
            arrays.append(pa.array(buf[c]))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(_mark_non_strings(buf[c]))
    return pa.RecordBatch.from_arrays(arrays, names=columns)

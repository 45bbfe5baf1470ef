"""A job's source keys, indexed on disk: the null/duplicate check and the resume lookup in memory that stays flat.

Before, both held every key in Python: the source's keys read whole for the duplicate check, and every committed
(key, content_hash) in a dict for resume, which also grew with each row the run wrote. Measured with ``hash:384`` on
a 2-core AMD EPYC: peak RSS 351 MB at 30k rows, 432 MB at 300k, 1,181 MB at 3M (``benchmarks/bench_embed_scale``).

Now a first pass streams the keys (and each row's number) into a DuckDB database in a temporary folder, with a memory
limit, so DuckDB spills to disk instead of growing: duplicates are a ``GROUP BY`` there, and the keys a version
already holds come back as one stream of (row number, committed content hash) ordered by row, which the screen
consumes in step with the second pass over the source. Nothing per row stays in Python.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import ValidationError
from featurestore.query import quote_ident, sql_str
from featurestore.storage import CONTENT_HASH, MAX_EXAMPLES, check_keys, describe_keys, newest_per_key_sql
from pipelines.embedding._scratch import scratch_dir
from pipelines.sources import TableSource
from pipelines.sources._errors import ERROR_KIND, RESERVED

ROW = RESERVED + "row"  # each source row's number in the order the job reads it
#: DuckDB's memory cap for the key index, in MB: it spills to its folder beyond this. At 3M int keys the resume join
#: and sort ran in 32 MB (24 MB ran out); a statement that runs out is run again with twice the cap, up to the last.
MEMORY_LIMITS_MB = (32, 64, 128, 512)
_FETCH_ROWS = 8192


class SourceKeys:
    """The keys of a source's rows by row number, in a DuckDB database that lives as long as the job.

    Build it with :meth:`scan` (which refuses null keys as it reads), then :meth:`check_duplicates`, then one
    :meth:`committed` stream per feature set that already holds rows; :meth:`close` removes the folder.
    """

    def __init__(self, keys: list[str], description: str) -> None:
        import duckdb

        self.keys, self.description = keys, description
        self.rows = 0
        self._types: dict[str, pa.DataType] = {}
        self._dir = scratch_dir("keys")  # a killed job's folder is removed by the next job (``_scratch``)
        self._con = duckdb.connect(str(self._dir / "keys.duckdb"))
        self._con.execute(f"SET memory_limit = '{MEMORY_LIMITS_MB[0]}MB'")
        self._con.execute(f"SET temp_directory = {sql_str(str(self._dir / 'spill'))}")
        self._con.execute("SET preserve_insertion_order = false")
        self._con.execute("SET threads = 1")  # each thread has its own buffers: one keeps the peak low
        self._con.execute("SET enable_progress_bar = false")  # it prints on stdout, into `--json` output
        self._cursors: list[Any] = []

    def close(self) -> None:
        """Free DuckDB's memory and remove the folder (again: nothing)."""
        for cursor in self._cursors:
            cursor.close()
        self._cursors = []
        self._con.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "SourceKeys":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the first pass -------------------------------------------------------------------------------------------
    def scan(self, src: Any, text: str | None, limit: int | None) -> int:
        """Read the first ``limit`` rows' keys into the index; null keys are refused here. Returns the rows checked.

        Rows are numbered as the job's second pass reads them (``src.batches(..., text=text)``). A JSONL line that
        cannot be read is a row there (an error row); it is checked here only when its keys could be recovered, as
        ``TableSource.read_columns`` does.
        """
        nulls = {k: [0, []] for k in self.keys}  # column -> [count, first row numbers]
        checked = 0
        jsonl = isinstance(src, TableSource) and src.format == "jsonl" and text is not None

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal checked
            for batch in src.batches(self.keys, text=text) if jsonl else src.batches(self.keys):
                if limit is not None:
                    if self.rows >= limit:
                        return
                    batch = batch.slice(0, limit - self.rows)
                if not batch.num_rows:
                    continue
                table = pa.Table.from_batches([batch]).select(self.keys)
                if not self._types:
                    check_keys(table.slice(0, 0), self.keys)  # the columns' kinds, before any row
                    self._types = {k: table.schema.field(k).type for k in self.keys}
                numbers = pa.array(np.arange(self.rows, self.rows + batch.num_rows), pa.int64())
                indexed = table.append_column(ROW, numbers)
                if jsonl:  # an unreadable line whose keys are lost is an error row, not a null key
                    lost = pc.and_(batch.column(ERROR_KIND).is_valid(), _any_null(table, self.keys))
                    table = table.filter(pc.invert(lost))
                for k in self.keys:
                    where = np.flatnonzero(table.column(k).is_null().to_numpy(zero_copy_only=False))
                    if len(where):
                        nulls[k][0] += len(where)
                        nulls[k][1] = (nulls[k][1] + (where + checked).tolist())[:MAX_EXAMPLES]
                self.rows += batch.num_rows
                checked += table.num_rows
                yield from indexed.to_batches()

        failed: list[BaseException] = []
        peeked = _peek(batches())
        if peeked is not None:
            schema, rest = peeked
            self._con.register("_fs_keys", pa.RecordBatchReader.from_batches(schema, _caught(rest, failed)))
            self._con.execute("CREATE TABLE src AS SELECT * FROM _fs_keys")
            self._con.unregister("_fs_keys")
            self._con.execute("CHECKPOINT")  # the table's blocks go to the file: evictable, not held in memory
        if failed:
            raise failed[0]
        for k, (count, first_rows) in nulls.items():
            if count:
                shown = ", ".join(map(str, first_rows))
                more = f" (and {count - len(first_rows)} more)" if count > len(first_rows) else ""
                rows = f"row {shown}" if count == 1 else f"rows {shown}{more}"
                raise ValidationError(f"Source {self.description}: {count} null value(s) in key column {k!r} at "
                                      f"{rows}.")
        return checked

    def check_duplicates(self) -> None:
        """A key given twice in the source is an error, naming the first keys repeated (as ``check_keys``)."""
        if not self.rows:
            return
        cols = ", ".join(quote_ident(k) for k in self.keys)
        not_null = " AND ".join(f"{quote_ident(k)} IS NOT NULL" for k in self.keys)
        found = self._spilling(lambda: self._con.sql(
            f"SELECT {cols}, count(*) OVER () AS _n FROM src WHERE {not_null} GROUP BY {cols} "
            f"HAVING count(*) > 1 ORDER BY min({ROW}) LIMIT {MAX_EXAMPLES}").to_arrow_table())
        if not found.num_rows:
            return
        total = found.column("_n")[0].as_py()
        examples = describe_keys(found, self.keys, np.arange(found.num_rows))
        more = f" (and {total - found.num_rows} more)" if total > found.num_rows else ""
        raise ValidationError(f"Source {self.description}: {total} key(s) appear more than once in this write: "
                              f"{examples}{more}. A write holds one row per key.")

    # -- resume ---------------------------------------------------------------------------------------------------
    def committed(self, writer: Any) -> "Committed | None":
        """The content hash ``writer``'s version holds for each source row whose key it holds, as a stream by row.

        None when the version holds nothing, or keys of other types (then no source row matches, as before).
        """
        m = writer.manifest
        if m is None or not m.partitions or not self.rows:
            return None
        for k in self.keys:
            if not _same_kind(str(self._types.get(k)), m.columns.get(k, "")):
                return None
        files = ", ".join(sql_str(str(writer.version_dir / p.file)) for p in m.partitions)
        cols = ", ".join(quote_ident(k) for k in self.keys)
        newest = newest_per_key_sql([quote_ident(k) for k in self.keys], "filename") if m.has_updates else ""
        on = " AND ".join(f"s.{quote_ident(k)} = c.{quote_ident(k)}" for k in self.keys)
        # Join, then sort in a second statement: each gets the whole memory budget and spills on its own (join and
        # sort in one statement ran out of 64 MB at 3M rows; apart they fit).
        table = f"held_{len(self._cursors)}"
        self._spilling(lambda: self._con.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT s.{ROW} AS row, c.{CONTENT_HASH} AS hash FROM src s JOIN "
            f"(SELECT {cols}, {CONTENT_HASH} FROM read_parquet([{files}], filename = true) {newest}) c ON {on}"))
        cursor = self._con.cursor()
        self._cursors.append(cursor)
        return Committed(cursor.sql(f"SELECT row, hash FROM {table} ORDER BY row").to_arrow_reader(_FETCH_ROWS))


    def _spilling(self, run: Callable[[], Any]) -> Any:
        """``run()``, again with a larger memory cap each time DuckDB runs out (see ``MEMORY_LIMITS_MB``)."""
        import duckdb

        larger = iter(MEMORY_LIMITS_MB[1:])
        while True:
            try:
                return run()
            except duckdb.OutOfMemoryException:
                limit = next(larger, None)
                if limit is None:
                    raise
                self._con.execute(f"SET memory_limit = '{limit}MB'")


class Committed:
    """(row number, committed content hash) for the source rows a version holds, consumed in row order.

    At most one fetched batch waits here, as Arrow (hashes become Python strings only for the rows asked for).
    """

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._reader = reader
        self._rows = np.empty(0, np.int64)
        self._hashes = pa.array([], pa.string())

    def hashes(self, start: int, stop: int) -> np.ndarray:
        """The committed hash of each row in ``[start, stop)`` (None where the key is not held), as an object array.

        Calls must come with increasing ranges (rows skipped between them are dropped): the stream is read once.
        """
        out = np.full(stop - start, None, dtype=object)
        while not len(self._rows) or self._rows[-1] < stop:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                break
            self._rows = np.concatenate([self._rows, batch.column(0).to_numpy()])
            self._hashes = pa.concat_arrays([self._hashes, batch.column(1)])
        lo, hi = (int(i) for i in np.searchsorted(self._rows, [start, stop]))
        out[self._rows[lo:hi] - start] = self._hashes.slice(lo, hi - lo).to_pylist()
        self._rows, self._hashes = self._rows[hi:], self._hashes.slice(hi)
        return out


def _peek(batches: Iterator[pa.RecordBatch]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]] | None:
    """The schema of the first batch, and every batch (that one included); None when there are none."""
    first = next(batches, None)
    if first is None:
        return None

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return first.schema, chain()


def _caught(batches: Iterator[pa.RecordBatch], failed: list[BaseException]) -> Iterator[pa.RecordBatch]:
    """``batches``, stopping at the first error and keeping it: DuckDB pulls them and would turn our
    ValidationError into its own error, so the caller re-raises it as it was."""
    try:
        yield from batches
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller
        failed.append(exc)


def _any_null(table: pa.Table, keys: Sequence[str]) -> pa.ChunkedArray:
    out = table.column(keys[0]).is_null()
    for k in keys[1:]:
        out = pc.or_(out, table.column(k).is_null())
    return out


def _same_kind(source_type: str, stored_type: str) -> bool:
    """Whether keys of these Arrow types can be equal (the old dict lookup compared Python values)."""
    strings = {"string", "large_string"}
    return source_type == stored_type or (source_type in strings and stored_type in strings)

"""A feature set version as a reader sees it: spec, counts, and the rows as Arrow or numpy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.query._catalog import errors_sql, quote_ident, version_view
from featurestore.storage._format import EMBEDDING, key_tokens, to_matrix  # noqa: F401 - key_tokens: imported from here by pipelines
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, Partition
from featurestore.storage._newest import newest_per_key, oldest_first
from featurestore.errors import CorruptStoreError

_CHILD_NAME = re.compile(r"<\w+: ")


def type_key(type_string: str) -> str:
    """An Arrow type string without list child names (Parquet reads ``list<item: ...>`` back as ``<element: ...>``)."""
    return _CHILD_NAME.sub("<", type_string)


def check_schema(path: Path, schema: pa.Schema, m: Manifest) -> None:
    """Refuse a file whose columns or embedding width differ from what its manifest promises."""
    got = {f.name: type_key(str(f.type)) for f in schema}
    want = {k: type_key(v) for k, v in m.columns.items()}
    if want and got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        details = ", ".join(f"{k}: file {got.get(k, 'missing')}, manifest {want.get(k, 'missing')}" for k in diff[:4])
        raise CorruptStoreError(f"{path} does not match its manifest ({details}).\n  Help: run `featurestore doctor`.")
    if EMBEDDING in schema.names:
        typ = schema.field(EMBEDDING).type
        if not pa.types.is_fixed_size_list(typ) or typ.list_size != m.dim:
            raise CorruptStoreError(
                f"{path} holds embeddings of type {typ} but its manifest says dim={m.dim}.\n  Help: run `featurestore doctor`."
            )


def check_present(path: Path, p: Partition) -> None:
    """The partition file is on disk with the size its manifest recorded (one stat)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptStoreError(f"Partition {path} is listed in its manifest but missing.\n  Help: run `featurestore doctor`.") from None
    if size != p.bytes:
        raise CorruptStoreError(
            f"Partition {path} has {size} bytes, its manifest says {p.bytes}: it was truncated or replaced.\n"
            "  Help: run `featurestore doctor`."
        )


def read_partition(version_dir: Path, m: Manifest, p: Partition, columns: list[str] | None = None, *,
                   rows_schema: bool = True) -> pa.Table:
    """One committed partition, after the checks that cost nothing next to reading it.

    Size against the manifest, the footer's row count and schema against the manifest, and Parquet page CRCs while
    decoding (written since format 1.1), so a truncated, swapped or bit-flipped file is an error naming it, never
    wrong rows. The whole-file CRC32 is checked by ``featurestore doctor``.
    """
    path = version_dir / p.file
    check_present(path, p)
    try:
        f = pq.ParquetFile(path, page_checksum_verification=True)
        if f.metadata.num_rows != p.rows:
            raise CorruptStoreError(
                f"Partition {path} holds {f.metadata.num_rows} rows, its manifest says {p.rows}.\n  Help: run `featurestore doctor`."
            )
        if rows_schema:  # error partitions have their own columns
            check_schema(path, f.schema_arrow, m)
        return f.read(columns=columns)
    except CorruptStoreError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptStoreError(f"Partition {path} cannot be read ({exc}).\n  Help: run `featurestore doctor`.") from None


def read_latest(version_dir: Path, m: Manifest, columns: list[str] | None = None) -> pa.Table:
    """All committed rows of a version in commit order, one per key: the newest row wins (see ``_newest``)."""
    if columns is not None:
        columns = list(dict.fromkeys([*m.key, *columns]))
    tables = [read_partition(version_dir, m, p, columns) for p in oldest_first(m.partitions)]
    if not tables:
        schema = pq.read_schema(version_dir / SCHEMA_FILE)
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    if not m.has_updates or len(tables) == 1:
        return pa.concat_tables(tables)
    return newest_per_key(tables, m.key)


class FeatureSet:
    """One version of a feature set. Cheap to create: nothing is read until asked for."""

    def __init__(self, version_dir: Path, manifest: Manifest, *, latest: bool, as_of: str | None = None) -> None:
        self.path = version_dir
        self.manifest = manifest
        self.latest = latest
        self.as_of = as_of  # a snapshot (``store.get(name, as_of=...)``): only what was committed by then

    name = property(lambda self: self.manifest.name)
    version = property(lambda self: self.manifest.version)
    spec = property(lambda self: dict(self.manifest.spec))
    key = property(lambda self: list(self.manifest.key))
    dim = property(lambda self: self.manifest.dim)
    dtype = property(lambda self: self.manifest.dtype)
    n_dims = dim

    @property
    def view(self) -> str:
        """The SQL view that reads this version (a snapshot: ``"name@<time>"``, which ``store.sql`` resolves)."""
        if self.as_of is not None:
            return quote_ident(f"{self.name}@{self.as_of}")
        return self.name if self.latest else quote_ident(version_view(self.name, self.version))

    def count(self) -> int:
        """Rows in the view: one per key."""
        if not self.manifest.has_updates:
            return self.manifest.rows_written
        return read_latest(self.path, self.manifest, columns=[]).num_rows

    n_rows = property(count)

    def to_arrow(self, columns: list[str] | None = None) -> pa.Table:
        """Key column(s) first, then ``content_hash``, ``embedding`` (fixed_size_list) and the rest."""
        return read_latest(self.path, self.manifest, columns)

    def keys(self) -> pa.Table:
        """The key column(s), in the same row order as :meth:`to_numpy`."""
        return read_latest(self.path, self.manifest, columns=[]).select(self.key)

    def to_numpy(self) -> np.ndarray:
        """A (rows, dim) float32 matrix in the row order of :meth:`keys`."""
        table = read_latest(self.path, self.manifest, columns=[EMBEDDING])
        return to_matrix(table.column(EMBEDDING), self.dim)

    def errors(self) -> pa.Table:
        """The current error of each key that failed to embed, as the ``name@errors`` view: key(s), ``kind``,
        ``message``, ``reason`` (``"<kind>: <message>"``) and ``run_id``.

        A key that failed again on a rerun shows once; a key whose row was committed after its error shows not at all.
        """
        sql = errors_sql(self.path, self.manifest)  # no rows, same columns, when there were no errors
        import duckdb

        with duckdb.connect(":memory:") as con:
            table = con.sql(sql).to_arrow_table()
        return table.drop_columns(["version"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.manifest.runs)

    def __repr__(self) -> str:
        as_of = "" if self.as_of is None else f", as_of={self.as_of!r}"
        return (f"FeatureSet(name={self.name!r}, version={self.version}, dim={self.dim}, dtype={self.dtype!r}, "
                f"encoder={self.manifest.spec.get('encoder')!r}, rows={self.manifest.rows_written}{as_of})")

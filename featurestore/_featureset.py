"""A feature set version as a reader sees it: spec, counts, and the rows as Arrow or numpy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._catalog import errors_sql
from ._format import EMBEDDING, to_matrix
from ._manifest import SCHEMA_FILE, Manifest, Partition
from .errors import CorruptStoreError

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


def key_tokens(table: pa.Table, key: list[str]) -> pa.Array:
    """One comparable value per row for single or compound keys; two different keys never share a token.

    A single key is its own column. A compound key is the concatenation of ``<byte length>:<bytes>`` for each part
    (a length-prefixed, hence unambiguous, encoding: ``("a|b", "c")`` and ``("a", "b|c")`` differ), as binary, so
    binary parts that are not UTF-8 need no decoding.
    """
    if len(key) == 1:
        col = table.column(key[0])
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    parts: list[pa.Array] = []
    for k in key:
        col = table.column(k)
        raw = col if pa.types.is_binary(col.type) else pc.cast(pc.cast(col, pa.string()), pa.binary())
        length = pc.cast(pc.cast(pc.binary_length(raw), pa.string()), pa.binary())
        parts += [length, pa.repeat(pa.scalar(b":", pa.binary()), table.num_rows), raw]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary())).combine_chunks()


def read_latest(version_dir: Path, m: Manifest, columns: list[str] | None = None) -> pa.Table:
    """All committed rows of a version, one per key: when a key was re-written the newest partition wins."""
    if columns is not None:
        columns = list(dict.fromkeys([*m.key, *columns]))
    tables = [read_partition(version_dir, m, p, columns) for p in m.partitions]
    if not tables:
        schema = pq.read_schema(version_dir / SCHEMA_FILE)
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    if not m.has_updates or len(tables) == 1:
        return pa.concat_tables(tables)
    kept: list[pa.Table] = []
    seen: pa.Array | None = None
    for table in reversed(tables):  # newest first: a key already seen has a newer row
        tokens = key_tokens(table, m.key)
        if seen is not None and len(seen):
            table = table.filter(pc.invert(pc.is_in(tokens, value_set=seen)))
            tokens = key_tokens(table, m.key)
        seen = tokens if seen is None else pa.concat_arrays([seen, tokens])
        kept.append(table)
    return pa.concat_tables(reversed(kept))


class FeatureSet:
    """One version of a feature set. Cheap to create: nothing is read until asked for."""

    def __init__(self, version_dir: Path, manifest: Manifest, *, latest: bool) -> None:
        self.path = version_dir
        self.manifest = manifest
        self.latest = latest

    name = property(lambda self: self.manifest.name)
    version = property(lambda self: self.manifest.version)
    spec = property(lambda self: dict(self.manifest.spec))
    key = property(lambda self: list(self.manifest.key))
    dim = property(lambda self: self.manifest.dim)
    dtype = property(lambda self: self.manifest.dtype)
    n_dims = dim

    @property
    def view(self) -> str:
        """The SQL view that reads this version."""
        return self.name if self.latest else f'"{self.name}@v{self.version}"'

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
        """The current error of each key that failed to embed (key, reason, run_id), as the ``name@errors`` view.

        A key that failed again on a rerun shows once; a key whose row was committed after its error shows not at all.
        """
        sql = errors_sql(self.path, self.manifest)
        if sql is None:
            return pa.table({})
        import duckdb

        with duckdb.connect(":memory:") as con:
            table = con.sql(sql).to_arrow_table()
        return table.drop_columns(["version"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.manifest.runs)

    def __repr__(self) -> str:
        return (f"FeatureSet(name={self.name!r}, version={self.version}, dim={self.dim}, dtype={self.dtype!r}, "
                f"encoder={self.manifest.spec.get('encoder')!r}, rows={self.manifest.rows_written})")

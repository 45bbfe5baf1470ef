"""A feature set version as a reader sees it: spec, counts, and the rows as Arrow or numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._format import EMBEDDING, to_matrix
from ._manifest import Manifest


def key_tokens(table: pa.Table, key: list[str]) -> pa.Array:
    """One comparable value per row for single or compound keys."""
    if len(key) == 1:
        col = table.column(key[0])
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    parts = [pc.cast(table.column(k), pa.string()) for k in key]
    return pc.binary_join_element_wise(*parts, "\x1f").combine_chunks()


def read_latest(version_dir: Path, m: Manifest, columns: list[str] | None = None) -> pa.Table:
    """All committed rows of a version, one per key: when a key was re-written the newest partition wins."""
    if columns is not None:
        columns = list(dict.fromkeys([*m.key, *columns]))
    tables = [pq.read_table(version_dir / p.file, columns=columns) for p in m.partitions]
    if not tables:
        schema = pq.read_schema(version_dir / "schema.parquet")
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
        """Rows that failed to embed: key, reason, run_id."""
        tables = [pq.read_table(self.path / p.file) for p in self.manifest.errors]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.manifest.runs)

    def __repr__(self) -> str:
        return (f"FeatureSet(name={self.name!r}, version={self.version}, dim={self.dim}, dtype={self.dtype!r}, "
                f"encoder={self.manifest.spec.get('encoder')!r}, rows={self.manifest.rows_written})")

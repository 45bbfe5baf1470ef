"""A feature set version as a reader sees it: spec, counts, and the rows as Arrow or numpy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from featurestore.query._catalog import errors_sql, quote_ident, version_view
from featurestore.storage._format import EMBEDDING, to_matrix
from featurestore.storage._manifest import Manifest
from featurestore.storage._partitions import read_latest

if TYPE_CHECKING:
    from featurestore.search._matrix import Matrix

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

    def matrix(self, *, unit: bool = False, progress: bool | None = None) -> "Matrix":
        """The version's vectors as search scores them: ``.vectors`` a (rows, dim) float32 matrix, memory-mapped from
        a cache beside the version (built on first use, rebuilt when the rows change), ``.keys`` its key table (row
        ``i`` is key ``i``); ``unit=True`` scales the rows to unit length (what cosine search reads).

        Cheaper than :meth:`to_numpy` on a large set after the first call: the pages are shared, not copied.
        """
        from featurestore.search._matrix import load_matrix

        return load_matrix(self, unit=unit, progress=progress)

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

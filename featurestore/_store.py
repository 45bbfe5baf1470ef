"""The store: a folder of feature sets (Parquet + manifests) with a DuckDB catalog over them."""

from __future__ import annotations

import json
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.errors import CorruptStoreError, FeatureSetNotFoundError, FeatureStoreError
from featurestore.ops import _diff, _drop
from featurestore.ops._doctor import DoctorReport
from featurestore.ops._doctor import doctor as _doctor
from featurestore.query import _time_travel
from featurestore.query._catalog import CATALOG, STALE_MARKER, Broken, reader_connection, write_catalog
from featurestore.query._featureset import FeatureSet
from featurestore.query._sql import Result, check_read_only
from featurestore.storage._atomic import atomic_write_text
from featurestore.storage._layout import (
    FORMAT,
    MARKER,
    check_store_format,
    list_versions,
    models_dir,
    set_dir,
    sets_dir,
    version_dir,
)
from featurestore.storage._manifest import now, read_manifest
from featurestore.storage._names import validate_name
from featurestore.storage._partitions import check_present
from featurestore.storage._writer import Writer
from featurestore.utils._validation import Interval, validate_params

if TYPE_CHECKING:
    from featurestore.ops._drift import DriftResult

_SQL_CONSTRAINTS: dict[str, list] = {
    "read_only": ["boolean"],
    "timeout": [Interval(numbers.Real, 0, None, closed="neither"), None],
}


def open(root: str | os.PathLike[str], *, create: bool = True) -> "Store":  # noqa: A001 - mirrors duckdb.connect/lancedb.connect
    """Open the store at ``root``, creating an empty one if the folder is missing or empty (unless ``create=False``)."""
    return Store(root, create=create)


class Store:
    """A feature store rooted at a folder. Readers never take locks; each feature set has one writer at a time."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        marker = self.root / MARKER
        if not marker.is_file():
            if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
                raise FeatureStoreError(
                    f"{self.root} is not a feature store (no {MARKER}) and is not empty; refusing to write into it."
                )
            if not create:
                raise FeatureStoreError(f"No feature store at {self.root}. Create one with `featurestore init {root}`.")
            sets_dir(self.root).mkdir(parents=True, exist_ok=True)
            models_dir(self.root).mkdir(exist_ok=True)
            atomic_write_text(marker, json.dumps({"format": FORMAT, "created_at": now()}) + "\n")
            self._write_catalog()
        else:
            check_store_format(self.root)

    # -- reading -------------------------------------------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG

    @property
    def models_dir(self) -> Path:
        return models_dir(self.root)

    def names(self) -> list[str]:
        """Feature sets that have at least one committed version."""
        sets = sets_dir(self.root)
        return sorted(p.name for p in sets.iterdir() if p.is_dir() and list_versions(p)) if sets.is_dir() else []

    def versions(self, name: str) -> list[int]:
        validate_name(name)
        return list_versions(set_dir(self.root, name))

    def get(self, name: str, version: int | None = None, *, as_of: Any = None) -> FeatureSet:
        """A feature set's latest version, or the given one; ``as_of`` (a datetime or ISO string, naive = UTC): the
        rows as committed at that time, of the newest version that had a commit by then (see ``_time_travel``)."""
        validate_name(name)
        versions = list_versions(set_dir(self.root, name))
        if not versions:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise FeatureSetNotFoundError(f"No feature set named {name!r} in {self.root}. Known: {known}.")
        if as_of is not None:
            return _time_travel.get_as_of(self, name, version, as_of)
        v = versions[-1] if version is None else int(version)
        if v not in versions:
            raise FeatureSetNotFoundError(f"Feature set {name!r} has no version {v}. Versions: {versions}.")
        vdir = version_dir(self.root, name, v)
        return FeatureSet(vdir, read_manifest(vdir), latest=(v == versions[-1]))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def list(self) -> list[dict[str, Any]]:
        """One dict per feature set (its latest version): name, version, versions, rows, dim, dtype, encoder, metric."""
        out = []
        for name in self.names():
            try:
                fs = self.get(name)
            except CorruptStoreError as exc:  # one bad manifest must not hide every other set
                warnings.warn(f"Skipping feature set {name!r}: {exc}", stacklevel=2)
                continue
            m = fs.manifest
            out.append({
                "name": name, "version": m.version, "versions": self.versions(name), "rows": fs.count(),
                "dim": m.dim, "dtype": m.dtype, "encoder": m.spec.get("encoder"), "metric": m.spec.get("metric"),
                "key": m.key, "partitions": len(m.partitions), "errors": sum(p.rows for p in m.errors),
                "created_at": m.created_at,
            })
        return out

    def _entries(self) -> tuple[list[tuple[Path, Any, bool]], list[Broken]]:
        """(version dir, manifest, is latest) for every readable version whose partitions are all in place, and the
        versions left out as (name, version, is latest, why).

        A version with an unreadable manifest or a missing or resized partition is left out, so one damaged set
        never takes the others down; the catalog gives it a view that raises the reason.
        """
        entries: list[tuple[Path, Any, bool]] = []
        broken: list[Broken] = []
        for name in self.names():
            versions = list_versions(set_dir(self.root, name))
            for v in versions:
                vdir = version_dir(self.root, name, v)
                try:
                    m = read_manifest(vdir)
                    for p in [*m.partitions, *m.errors]:  # a stat each: cheap enough for every query
                        check_present(vdir / p.file, p)
                except CorruptStoreError as exc:
                    broken.append((name, v, v == versions[-1], str(exc).split("\n")[0]))
                    continue
                entries.append((vdir, m, v == versions[-1]))
        return entries, broken

    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None, *, read_only: bool = True,
            timeout: float | None = None, memory_limit: str | None = None, as_of: Any = None) -> Result:
        """Run SQL over the feature sets' views (embedding as ``FLOAT[dim]``); returns a lazy :class:`Result`.

        Read-only by default: only statements that read run (SELECT, EXPLAIN of a SELECT; see ``check_read_only``),
        and nothing outside the store is reachable. Each call builds its views in a private in-memory DuckDB from the
        manifests, so queries never wait on (or block) a writer. ``timeout`` (seconds) interrupts a long query with
        :class:`QueryTimeoutError`; ``memory_limit`` (e.g. ``"2GB"``) caps DuckDB's memory.

        Time travel: ``as_of`` builds every view as committed at that time; a quoted ``"name@<ISO time>"`` in the
        query reads one set as it was then (see ``_time_travel``).
        """
        validate_params({"read_only": read_only, "timeout": timeout}, _SQL_CONSTRAINTS, "Store.sql")
        entries, broken = self._entries()
        if as_of is not None:
            entries, broken = _time_travel.entries_as_of(entries, broken, as_of)
        con = reader_connection(self.root, entries, read_only=read_only, memory_limit=memory_limit, broken=broken)
        _time_travel.define_time_views(con, _time_travel.time_views(query, self))
        if read_only:
            check_read_only(con, query)
        return Result(con.sql(query, params=params), con, timeout=timeout)

    # -- writing -------------------------------------------------------------------------------------------------
    def writer(self, name: str, *, key: str | Sequence[str] = "id", spec: Mapping[str, Any] | None = None,
               version: int | str | None = None, provenance: Mapping[str, Any] | None = None,
               run_id: str | None = None, lock_timeout: float = 60.0, embedding: str = "embedding",
               run_info: Mapping[str, Any] | None = None) -> Writer:
        """A context manager holding ``name``'s write lock; each ``append`` commits one partition.

        ``version``: None appends to the latest version (a different spec is an error), "new" starts a version,
        "auto" appends to the version with the same spec or starts one, an int names a version.
        """
        validate_name(name)
        validate_params({"version": version, "lock_timeout": lock_timeout}, Writer._parameter_constraints,
                        "Store.writer")
        return Writer(self, name, key=key, spec=spec, version=version, provenance=provenance, run_id=run_id,
                      lock_timeout=lock_timeout, embedding=embedding, run_info=run_info)

    def write(self, name: str, data: Any, *, key: str | Sequence[str] = "id", spec: Mapping[str, Any] | None = None,
              version: int | str | None = None, embedding: str = "embedding", lock_timeout: float = 60.0) -> dict[str, Any]:
        """Append rows (Arrow, pandas, polars, or a dict with a 2-D numpy ``embedding``) as one committed partition.

        Rows whose (key, content_hash) are already stored are skipped, so re-running a write is harmless. Without a
        ``content_hash`` column, the hash of the vector itself is used. Returns the run record.
        """
        validate_name(name)
        validate_params({"version": version, "lock_timeout": lock_timeout}, Writer._parameter_constraints,
                        "Store.write")
        with Writer(self, name, key=key, spec=spec, version=version, lock_timeout=lock_timeout,
                    embedding=embedding) as w:
            w.append(data)
        return {"name": name, "version": w.manifest.version if w.manifest else None, **w.run}

    # -- catalog -------------------------------------------------------------------------------------------------
    def _write_catalog(self) -> bool:
        entries, broken = self._entries()
        return write_catalog(self.root, entries, broken=broken)

    def rebuild_catalog(self) -> bool:
        """Rewrite ``catalog.duckdb`` from the manifests (it is only an index of them)."""
        return self._write_catalog()

    def doctor(self, *, rebuild: bool = False, clean: bool = False) -> DoctorReport:
        """Check files against manifests (exists, size, CRC32, rows), list leftovers, check the catalog; optionally repair."""
        return _doctor(self, rebuild=rebuild, clean=clean)

    @property
    def catalog_stale(self) -> bool:
        return (self.root / STALE_MARKER).exists()

    def __repr__(self) -> str:
        return f"featurestore.open({str(self.root)!r})"

    # -- versions: drop and diff (``_drop``, ``_diff``) ----------------------------------------------------------
    def drop(self, name: str, version: int | None = None, *, force: bool = False,
             lock_timeout: float = 10.0) -> dict[str, Any]:
        """Remove feature set ``name`` (every version) or one ``version``, under its write lock; see ``_drop``.

        Refused when a saved model under ``models/`` uses what would go, unless ``force``. Returns what was removed.
        """
        return _drop.drop(self, name, version, force=force, lock_timeout=lock_timeout)

    def diff(self, a: Any, b: Any, *, examples: int = 5) -> _diff.Diff:
        """Compare two feature set versions (``"name"``, ``"name@v2"``, ``"name@<ISO time>"`` or a FeatureSet): specs
        side by side, keys added and removed, rows changed, cosine between the shared keys' vectors."""
        return _diff.diff(self, a, b, examples=examples)

    # -- statistics and drift (``_stats``, ``_drift``) -------------------------------------------------------------
    def drift(self, a: Any, b: Any = None, *, where_a: str | None = None, where_b: str | None = None,
              max_rows: int = 2000, permutations: int = 1000, seed: int = 0, allow_spec_differences: bool = False,
              progress: bool | None = None) -> "DriftResult":
        """How far apart two groups of vectors are: two versions, two sets of one spec, or two ``where`` slices.

        ``a``/``b``: ``"name"``, ``"name@v2"``, ``"name@<ISO time>"`` or a FeatureSet (``b`` defaults to ``a``);
        ``where_a``/``where_b``: SQL predicates over that set's view selecting the rows of each side. Returns the
        centroid cosine, the centroid distance in units of spread, the norm shift in pooled std, and an MMD
        permutation test (on at most ``max_rows`` rows per side, drawn with ``seed``) with its p-value; see ``_drift``.
        """
        from featurestore.ops import _drift

        return _drift.drift(self, a, b, where_a=where_a, where_b=where_b, max_rows=max_rows,
                            permutations=permutations, seed=seed, allow_spec_differences=allow_spec_differences,
                            progress=progress)

    # -- vector search (``_search``, ``_ann``) -------------------------------------------------------------------
    def search(self, name: str, query: Any = None, *, key: Any = None, image: Any = None, k: int = 10,
               where: str | None = None, columns: Sequence[str] | None = None, version: int | None = None,
               metric: str | None = None, include_self: bool = False, index: str = "exact",
               progress: bool | None = None) -> Any:
        """The ``k`` rows of ``name`` nearest to a query, as a ``pyarrow.Table``: key column(s), ``score``, ``rank``
        and the stored ``columns`` asked for (``.to_pandas()`` for pandas).

        ``query``: a text (encoded with the set's own recorded encoder spec), a vector of the set's dim, or a batch
        (a list of texts, a (queries, dim) array: one table with a ``query`` column, the query's position). ``key``:
        search with a stored row's vector instead (a list of keys for a batch); that row is left out of its own
        results unless ``include_self``. ``image``: a path, bytes or PIL image (or a list), encoded by the set's image
        encoder. A text against image vectors (or an image against text vectors) goes through the other tower of the
        same open_clip model, checked to share the set's ``space``. ``where``: an SQL predicate over the set's view,
        run first, so only the rows
        it keeps are scored. ``metric``: the spec's by default (``cosine``, ``dot``, ``l2``; for ``l2`` the score is
        minus the distance). Exact by default (ties ordered by key); ``index="ann"`` uses the version's HNSW index,
        built first when missing or stale (see :meth:`build_index`).
        """
        from featurestore.search._search import search

        return search(self, name, query, key=key, image=image, k=k, where=where, columns=columns, version=version,
                      metric=metric, include_self=include_self, index=index, progress=progress)

    def build_index(self, name: str, *, version: int | None = None, metric: str | None = None, recall: float = 0.95,
                    force: bool = False, progress: bool | None = None) -> dict[str, Any]:
        """Build the approximate (HNSW) index of a version for ``search(..., index="ann")``, unless it is current.

        The index is kept beside the version and rebuilt when the version's rows change. Its ``efSearch`` is the
        smallest whose recall@10 against exact search reaches ``recall`` on a sample of the set's own rows; the
        returned info holds the recall reached, build seconds and index bytes. Needs ``featurestore[ann]``.
        """
        from featurestore.search._search import build_index

        return build_index(self, name, version=version, metric=metric, recall=recall, force=force, progress=progress)

    def index_info(self, name: str, *, version: int | None = None, metric: str | None = None) -> dict[str, Any]:
        """The version's ANN index: ``status`` ready / stale (built for rows it no longer holds) / missing, and, when
        there is one, its recall@10, efSearch, build seconds and bytes."""
        from featurestore.search._search import index_info

        return index_info(self, name, version=version, metric=metric)

"""Time travel: a feature set as it was committed at a moment, and every row it ever held (for point-in-time joins).

Every partition records ``created_at`` (UTC, milliseconds), stamped after its file is renamed into place and just
before the manifest that commits it is replaced. The snapshot of a version at ``T`` is its manifest restricted to the
partitions (and error files) created at or before ``T``; newest-row-per-key (``_newest``) then applies inside that
snapshot, exactly as a reader at ``T`` saw it. The version a name meant at ``T`` is the newest one with a commit at or
before ``T``. A dropped version is gone from every time, including the past.

Times: a ``datetime`` or an ISO 8601 string (``2026-11-29``, ``2026-11-29T08:00:00``, ``...+02:00`` or ``...Z``).
A time without a zone is UTC, as ``created_at`` is.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import FeatureSetNotFoundError, FeatureStoreError, ValidationError
from featurestore.query._catalog import Broken, _select_sql, quote_ident
from featurestore.storage._format import EMBEDDING, EVENT_TIME, key_tokens
from featurestore.storage._layout import list_versions, set_dir, version_dir
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, read_manifest
from featurestore.storage._newest import commit_number
from featurestore.storage._partitions import read_partition

if TYPE_CHECKING:
    from featurestore._store import Store
    from featurestore.query._featureset import FeatureSet

Entry = tuple[Path, Manifest, bool]  # (version dir, manifest, is latest), as the catalog takes them

# A reference to a feature set: "name", "name@v3" or "name@<ISO time>" (quoted in SQL: "name@2026-11-29T08:00").
_REF = re.compile(r"^(?P<name>[^@]+)(?:@(?:v(?P<version>[0-9]+)|(?P<time>[0-9].*)))?$")
# Quoted identifiers of the form "name@<digit>...": the time-travel views a query may read.
_TIME_VIEW = re.compile(r'"(?P<name>[a-z][a-z0-9_]{0,62})@(?P<time>[0-9][^"]{0,60})"')


def parse_as_of(value: Any) -> datetime:
    """``value`` (a datetime, a date, or an ISO 8601 string) as an aware UTC datetime; naive means UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(
                f"as_of must be a datetime or an ISO 8601 time such as '2026-11-29T08:00:00' (UTC unless it has an "
                f"offset). Got {value!r}."
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raise ValidationError(f"as_of must be a datetime or an ISO 8601 string. Got {type(value).__name__} {value!r}.")
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def format_as_of(t: datetime) -> str:
    """The canonical text of a moment (UTC, milliseconds): how snapshot views are named."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ref(ref: str) -> tuple[str, int | None, datetime | None]:
    """``"name"``, ``"name@v3"`` or ``"name@<ISO time>"`` -> (name, version or None, time or None)."""
    found = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if found is None:
        raise ValidationError(f"Expected a feature set reference NAME, NAME@vK or NAME@<ISO time>. Got {ref!r}.")
    version = found.group("version")
    when = found.group("time")
    return found.group("name"), None if version is None else int(version), None if when is None else parse_as_of(when)


def resolve_ref(store: "Store", ref: Any) -> "FeatureSet":
    """``"name"``, ``"name@v3"``, ``"name@<ISO time>"`` (a snapshot) or a FeatureSet, as a FeatureSet."""
    from featurestore.query._featureset import FeatureSet

    if isinstance(ref, FeatureSet):
        return ref
    if not isinstance(ref, str):
        raise ValidationError(f"Expected a feature set reference ('name', 'name@v2', 'name@<ISO time>') or a "
                              f"FeatureSet. Got {type(ref).__name__} {ref!r}.")
    name, version, as_of = parse_ref(ref)
    return store.get(name, version, as_of=as_of)


def _first_commit(m: Manifest) -> datetime:
    """When a version became visible: its first committed file (its own ``created_at`` when it has none)."""
    stamps = [p.created_at for p in [*m.partitions, *m.errors]]
    return min(parse_as_of(s) for s in stamps) if stamps else parse_as_of(m.created_at)


def snapshot(m: Manifest, t: datetime) -> Manifest | None:
    """``m`` as it was committed at ``t``: only partitions and error files created at or before it (None: nothing
    yet). Runs that had not started by ``t`` are left out too."""
    if _first_commit(m) > t:
        return None
    keep = [p for p in m.partitions if parse_as_of(p.created_at) <= t]
    errors = [p for p in m.errors if parse_as_of(p.created_at) <= t]
    runs = [r for r in m.runs if "started_at" not in r or parse_as_of(str(r["started_at"])) <= t]
    return dataclasses.replace(m, partitions=keep, errors=errors, runs=runs)


def get_as_of(store: "Store", name: str, version: int | None, as_of: Any) -> "FeatureSet":
    """``store.get(name, version, as_of=...)``: the snapshot of ``version`` (default: the newest version that had a
    commit at or before ``as_of``) as a read-only :class:`FeatureSet`."""
    from featurestore.query._featureset import FeatureSet

    t = parse_as_of(as_of)
    versions = list_versions(set_dir(store.root, name))
    if version is not None and int(version) not in versions:
        raise FeatureSetNotFoundError(f"Feature set {name!r} has no version {version}. Versions: {versions}.")
    candidates = [int(version)] if version is not None else list(reversed(versions))
    first: datetime | None = None
    for v in candidates:
        vdir = version_dir(store.root, name, v)
        m = read_manifest(vdir)
        snap = snapshot(m, t)
        if snap is not None:
            return FeatureSet(vdir, snap, latest=False, as_of=format_as_of(t))
        began = _first_commit(m)
        first = began if first is None or began < first else first
    what = f"{name!r} v{version}" if version is not None else repr(name)
    raise FeatureSetNotFoundError(
        f"Feature set {what} did not exist at {format_as_of(t)}: its first commit was at "
        f"{format_as_of(first) if first else 'an unknown time'}.\n  Help: pass a later as_of."
    )


def entries_as_of(entries: list[Entry], broken: list[Broken], as_of: Any) -> tuple[list[Entry], list[Broken]]:
    """The catalog's entries as they were at ``as_of``: each version's snapshot, the newest visible one as latest.

    A version whose manifest cannot be read has no known commit time; if it is newer than every version visible at
    ``as_of``, it stays the name's view (which raises its reason), so a damaged set never quietly shows older rows.
    """
    t = parse_as_of(as_of)
    snaps = [(vdir, snap) for vdir, m, _ in entries if (snap := snapshot(m, t)) is not None]
    newest: dict[str, int] = {}
    for _, m in snaps:
        newest[m.name] = max(newest.get(m.name, 0), m.version)
    bad = [(n, v, latest and v > newest.get(n, 0), why) for n, v, latest, why in broken]
    shadowed = {n for n, _, latest, _ in bad if latest}
    out = [(vdir, m, m.version == newest[m.name] and m.name not in shadowed) for vdir, m in snaps]
    return out, bad


def time_views(query: str, store: "Store") -> list[tuple[str, str]]:
    """(view name, SELECT) for every quoted ``"name@<time>"`` the query mentions: the set as committed then.

    A reference that cannot be resolved (a bad time, a set that did not exist yet) raises here when DuckDB's parser
    confirms the query reads it as a table; otherwise (text that merely looks like one, inside a string) it becomes a
    view that raises the reason only if read.
    """
    found_views = {m.group(0): m for m in _TIME_VIEW.finditer(query)}.values()
    if not found_views:
        return []
    import duckdb

    try:
        tables: set[str] | None = duckdb.get_table_names(query)
    except duckdb.Error:  # several statements, or one it cannot parse alone: resolve lazily
        tables = None
    out = []
    for found in found_views:
        view = f"{found.group('name')}@{found.group('time')}"
        try:
            fs = store.get(found.group("name"), as_of=found.group("time"))
            sql = _select_sql(fs.path, fs.manifest)
        except FeatureStoreError as exc:
            if tables is not None and view in tables:
                raise
            sql = "SELECT error(" + "'" + str(exc).split("\n")[0].replace("'", "''") + "') AS broken"
        out.append((view, sql))
    return out


def define_time_views(con: Any, views: list[tuple[str, str]]) -> None:
    for view, sql in views:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident(view)} AS {sql}")


# -- the history of every key (point-in-time joins) -----------------------------------------------------------------
COMMIT = "__featurestore_commit"


def read_history(fs: "FeatureSet", columns: list[str] | None = None) -> pa.Table:
    """Every committed row of ``fs`` (not only the newest per key), with ``event_time``, one row per (key,
    event_time): where a key was written twice for the same event time, the later commit wins (``_newest``).

    Rows whose ``event_time`` is null are left out (they belong to no moment), with a warning that counts them. A set
    without an ``event_time`` column is refused with the fix.
    """
    m = fs.manifest
    if EVENT_TIME not in m.columns:
        raise ValidationError(
            f"Feature set {m.name!r} v{m.version} has no {EVENT_TIME!r} column, so it cannot say which embedding was "
            f"current at a given time.\n  Help: write rows with an {EVENT_TIME!r} timestamp column (store.write or "
            "pipelines.embed with a source that has one), or join without as_of."
        )
    wanted = list(dict.fromkeys([*m.key, EVENT_TIME, *(columns if columns is not None else [EMBEDDING])]))
    tables = []
    for p in m.partitions:
        t = read_partition(fs.path, m, p, wanted)
        tables.append(t.append_column(COMMIT, pa.repeat(pa.scalar(commit_number(p.file), pa.int64()), t.num_rows)))
    if not tables:
        import pyarrow.parquet as pq

        return pq.read_schema(fs.path / SCHEMA_FILE).empty_table().select(wanted)
    table = pa.concat_tables(tables)
    nulls = table.column(EVENT_TIME).null_count
    if nulls:
        warnings.warn(f"{nulls} of {table.num_rows} rows of {m.name!r} v{m.version} have no {EVENT_TIME} and are left "
                      "out of its point-in-time history.", stacklevel=3)
        table = table.filter(pc.is_valid(table.column(EVENT_TIME)))
    # One row per (key, event_time): the newest commit's. Sorting by commit (descending) then keeping first seen.
    order = np.argsort(-table.column(COMMIT).to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    ident = pa.table({"k": key_tokens(table, m.key), "t": table.column(EVENT_TIME),
                      "i": pa.array(np.arange(table.num_rows))})
    first = ident.group_by(["k", "t"], use_threads=False).aggregate([("i", "min")]).column("i_min")
    return table.take(pc.sort_indices(first)).drop_columns([COMMIT])


"""The DuckDB catalog: views over the committed Parquet partitions, rebuilt from the manifests.

The same view definitions serve two connections. Readers get a fresh in-memory DuckDB (no file lock, so any number of
readers never block a writer), and ``catalog.duckdb`` persists them for people who open the store with the DuckDB CLI
or a BI tool. The file is only an index: ``featurestore doctor --rebuild`` (or the next commit) rewrites it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.storage._error_rows import KIND, MESSAGE, REASON, error_rows_sql
from featurestore.storage._format import EMBEDDING, RUN_ID
from featurestore.storage._lock import FileLock
from featurestore.storage._manifest import SCHEMA_FILE, Manifest
from featurestore.storage._newest import commit_number_sql, newest_per_key_sql

CATALOG = "catalog.duckdb"
STALE_MARKER = "catalog.stale"
TEMP_DIR = ".duckdb-tmp"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def version_view(name: str, version: int) -> str:
    return f"{name}@v{version}"


def errors_view(name: str) -> str:
    return f"{name}@errors"


# Every value below that comes from a manifest was type- and range-checked by ``Manifest.from_dict`` (ints are ints,
# file names match a strict pattern); identifiers are still quoted and strings escaped, so nothing read from disk
# can change the statement's meaning.
_FILE_COLUMN = "__featurestore_file"  # DuckDB's filename column, under a name no user column has


def _paths(version_dir: Path, files: list[str], base: Path | None) -> list[str]:
    """File paths for a view: absolute, or relative to ``base`` (the store root) for the persisted catalog."""
    folder = version_dir if base is None else version_dir.relative_to(base)
    return [(folder / f).as_posix() for f in files]


def _file_list(paths: list[str]) -> str:
    return "[" + ", ".join(sql_str(f) for f in paths) + "]"


# Which row of a key is the row: the newest commit's (``_newest``, shared with the Python readers).
_COMMIT = commit_number_sql(quote_ident(_FILE_COLUMN))


def _select_sql(version_dir: Path, m: Manifest, base: Path | None = None) -> str:
    """A SELECT over one version's partitions: embedding cast to FLOAT[dim], one row per key (newest wins)."""
    files = [SCHEMA_FILE] + [p.file for p in m.partitions]
    paths = _paths(version_dir, files, base)
    cast = f"{quote_ident(EMBEDDING)}::FLOAT[{int(m.dim)}] AS {quote_ident(EMBEDDING)}"
    projection = ", ".join(cast if c == EMBEDDING else quote_ident(c) for c in m.columns)
    if not m.has_updates:
        return f"SELECT {projection} FROM read_parquet({_file_list(paths)})"
    return (
        f"SELECT {projection} FROM read_parquet({_file_list(paths)}, filename = {sql_str(_FILE_COLUMN)}) "
        + newest_per_key_sql([quote_ident(k) for k in m.key], quote_ident(_FILE_COLUMN))
    )


def errors_sql(version_dir: Path, m: Manifest, base: Path | None = None) -> str:
    """The current error of each key: its newest error row, unless a row for that key was committed after it.

    A rerun that fails again on a row adds a new error file, and a row fixed later succeeds: neither may show
    a stale or repeated error. Each row has ``kind``, ``message`` and ``reason`` (see ``_error_rows``). A version
    without errors gives the same columns and no rows, so ``"name@errors"`` exists for every feature set.
    """
    keys = [quote_ident(k) for k in m.key]
    if not m.errors:  # the key columns with their types come from the version's schema file
        [schema] = _paths(version_dir, [SCHEMA_FILE], base)
        return (f"SELECT {int(m.version)} AS version, {', '.join(keys)}, NULL::VARCHAR AS {KIND}, "
                f"NULL::VARCHAR AS {MESSAGE}, NULL::VARCHAR AS {REASON}, NULL::VARCHAR AS {quote_ident(RUN_ID)} "
                f"FROM read_parquet({_file_list([schema])}) WHERE false")
    err_files = [p.file for p in m.errors]
    err_paths = _paths(version_dir, err_files, base)
    rows = error_rows_sql(f"read_parquet({_file_list(err_paths)}, union_by_name = true, "
                          f"filename = {sql_str(_FILE_COLUMN)})")
    # Rows whose key could not be read (a broken source line) have null keys: each keeps its own kind and message.
    unkeyed = " AND ".join(f"{k} IS NULL" for k in keys)
    errors = (
        f"SELECT *, {_COMMIT} AS __seq FROM ({rows}) "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)}, CASE WHEN {unkeyed} THEN {KIND} END, "
        f"CASE WHEN {unkeyed} THEN {MESSAGE} END ORDER BY __seq DESC) = 1"
    )
    select = f"SELECT {int(m.version)} AS version, e.* EXCLUDE ({quote_ident(_FILE_COLUMN)}, __seq) FROM ({errors}) e"
    if not m.partitions:
        return select
    row_files = [p.file for p in m.partitions]
    row_paths = _paths(version_dir, row_files, base)
    committed = (f"SELECT {', '.join(keys)}, {_COMMIT} AS __seq FROM "
                 f"read_parquet({_file_list(row_paths)}, filename = {sql_str(_FILE_COLUMN)})")
    same_key = " AND ".join(f"r.{k} = e.{k}" for k in keys)
    return f"{select} WHERE NOT EXISTS (SELECT 1 FROM ({committed}) r WHERE {same_key} AND r.__seq > e.__seq)"


def metadata_tables(entries: Iterable[tuple[Path, Manifest, bool]]) -> dict[str, pa.Table]:
    """``feature_sets`` (one row per version) and ``runs`` (one row per embedding or write run)."""
    sets: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for _, m, latest in entries:
        sets.append({
            "name": m.name, "version": m.version, "latest": latest, "view": m.name if latest else version_view(m.name, m.version),
            "encoder": str(m.spec.get("encoder", "")), "dim": m.dim, "dtype": m.dtype,
            "metric": str(m.spec.get("metric", "")), "key": ",".join(m.key), "partitions": len(m.partitions),
            "rows_written": m.rows_written, "has_updates": m.has_updates, "created_at": m.created_at,
        })
        for r in m.runs:
            runs.append({"name": m.name, "version": m.version, **{k: r.get(k) for k in _RUN_FIELDS}})
    set_schema = pa.schema([
        ("name", pa.string()), ("version", pa.int64()), ("latest", pa.bool_()), ("view", pa.string()),
        ("encoder", pa.string()), ("dim", pa.int64()), ("dtype", pa.string()), ("metric", pa.string()),
        ("key", pa.string()), ("partitions", pa.int64()), ("rows_written", pa.int64()), ("has_updates", pa.bool_()),
        ("created_at", pa.string()),
    ])
    run_schema = pa.schema([("name", pa.string()), ("version", pa.int64())] + [(k, t) for k, t in _RUN_FIELDS.items()])
    return {
        "feature_sets": pa.Table.from_pylist(sets, schema=set_schema),
        "runs": pa.Table.from_pylist(runs, schema=run_schema),
    }


_RUN_FIELDS = {
    "run_id": pa.string(), "status": pa.string(), "started_at": pa.string(), "finished_at": pa.string(),
    "source": pa.string(), "encoder": pa.string(), "rows_read": pa.int64(), "rows_written": pa.int64(),
    "rows_skipped": pa.int64(), "rows_failed": pa.int64(), "seconds": pa.float64(), "rows_per_s": pa.float64(),
}


Broken = tuple[str, int, bool, str]  # (name, version, is latest, why it cannot be read)


def view_names(entries: list[tuple[Path, Manifest, bool]], broken: list[Broken] = ()) -> set[str]:
    """Every view :func:`define_views` makes for these versions: latest, per version, errors, and broken ones."""
    names = {m.name for _, m, latest in entries if latest} | {version_view(m.name, m.version) for _, m, _ in entries}
    names |= {errors_view(m.name) for _, m, _ in entries}
    names |= {version_view(n, v) for n, v, _, _ in broken}
    return names | {v for n, _, latest, _ in broken if latest for v in (n, errors_view(n))}


def define_views(con: Any, entries: list[tuple[Path, Manifest, bool]], *, persistent: bool,
                 base: Path | None = None, broken: list[Broken] = ()) -> None:
    """Create every view and metadata table on ``con``; ``entries`` are (version dir, manifest, is_latest).

    ``base``: write file paths relative to it (the persisted catalog, so a copied or moved store never reads the
    original's files); None writes absolute paths (the private in-memory readers, built fresh for each query).
    """
    for name, version, latest, message in broken:  # querying it says what is wrong, instead of "does not exist"
        sql = f"SELECT error({sql_str(message)}) AS broken"
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(version_view(name, version))} AS {sql}")
        if latest:
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {sql}")
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(errors_view(name))} AS {sql}")
    by_name: dict[str, list[tuple[Path, Manifest]]] = {}
    for vdir, m, latest in entries:
        sql = _select_sql(vdir, m, base)
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(version_view(m.name, m.version))} AS {sql}")
        if latest:
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(m.name)} AS {sql}")
        by_name.setdefault(m.name, []).append((vdir, m))
    for name, versions in by_name.items():
        parts = [errors_sql(vdir, m, base) for vdir, m in versions]
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(errors_view(name))} AS " + " UNION ALL BY NAME ".join(parts))
    for table_name, table in metadata_tables(entries).items():
        con.register("_fs_tmp", table)
        kind = "TABLE" if persistent else "TEMP TABLE"
        con.execute(f"CREATE OR REPLACE {kind} {table_name} AS SELECT * FROM _fs_tmp")
        con.unregister("_fs_tmp")


def fence(con: Any, root: Path, *, memory_limit: str | None = None, lock: bool = True, relative: bool = False) -> None:
    """Confine ``con`` to the store's files before anything else runs on it.

    Only ``root`` is reachable (DuckDB's spill folder is moved inside it, since DuckDB adds the temp folder to the
    allowed directories), no extension or remote file can be loaded, and ``lock`` freezes the settings so a query
    cannot undo them. ``relative`` also allows the store-relative ``sets/`` paths of the persisted catalog (resolved
    through ``file_search_path``).
    """
    root = root.resolve()
    con.execute(f"SET temp_directory = {sql_str(str(root / TEMP_DIR))}")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = {sql_str(str(memory_limit))}")
    allowed = [str(root) + "/"] + (["sets/"] if relative else [])
    con.execute(f"SET allowed_directories = [{', '.join(sql_str(a) for a in allowed)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    if lock:
        con.execute("SET lock_configuration = true")


def reader_connection(root: Path, entries: list[tuple[Path, Manifest, bool]], *, read_only: bool = True,
                      memory_limit: str | None = None, broken: list[Broken] = ()) -> Any:
    """An in-memory DuckDB with the store's views. Read-only mode fences it to the store first (see :func:`fence`)."""
    import duckdb

    con = duckdb.connect(":memory:")
    if read_only:
        fence(con, root, memory_limit=memory_limit)
    define_views(con, entries, persistent=False, broken=broken)
    return con


def write_catalog(root: Path, entries: list[tuple[Path, Manifest, bool]], *, timeout: float = 10.0,
                  broken: list[Broken] = ()) -> bool:
    """Rewrite ``catalog.duckdb`` from the manifests. Returns False (and leaves a stale marker) if it is held open.

    Another process (a DuckDB CLI, a notebook) may hold the file read-write; committed data never depends on the
    catalog, so we retry briefly and otherwise mark it stale for the next writer or ``doctor --rebuild``.
    """
    import duckdb

    marker = root / STALE_MARKER
    with FileLock(root / ".catalog.lock", timeout=timeout, what="the catalog"):
        deadline = time.monotonic() + timeout
        while True:
            try:
                con = duckdb.connect(str(root / CATALOG))
                break
            except duckdb.IOException as exc:
                if time.monotonic() >= deadline:
                    marker.touch()
                    warnings.warn(
                        f"Could not update {root / CATALOG} ({exc}). The data is committed; the catalog will be "
                        "rebuilt by the next write or by `featurestore doctor --rebuild`.",
                        stacklevel=3,
                    )
                    return False
                time.sleep(0.2)
        try:
            # Relative paths resolve against the store root here; other clients set the same search path.
            con.execute(f"SET file_search_path = {sql_str(str(root.resolve()))}")
            fence(con, root, lock=False, relative=True)
            con.execute("BEGIN TRANSACTION")
            wanted = view_names(entries, broken)
            existing = [r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'").fetchall()]
            for view in existing:
                if view not in wanted:
                    con.execute(f"DROP VIEW {quote_ident(view)}")
            define_views(con, entries, persistent=True, base=root, broken=broken)
            con.execute("CREATE OR REPLACE TABLE catalog_meta AS SELECT ? AS root, ? AS rebuilt_at, 'relative' AS paths",
                        [str(root.resolve()), time.time()])
            con.execute("COMMIT")
        finally:
            con.close()
    marker.unlink(missing_ok=True)
    return True

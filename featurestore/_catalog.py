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

from ._lock import FileLock
from ._manifest import Manifest
from ._format import EMBEDDING

CATALOG = "catalog.duckdb"
STALE_MARKER = "catalog.stale"
SCHEMA_FILE = "schema.parquet"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def version_view(name: str, version: int) -> str:
    return f"{name}@v{version}"


def errors_view(name: str) -> str:
    return f"{name}@errors"


def _select_sql(version_dir: Path, m: Manifest) -> str:
    """A SELECT over one version's partitions: embedding cast to FLOAT[dim], one row per key (newest wins)."""
    files = [str(version_dir / SCHEMA_FILE)] + [str(version_dir / p.file) for p in m.partitions]
    file_list = "[" + ", ".join(_sql_str(f) for f in files) + "]"
    cast = f"{quote_ident(EMBEDDING)}::FLOAT[{m.dim}] AS {quote_ident(EMBEDDING)}"
    projection = ", ".join(cast if c == EMBEDDING else quote_ident(c) for c in m.columns)
    if not m.has_updates:
        return f"SELECT {projection} FROM read_parquet({file_list})"
    order = " ".join(f"WHEN {_sql_str(f)} THEN {i}" for i, f in enumerate(files))
    keys = ", ".join(quote_ident(k) for k in m.key)
    return (
        f"SELECT {projection} FROM read_parquet({file_list}, filename = true) "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY CASE filename {order} END DESC) = 1"
    )


def _errors_sql(version_dir: Path, m: Manifest) -> str | None:
    if not m.errors:
        return None
    files = "[" + ", ".join(_sql_str(str(version_dir / p.file)) for p in m.errors) + "]"
    return f"SELECT {m.version} AS version, * FROM read_parquet({files}, union_by_name = true)"


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


def define_views(con: Any, entries: list[tuple[Path, Manifest, bool]], *, persistent: bool) -> None:
    """Create every view and metadata table on ``con``; ``entries`` are (version dir, manifest, is_latest)."""
    by_name: dict[str, list[tuple[Path, Manifest]]] = {}
    for vdir, m, latest in entries:
        sql = _select_sql(vdir, m)
        con.execute(f"CREATE OR REPLACE VIEW {quote_ident(version_view(m.name, m.version))} AS {sql}")
        if latest:
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(m.name)} AS {sql}")
        by_name.setdefault(m.name, []).append((vdir, m))
    for name, versions in by_name.items():
        parts = [s for vdir, m in versions if (s := _errors_sql(vdir, m))]
        if parts:
            con.execute(f"CREATE OR REPLACE VIEW {quote_ident(errors_view(name))} AS " + " UNION ALL BY NAME ".join(parts))
    for table_name, table in metadata_tables(entries).items():
        con.register("_fs_tmp", table)
        kind = "TABLE" if persistent else "TEMP TABLE"
        con.execute(f"CREATE OR REPLACE {kind} {table_name} AS SELECT * FROM _fs_tmp")
        con.unregister("_fs_tmp")


def reader_connection(root: Path, entries: list[tuple[Path, Manifest, bool]], *, read_only: bool = True) -> Any:
    """An in-memory DuckDB with the store's views. Read-only mode also fences the connection to the store's files."""
    import duckdb

    con = duckdb.connect(":memory:")
    define_views(con, entries, persistent=False)
    if read_only:
        con.execute(f"SET allowed_directories=[{_sql_str(str(root.resolve()) + '/')}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
    return con


def write_catalog(root: Path, entries: list[tuple[Path, Manifest, bool]], *, timeout: float = 10.0) -> bool:
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
            con.execute("BEGIN TRANSACTION")
            wanted = {m.name for _, m, latest in entries if latest}
            wanted |= {version_view(m.name, m.version) for _, m, _ in entries}
            wanted |= {errors_view(m.name) for _, m, _ in entries if m.errors}
            existing = [r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'").fetchall()]
            for view in existing:
                if view not in wanted:
                    con.execute(f"DROP VIEW {quote_ident(view)}")
            define_views(con, entries, persistent=True)
            con.execute("CREATE OR REPLACE TABLE catalog_meta AS SELECT ? AS root, ? AS rebuilt_at",
                        [str(root.resolve()), time.time()])
            con.execute("COMMIT")
        finally:
            con.close()
    marker.unlink(missing_ok=True)
    return True

"""Consistency checks: files against manifests, leftovers of crashed writers, and the catalog index."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from featurestore.errors import CorruptStoreError, LockTimeoutError
from featurestore.query._catalog import CATALOG, STALE_MARKER, version_view, view_names
from featurestore.storage import _leftovers
from featurestore.storage._atomic import file_crc32
from featurestore.storage._layout import MANIFEST, set_dir, sets_dir
from featurestore.storage._lock import feature_set_lock
from featurestore.storage._manifest import SCHEMA_FILE, Manifest
from featurestore.storage._partitions import check_schema

if TYPE_CHECKING:
    from featurestore._store import Store


@dataclass
class Finding:
    kind: str  # manifest | missing-file | size | checksum | row-count | schema | leftover | catalog
    path: str
    detail: str
    repaired: bool = False


@dataclass
class DoctorReport:
    sets_checked: int = 0
    partitions_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong, or everything found was repaired."""
        return all(f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sets_checked": self.sets_checked, "partitions_checked": self.partitions_checked,
                "findings": [asdict(f) for f in self.findings]}


def doctor(store: "Store", *, rebuild: bool = False, clean: bool = False, lock_timeout: float = 2.0) -> DoctorReport:
    """Check every committed partition (exists, size, CRC32, row count), list leftovers, check the catalog.

    ``clean`` removes leftovers under each feature set's write lock (so a live writer's temporary files are never
    touched); ``rebuild`` rewrites ``catalog.duckdb`` from the manifests.
    """
    report = DoctorReport()
    root = sets_dir(store.root)
    for set_path in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        report.sets_checked += 1
        leftovers: list[Path] = []
        for folder in _leftovers.version_folders(set_path):
            if folder.error is not None:  # report it; its files are left alone (they may be all that is left)
                report.findings.append(Finding("manifest", str(folder.path / MANIFEST), str(folder.error).split("\n")[0]))
            elif folder.manifest is not None:
                _check_version(folder.path, folder.manifest, report)
            leftovers += folder.leftovers
        if leftovers:
            repaired = clean and _clean(store, set_path.name, lock_timeout)
            for f in leftovers:
                detail = "uncommitted file of a crashed or running writer"
                if clean and not repaired:
                    detail += " (not removed: a writer holds the lock)"
                report.findings.append(Finding("leftover", str(f), detail, repaired=repaired))
    _check_catalog(store, report, rebuild)
    return report


def _check_version(vdir: Path, m: Manifest, report: DoctorReport) -> None:
    for p in m.partitions:
        report.partitions_checked += 1
        _check_partition(vdir / p.file, p, report, m)
    for p in m.errors:
        report.partitions_checked += 1
        _check_partition(vdir / p.file, p, report, None)
    if m.partitions and not (vdir / SCHEMA_FILE).is_file():
        report.findings.append(Finding("missing-file", str(vdir / SCHEMA_FILE), "schema file missing"))


def _clean(store: "Store", name: str, lock_timeout: float) -> bool:
    """Remove a feature set's leftovers under its write lock; False when a writer holds it."""
    try:
        with feature_set_lock(store.root, name, timeout=lock_timeout):
            # Found again under the lock: a partition listed as a leftover a moment ago may have been committed since.
            for folder in _leftovers.version_folders(set_dir(store.root, name)):
                _leftovers.remove(folder.leftovers)
    except LockTimeoutError:
        return False
    return True


def _check_partition(path: Path, p: Any, report: DoctorReport, m: Manifest | None) -> None:
    """Exists, size, CRC32, row count, and (for feature rows, ``m`` given) the schema and dim against the manifest."""
    if not path.is_file():
        report.findings.append(Finding("missing-file", str(path), "listed in the manifest but missing"))
        return
    size = path.stat().st_size
    if size != p.bytes:
        report.findings.append(Finding("size", str(path), f"{size} bytes on disk, manifest says {p.bytes}"))
        return
    crc = file_crc32(path)
    if crc != p.crc32:
        report.findings.append(Finding("checksum", str(path), f"CRC32 {crc:#010x} on disk, manifest says {p.crc32:#010x}"))
        return
    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is a finding, not a crash
        report.findings.append(Finding("checksum", str(path), f"not a readable Parquet file ({exc})"))
        return
    rows = meta.metadata.num_rows
    if rows != p.rows:
        report.findings.append(Finding("row-count", str(path), f"{rows} rows on disk, manifest says {p.rows}"))
        return
    if m is not None:
        try:
            check_schema(path, meta.schema_arrow, m)
        except CorruptStoreError as exc:
            report.findings.append(Finding("schema", str(path), str(exc).split("\n")[0]))


def _check_catalog(store: "Store", report: DoctorReport, rebuild: bool) -> None:
    problem = _catalog_problem(store)
    if problem is None:
        return
    repaired = bool(rebuild and store.rebuild_catalog())
    report.findings.append(Finding("catalog", str(store.root / CATALOG), problem, repaired=repaired))


def _catalog_problem(store: "Store") -> str | None:
    import duckdb

    path = store.root / CATALOG
    if not path.is_file():
        return "catalog missing (rebuild with --rebuild)"
    if (store.root / STALE_MARKER).exists():
        return "catalog marked stale: a writer could not update it"
    entries, broken = store._entries()
    want = view_names(entries, broken)
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return f"catalog cannot be opened: {exc}"
    try:
        have = {r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'").fetchall()}
        meta = con.execute("SELECT * FROM catalog_meta")
        paths = dict(zip([d[0] for d in meta.description], meta.fetchone() or ())).get("paths")
        # A view lists its files: compare each with what the manifests say now.
        sql = dict(con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
    except duckdb.Error as exc:
        return f"catalog unreadable: {exc}"
    finally:
        con.close()
    if paths != "relative":  # older catalogs held absolute paths: a moved copy would read the original's files
        return "catalog holds absolute file paths (written by an older featurestore); rebuild with --rebuild"
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        return f"catalog views differ from the manifests (missing {missing}, unexpected {extra})"
    for _, m, _ in entries:
        text = sql.get(version_view(m.name, m.version), "")
        if any(p.file not in text for p in m.partitions):
            return f"catalog view of {m.name!r} v{m.version} misses committed partitions"
    return None

"""Appending to a feature set: validate, write a partition atomically, commit it in the manifest.

A :class:`Writer` holds the feature set's lock for a whole run. Each :meth:`Writer.append` is one commit:
the partition is written under a temporary name, fsynced and renamed, and only then listed in the manifest
(itself replaced atomically). A crash at any moment leaves either a whole committed partition or nothing
that counts; leftovers are removed when the next writer takes the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import _format as fmt
from ._featureset import key_tokens, read_latest
from ._lock import FileLock
from ._manifest import (MANIFEST, SCHEMA_FILE, Manifest, Partition, file_crc32, fsync_dir, list_versions, now,
                        read_manifest, set_dir, write_manifest)
from .errors import CorruptStoreError, SpecMismatchError, ValidationError

if TYPE_CHECKING:
    from ._store import Store

_CATALOG_REFRESH_S = 5.0
_SLICE_BYTES = 64 * 2**20  # writes above this are split across threads


def _compression(table: pa.Table) -> dict[str, str]:
    # Float vectors barely compress and decode 2-3x faster uncompressed; keys and hashes compress well.
    out = {}
    for name in table.column_names:
        out[name] = "none" if name == fmt.EMBEDDING else "zstd"
    return out


def write_parquet(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` via a temporary file and a rename, fsyncing both; returns the file's CRC32."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        pq.write_table(table, tmp, compression=_compression(table), write_page_checksum=True, use_dictionary=[
            c for c in table.column_names if c not in (fmt.EMBEDDING, fmt.CONTENT_HASH)])
        with ThreadPoolExecutor(max_workers=1) as pool:  # checksum from the page cache while fsync writes back
            crc = pool.submit(file_crc32, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            checksum = crc.result()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return checksum


class Writer:
    """The one writer of a feature set for the duration of a ``with`` block (see :meth:`Store.writer`)."""

    def __init__(self, store: "Store", name: str, *, key: str | Sequence[str] = "id",
                 spec: Mapping[str, Any] | None = None, version: int | str | None = None,
                 provenance: Mapping[str, Any] | None = None, run_id: str | None = None,
                 lock_timeout: float = 60.0, embedding: str = fmt.EMBEDDING,
                 run_info: Mapping[str, Any] | None = None) -> None:
        if spec is None or not isinstance(spec, Mapping) or not isinstance(spec.get("encoder"), str):
            raise ValidationError(
                "A feature set needs a spec with an 'encoder' name, e.g. spec={'encoder': 'external:my-model', "
                "'metric': 'cosine'}."
            )
        if not (version is None or version in ("new", "auto") or (isinstance(version, int) and version >= 1)):
            raise ValueError(f"version must be None, 'new', 'auto' or an int >= 1. Got {version!r} instead.")
        self.store = store
        self.name = name
        self.key = [key] if isinstance(key, str) else list(key)
        if not self.key:
            raise ValidationError("At least one key column is needed.")
        self.user_spec = dict(spec)
        self.requested_version = version
        self.provenance = dict(provenance or {})
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.embedding = embedding
        self.set_dir = set_dir(store.root, name)
        self._lock = FileLock(self.set_dir / ".lock", timeout=lock_timeout, what=f"feature set {name!r}")
        self.manifest: Manifest | None = None
        self.version_dir: Path | None = None
        self._committed: dict[Any, str] | None = None
        self._last_catalog = 0.0
        self.stats = {"rows_written": 0, "rows_skipped": 0, "rows_failed": 0, "partitions": 0}
        self.run: dict[str, Any] = {"run_id": self.run_id, "status": "running", "started_at": now(),
                                    **dict(run_info or {})}
        self._t0 = time.perf_counter()

    # -- lock and leftovers ------------------------------------------------------------------------------------
    def __enter__(self) -> "Writer":
        self._lock.acquire()
        try:
            self._clean_leftovers()
            if "dim" in self.user_spec:
                dim = self.user_spec["dim"]
                if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
                    raise ValidationError(f"The spec's 'dim' must be an int >= 1. Got {dim!r} instead.")
                self._resolve(int(dim), self.user_spec.get("dtype"))
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        try:
            status = "ok" if exc_type is None else ("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
            self.finish(status)
        finally:
            self._lock.release()

    def _clean_leftovers(self) -> None:
        """Remove what crashed writers left: temp files, renamed-but-uncommitted partitions, half-made versions."""
        if not self.set_dir.is_dir():
            return
        for vdir in self.set_dir.iterdir():
            if not vdir.is_dir() or not vdir.name.startswith("v"):
                continue
            manifest_path = vdir / MANIFEST
            if not manifest_path.is_file():
                shutil.rmtree(vdir)
                continue
            try:
                m = read_manifest(vdir)
            except CorruptStoreError as exc:  # never delete files of a version we cannot read
                warnings.warn(f"Not cleaning {vdir}: {exc}", stacklevel=3)
                continue
            known = {p.file for p in m.partitions} | {p.file for p in m.errors} | {SCHEMA_FILE, MANIFEST}
            for f in vdir.iterdir():
                if f.name not in known and (f.name.startswith(".tmp-") or f.suffix == ".parquet"):
                    f.unlink()
            changed = False
            for r in m.runs:
                if r.get("status") == "running":  # its writer died holding the lock we now hold
                    # Its record was saved with its last commit; count from the partitions themselves to be exact.
                    r["status"] = "killed"
                    r["rows_written"] = sum(p.rows for p in m.partitions if p.run_id == r["run_id"])
                    r["rows_failed"] = sum(p.rows for p in m.errors if p.run_id == r["run_id"])
                    changed = True
            if changed:
                write_manifest(vdir, m)

    # -- choosing the version ----------------------------------------------------------------------------------
    def _full_spec(self, dim: int, dtype: str | None) -> dict[str, Any]:
        spec = dict(self.user_spec)
        spec.setdefault("metric", "cosine")
        spec["dim"] = dim
        spec["dtype"] = dtype or spec.get("dtype") or "float32"
        if spec["dtype"] not in fmt.DTYPES:
            raise ValidationError(f"Unsupported dtype {spec['dtype']!r} in the spec; expected one of {sorted(fmt.DTYPES)}.")
        return json.loads(json.dumps(spec, sort_keys=True, default=str))

    def _resolve(self, dim: int, dtype: str | None) -> None:
        spec = self._full_spec(dim, dtype)
        versions = list_versions(self.set_dir)
        req = self.requested_version
        target: int | None = None
        if req == "new" or not versions:
            if isinstance(req, int) and req not in versions:
                raise SpecMismatchError(f"Feature set {self.name!r} has no version {req}. Versions: {versions or 'none'}.")
        elif req == "auto":
            for v in reversed(versions):
                m = read_manifest(self.set_dir / f"v{v}")
                if _same_except(m.spec, spec, "dim") and m.key == self.key:
                    if m.dim != dim:
                        raise ValidationError(
                            f"Cannot append to {self.name!r} v{v}: its spec has dim={m.dim} but the rows have dim={dim}. "
                            "The dim belongs to the spec; rows of another dim are refused."
                        )
                    target = v
                    break
        else:
            v = versions[-1] if req is None else int(req)
            if v not in versions:
                raise SpecMismatchError(f"Feature set {self.name!r} has no version {v}. Versions: {versions}.")
            m = read_manifest(self.set_dir / f"v{v}")
            self._check_compatible(m, spec, dim)
            target = v
        if target is None:
            self._create_version((versions[-1] + 1) if versions else 1, spec)
        else:
            self.version_dir = self.set_dir / f"v{target}"
            self.manifest = read_manifest(self.version_dir)

    def _check_compatible(self, m: Manifest, spec: dict[str, Any], dim: int) -> None:
        where = f"{self.name!r} v{m.version}"
        if m.dim != dim:
            raise ValidationError(
                f"Cannot append to {where}: its spec has dim={m.dim} but the rows have dim={dim}.\n"
                "  Help: the dim belongs to the spec; rows of another dim are refused."
            )
        if m.key != self.key:
            raise SpecMismatchError(f"Cannot append to {where}: it is keyed by {m.key}, not {self.key}.")
        if m.spec != spec:
            diff = sorted(k for k in set(m.spec) | set(spec) if m.spec.get(k) != spec.get(k))
            details = ", ".join(f"{k}: {m.spec.get(k)!r} -> {spec.get(k)!r}" for k in diff)
            raise SpecMismatchError(
                f"Cannot append to {where}: its encoder spec differs ({details}).\n"
                "  Help: a different encoder spec makes a new version; pass version=\"new\" (or \"auto\")."
            )

    def _create_version(self, version: int, spec: dict[str, Any]) -> None:
        # The folder is made by the first commit (see _ensure_folder): a write of no rows leaves nothing behind.
        self.version_dir = self.set_dir / f"v{version}"
        self.manifest = Manifest(name=self.name, version=version, key=self.key, dim=spec["dim"],
                                 dtype=spec["dtype"], spec=spec, columns={}, provenance=self.provenance)
        # The manifest is written with the first commit: until then the folder is a leftover to be cleaned.

    def _ensure_folder(self) -> None:
        self.version_dir.mkdir(parents=True, exist_ok=True)

    # -- committed rows, for resume and idempotence ------------------------------------------------------------
    def committed_hashes(self) -> dict[Any, str]:
        """Key -> content_hash of the rows this version holds now (the newest row per key)."""
        if self._committed is None:
            self._committed = {}
            if self.manifest is not None and self.manifest.partitions:
                table = read_latest(self.version_dir, self.manifest, columns=[fmt.CONTENT_HASH])
                tokens = key_tokens(table, self.key).to_pylist()
                self._committed = dict(zip(tokens, table.column(fmt.CONTENT_HASH).to_pylist()))
        return self._committed

    # -- appending ---------------------------------------------------------------------------------------------
    def prepare(self, data: Any) -> pa.Table:
        """Validate rows and return them in the partition layout (no I/O): wrong input fails before anything is written."""
        table = fmt.to_table(data, embedding=self.embedding)
        fmt.check_keys(table, self.key)
        dim = self.manifest.dim if self.manifest else self.user_spec.get("dim")
        dtype = self.manifest.dtype if self.manifest else self.user_spec.get("dtype")
        table = fmt.normalize_embedding(table, self.key, dim=dim, dtype=dtype)
        dim = table.schema.field(fmt.EMBEDDING).type.list_size
        if self.manifest is None:
            value_type = table.schema.field(fmt.EMBEDDING).type.value_type
            self._resolve(dim, dtype or ("float16" if pa.types.is_float16(value_type) else "float32"))
        if fmt.CONTENT_HASH in table.column_names:
            t = table.schema.field(fmt.CONTENT_HASH).type
            if not pa.types.is_string(t):
                raise ValidationError(f"Column {fmt.CONTENT_HASH!r} must hold strings; got {t}.")
            nulls = np.flatnonzero(table.column(fmt.CONTENT_HASH).is_null().to_numpy(zero_copy_only=False))
            if len(nulls):
                raise ValidationError(f"{len(nulls)} row(s) have a null content_hash: {fmt.describe_keys(table, self.key, nulls)}.")
        else:
            table = table.append_column(fmt.CONTENT_HASH, fmt.vector_hashes(table.column(fmt.EMBEDDING), dim))
        if fmt.EVENT_TIME in table.column_names and not pa.types.is_timestamp(table.schema.field(fmt.EVENT_TIME).type):
            raise ValidationError(f"Column {fmt.EVENT_TIME!r} must be a timestamp; got {table.schema.field(fmt.EVENT_TIME).type}.")
        if fmt.RUN_ID in table.column_names:
            table = table.drop_columns([fmt.RUN_ID])
        extras = [c for c in table.column_names if c not in self.key and c not in fmt.SYSTEM_COLUMNS]
        for c in extras:
            t = table.schema.field(c).type
            if pa.types.is_nested(t) and c != fmt.EMBEDDING:
                raise ValidationError(f"Extra column {c!r} has nested type {t}; only scalar extra columns are stored.")
        order = [*self.key, fmt.CONTENT_HASH, fmt.EMBEDDING]
        if fmt.EVENT_TIME in table.column_names:
            order.append(fmt.EVENT_TIME)
        table = table.select(order + extras)
        table = table.append_column(fmt.RUN_ID, pa.repeat(pa.scalar(self.run_id, pa.string()), table.num_rows))
        columns = {f.name: str(f.type) for f in table.schema}
        if self.manifest.columns and columns != self.manifest.columns:
            diff = sorted(k for k in set(columns) | set(self.manifest.columns)
                          if columns.get(k) != self.manifest.columns.get(k))
            details = ", ".join(f"{k}: {self.manifest.columns.get(k, 'missing')} -> {columns.get(k, 'missing')}" for k in diff)
            raise ValidationError(
                f"Cannot append to {self.name!r} v{self.manifest.version}: the columns differ from its partitions "
                f"(wrong dtype or columns: {details})."
            )
        return table

    def append(self, data: Any) -> int:
        """Validate and commit ``data`` as one partition; rows already stored with the same content are skipped.

        Returns the number of rows written.
        """
        table = self.prepare(data)
        committed = self.committed_hashes()
        updates = False
        if committed and table.num_rows:
            tokens = key_tokens(table, self.key).to_pylist()
            hashes = table.column(fmt.CONTENT_HASH).to_pylist()
            keep = np.fromiter((committed.get(t) != h for t, h in zip(tokens, hashes)), dtype=bool, count=len(tokens))
            updates = any(t in committed for t, k in zip(tokens, keep) if k)
            skipped = int((~keep).sum())
            if skipped:  # only then: a job's screening thread counts its own skips into the same dict
                table = table.filter(pa.array(keep))
                self.stats["rows_skipped"] += skipped
        if table.num_rows == 0:
            return 0
        self._commit(table, updates=updates)
        if self._committed is not None:
            tokens = key_tokens(table, self.key).to_pylist()
            self._committed.update(zip(tokens, table.column(fmt.CONTENT_HASH).to_pylist()))
        return table.num_rows

    def record_errors(self, errors: pa.Table) -> int:
        """Store rows that could not be embedded (key columns, ``reason``, optional ``detail``) for this run."""
        if errors.num_rows == 0:
            return 0
        if self.manifest is None:
            raise ValidationError("Errors can only be recorded once the version is known (after the first append or with a dim in the spec).")
        errors = errors.append_column(fmt.RUN_ID, pa.array([self.run_id] * errors.num_rows, pa.string()))
        m = self.manifest
        self._ensure_folder()
        path = self.version_dir / f"errors-{self.run_id}-{m.next_part:05d}.parquet"
        if not m.columns:  # every row so far failed: the feature rows will have the errors' keys and the spec's vectors
            keys = [errors.schema.field(k) for k in self.key]
            schema = pa.schema([*keys, pa.field(fmt.CONTENT_HASH, pa.string()),
                                pa.field(fmt.EMBEDDING, pa.list_(fmt.DTYPES[m.dtype], m.dim), nullable=False),
                                pa.field(fmt.RUN_ID, pa.string())])
            m.columns = {f.name: str(f.type) for f in schema}
            self._ensure_schema_file(schema.empty_table())
        crc = write_parquet(errors, path)
        m.errors.append(Partition(file=path.name, rows=errors.num_rows, bytes=path.stat().st_size,
                                  crc32=crc, run_id=self.run_id, created_at=now()))
        m.next_part += 1
        self.stats["rows_failed"] += errors.num_rows  # before the manifest: a kill right after still counts them
        self._write_manifest()
        return errors.num_rows

    def _ensure_schema_file(self, table: pa.Table | None) -> None:
        path = self.version_dir / SCHEMA_FILE
        if path.exists():
            return
        if table is None:
            raise ValidationError("The version's schema is unknown until its first rows are written.")
        write_parquet(table.schema.empty_table(), path)

    def _commit(self, table: pa.Table, *, updates: bool) -> None:
        m = self.manifest
        metadata = dict(table.schema.metadata or {})
        metadata[fmt.SPEC_METADATA_KEY] = json.dumps(m.spec, sort_keys=True).encode()
        metadata[fmt.SET_METADATA_KEY] = json.dumps({"name": m.name, "version": m.version, "key": m.key}).encode()
        metadata[fmt.PROVENANCE_METADATA_KEY] = json.dumps({**self.provenance, "run_id": self.run_id,
                                                           "created_at": now()}, default=str).encode()
        table = table.replace_schema_metadata(metadata)
        if not m.columns:
            m.columns = {f.name: str(f.type) for f in table.schema}
        self._ensure_folder()
        self._ensure_schema_file(table)
        # A big write is cut into slices written by parallel threads (pyarrow releases the GIL), then all are
        # committed by one manifest replace: still all-or-nothing, and about cores-times faster on large tables.
        n_slices = max(1, min(os.cpu_count() or 1, table.nbytes // _SLICE_BYTES))
        step = -(-table.num_rows // n_slices)
        slices = [table.slice(i, step) for i in range(0, table.num_rows, step)]
        paths = [self.version_dir / f"part-{self.run_id}-{m.next_part + i:05d}.parquet" for i in range(len(slices))]
        if len(slices) == 1:
            crcs = [write_parquet(slices[0], paths[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(slices)) as pool:
                crcs = list(pool.map(write_parquet, slices, paths))
        for part, path, crc in zip(slices, paths, crcs):
            m.partitions.append(Partition(file=path.name, rows=part.num_rows, bytes=path.stat().st_size,
                                          crc32=crc, run_id=self.run_id, created_at=now()))
        m.next_part += len(slices)
        m.has_updates = m.has_updates or updates
        self.stats["partitions"] += len(slices)
        self.stats["rows_written"] += table.num_rows  # counted in the same manifest write that commits the rows
        self._write_manifest()

    def _write_manifest(self) -> None:
        self._update_run()
        write_manifest(self.version_dir, self.manifest)
        if time.monotonic() - self._last_catalog > _CATALOG_REFRESH_S:
            self._refresh_catalog()

    def _stamp_run(self) -> None:
        """Copy the counters and elapsed seconds into the run record."""
        counters = {k: v for k, v in self.stats.items() if k != "partitions"}
        self.run.update(counters, seconds=round(time.perf_counter() - self._t0, 3))

    def _record_run(self) -> None:
        """Put the run record into the manifest (written by the caller)."""
        runs = self.manifest.runs
        for i, r in enumerate(runs):
            if r["run_id"] == self.run_id:
                runs[i] = dict(self.run)
                break
        else:
            runs.append(dict(self.run))

    def _update_run(self) -> None:
        self._stamp_run()
        self._record_run()

    def _refresh_catalog(self) -> None:
        self.store._write_catalog()
        self._last_catalog = time.monotonic()

    def finish(self, status: str = "ok", **info: Any) -> dict[str, Any]:
        """Close the run record (rows read/written/skipped/failed, seconds, rows/s) and refresh the catalog."""
        if self.run.get("status") != "running":
            return self.run
        self.run.update(info, status=status, finished_at=now())
        self._stamp_run()
        done = self.run.get("rows_read", self.stats["rows_written"] + self.stats["rows_skipped"])
        self.run["rows_per_s"] = round(done / max(self.run["seconds"], 1e-9), 1)
        # A run that stored nothing and saw nothing (refused input, an empty write) leaves the store byte for byte
        # as it was; one that skipped rows (a rerun) or committed any is recorded.
        touched = self.stats["partitions"] or self.stats["rows_failed"] or (status == "ok" and done)
        if touched and self.manifest is not None and (self.version_dir / MANIFEST).exists():
            self._record_run()
            write_manifest(self.version_dir, self.manifest)
            self._refresh_catalog()
        return self.run


def _same_except(a: Mapping[str, Any], b: Mapping[str, Any], *ignored: str) -> bool:
    keys = (set(a) | set(b)) - set(ignored)
    return all(a.get(k) == b.get(k) for k in keys)

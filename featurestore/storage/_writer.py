"""Appending to a feature set: prepare rows, write each partition atomically, commit it in the manifest.

A :class:`Writer` holds the feature set's lock for a whole run. Each :meth:`Writer.append` is one commit:
the partition is written under a temporary name, fsynced and renamed, and only then listed in the manifest
(itself replaced atomically). A crash at any moment leaves either a whole committed partition or nothing
that counts; leftovers (``_leftovers``) are removed when the next writer takes the lock, which also marks the dead
writer's run killed (``_runs``). Which version rows go to is chosen in ``_versions``.
"""

from __future__ import annotations

import json
import numbers
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.errors import ValidationError
from featurestore.storage import _format as fmt
from featurestore.storage import _leftovers, _runs
from featurestore.storage._atomic import file_crc32, fsync_path
from featurestore.storage._error_rows import error_table
from featurestore.storage._layout import MANIFEST, set_dir
from featurestore.storage._lock import feature_set_lock
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, Partition, now, write_manifest
from featurestore.storage._newest import partition_file
from featurestore.storage._partitions import read_latest
from featurestore.storage._stats import column_stats
from featurestore.storage._versions import VERSION_CONSTRAINT, choose_version, full_spec
from featurestore.utils._validation import Interval, validate_params

if TYPE_CHECKING:
    from featurestore._store import Store

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
    fsync_path(path.parent)
    return checksum


class Writer:
    """The one writer of a feature set for the duration of a ``with`` block (see :meth:`Store.writer`)."""

    _parameter_constraints: dict[str, list] = {
        "version": VERSION_CONSTRAINT,
        "lock_timeout": [Interval(numbers.Real, 0, None, closed="left")],
    }

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
        validate_params({"version": version, "lock_timeout": lock_timeout}, self._parameter_constraints, "Writer")
        self.store = store
        self.name = name
        self.key = [key] if isinstance(key, str) else list(key)
        if not self.key:
            raise ValidationError("At least one key column is needed.")
        self.user_spec = dict(spec)
        self.requested_version = version
        self.provenance = dict(provenance or {})
        self.run_id = run_id or _runs.new_run_id()
        self.embedding = embedding
        self.set_dir = set_dir(store.root, name)
        self._lock = feature_set_lock(store.root, name, timeout=lock_timeout)
        self.manifest: Manifest | None = None
        self.version_dir: Path | None = None
        self._committed: dict[Any, str] | None = None
        self._last_catalog = 0.0
        self.stats = {"rows_written": 0, "rows_skipped": 0, "rows_failed": 0, "partitions": 0}
        self.run: dict[str, Any] = _runs.new_run(self.run_id, run_info)
        self._t0 = time.perf_counter()

    # -- lock and recovery -------------------------------------------------------------------------------------
    def __enter__(self) -> "Writer":
        self._lock.acquire()
        try:
            self._recover()
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

    def _recover(self) -> None:
        """Undo what crashed writers left (we hold the lock they held): remove leftovers, mark their runs killed."""
        for folder in _leftovers.version_folders(self.set_dir):
            if folder.error is not None:  # never delete files of a version we cannot read
                warnings.warn(f"Not cleaning {folder.path}: {folder.error}", stacklevel=3)
                continue
            _leftovers.remove(folder.leftovers)
            if folder.manifest is not None and _runs.mark_killed(folder.manifest):
                write_manifest(folder.path, folder.manifest)

    def _resolve(self, dim: int, dtype: str | None) -> None:
        self.version_dir, self.manifest = choose_version(
            self.store.root, self.name, key=self.key, spec=full_spec(self.user_spec, dim, dtype),
            requested=self.requested_version, provenance=self.provenance)

    # -- committed rows, for resume and idempotence ------------------------------------------------------------
    def committed_hashes(self) -> dict[Any, str]:
        """Key -> content_hash of the rows this version holds now (the newest row per key)."""
        if self._committed is None:
            self._committed = {}
            if self.manifest is not None and self.manifest.partitions:
                table = read_latest(self.version_dir, self.manifest, columns=[fmt.CONTENT_HASH])
                tokens = fmt.key_tokens(table, self.key).to_pylist()
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
        if self.manifest is None:
            embedding = table.schema.field(fmt.EMBEDDING).type
            self._resolve(embedding.list_size, dtype or ("float16" if pa.types.is_float16(embedding.value_type) else "float32"))
        table = fmt.to_partition(table, self.key, run_id=self.run_id)
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

    def append(self, data: Any, *, screened: bool = False, updates: bool = False) -> int:
        """Validate and commit ``data`` as one partition; rows already stored with the same content are skipped.

        Returns the number of rows written. ``screened``: the caller already left out the rows the version holds
        (an embedding job looks its source's keys up on disk), so they are not looked up here in the dict of every
        committed key and hash, which grows with the version (about 0.3 KB a row); ``updates`` then says whether some
        row replaces a committed row of its key (the views must keep the newest).
        """
        table = self.prepare(data)
        committed = {} if screened else self.committed_hashes()
        if committed and table.num_rows:
            tokens = fmt.key_tokens(table, self.key).to_pylist()
            keep = fmt.changed_rows(tokens, table.column(fmt.CONTENT_HASH).to_pylist(), committed)
            updates = any(t in committed for t, k in zip(tokens, keep) if k)
            skipped = int((~keep).sum())
            if skipped:  # only then: a job's screening thread counts its own skips into the same dict
                table = table.filter(pa.array(keep))
                self.stats["rows_skipped"] += skipped
        if table.num_rows == 0:
            return 0
        self._commit(table, updates=updates)
        self._remember(table)
        return table.num_rows

    def record_errors(self, errors: Any) -> int:
        """Store rows that could not be embedded, for this run; returns how many.

        ``errors``: a table (anything :func:`featurestore.storage._format.to_table` reads) of the key column(s), ``kind``
        (a non-null short code: ``"null"``, ``"empty"``, ``"non-string"``, ``"undecodable"``, ``"invalid-json"``...)
        and ``message`` (the prose), both strings, plus any extra scalar columns. The ``name@errors`` view shows them
        with ``reason`` = ``"<kind>: <message>"``.
        """
        errors = error_table(errors, self.key)
        if errors.num_rows == 0:
            return 0
        if self.manifest is None:
            raise ValidationError("Errors can only be recorded once the version is known (after the first append or "
                                  "with a dim in the spec).")
        errors = errors.append_column(fmt.RUN_ID, pa.array([self.run_id] * errors.num_rows, pa.string()))
        m = self.manifest
        self._ensure_folder()
        path = self.version_dir / partition_file("errors", self.run_id, m.next_part)
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

    def _ensure_folder(self) -> None:
        # A new version's folder is made by its first commit: a write of no rows leaves nothing behind.
        self.version_dir.mkdir(parents=True, exist_ok=True)

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
        paths = [self.version_dir / partition_file("part", self.run_id, m.next_part + i) for i in range(len(slices))]
        stats = [column_stats(part.column(fmt.EMBEDDING), m.dim) for part in slices]  # see _stats
        if len(slices) == 1:
            crcs = [write_parquet(slices[0], paths[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(slices)) as pool:
                crcs = list(pool.map(write_parquet, slices, paths))
        for part, path, crc, part_stats in zip(slices, paths, crcs, stats):
            m.partitions.append(Partition(file=path.name, rows=part.num_rows, bytes=path.stat().st_size,
                                          crc32=crc, run_id=self.run_id, created_at=now(), stats=part_stats))
        m.next_part += len(slices)
        m.has_updates = m.has_updates or updates
        self.stats["partitions"] += len(slices)
        self.stats["rows_written"] += table.num_rows  # counted in the same manifest write that commits the rows
        self._write_manifest()

    def _write_manifest(self) -> None:
        """Commit: the run record (saved with every commit, so a killed run has one) and the manifest."""
        _runs.stamp(self.run, self.stats, time.perf_counter() - self._t0)
        _runs.record(self.manifest, self.run)
        write_manifest(self.version_dir, self.manifest)
        if time.monotonic() - self._last_catalog > _CATALOG_REFRESH_S:
            self._refresh_catalog()

    def _refresh_catalog(self) -> None:
        self.store._write_catalog()
        self._last_catalog = time.monotonic()

    def finish(self, status: str = "ok", **info: Any) -> dict[str, Any]:
        """Close the run record (rows read/written/skipped/failed, seconds, rows/s) and refresh the catalog."""
        if self.run.get("status") != _runs.RUNNING:
            return self.run
        seen = _runs.close(self.run, self.stats, time.perf_counter() - self._t0, status, **info)
        # A run that stored nothing and saw nothing (refused input, an empty write) leaves the store byte for byte
        # as it was; one that skipped rows (a rerun) or committed any is recorded.
        touched = self.stats["partitions"] or self.stats["rows_failed"] or (status == "ok" and seen)
        if touched and self.manifest is not None and (self.version_dir / MANIFEST).exists():
            _runs.record(self.manifest, self.run)
            write_manifest(self.version_dir, self.manifest)
            self._refresh_catalog()
        return self.run

    def _remember(self, table: pa.Table) -> None:
        """Add committed rows to the dict of :meth:`committed_hashes`, once someone asked for it."""
        if self._committed is not None:
            tokens = fmt.key_tokens(table, self.key).to_pylist()
            self._committed.update(zip(tokens, table.column(fmt.CONTENT_HASH).to_pylist()))

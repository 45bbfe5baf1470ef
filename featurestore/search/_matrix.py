"""A version's vectors as search reads them: one float32 matrix per version, cached beside it and memory-mapped.

The matrix (one row per key, the newest row winning, as the SQL views and ``FeatureSet.to_numpy``) is written once
beside the version as ``search-<fingerprint>-<unit|raw>.npy`` with its keys in ``search-<fingerprint>.keys.arrow``,
and memory-mapped after that. The fingerprint covers the manifest's partitions (file, rows, bytes, CRC32), so an
append or an update makes a new cache and the old one is removed; neither name is a leftover to ``_leftovers`` (not
``.tmp-*``, not ``*.parquet``), so ``doctor`` and writers leave the files alone. For ``cosine`` the cached rows are
unit length, so a score is one dot product. Both exact scoring (``_scoring``) and the ANN index (``_ann``) read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import CorruptStoreError, SpecMismatchError, ValidationError
from featurestore.storage._atomic import fsync_path
from featurestore.storage._format import EMBEDDING, key_tokens, to_matrix
from featurestore.storage._manifest import Manifest, read_manifest
from featurestore.storage._newest import oldest_first
from featurestore.storage._partitions import read_latest, read_partition
from featurestore.utils._progress import progress_enabled, rich_progress
from featurestore.utils._vectors import unit_rows

if TYPE_CHECKING:
    from featurestore.query._featureset import FeatureSet

CACHE_PREFIX = "search-"
#: spec ``metric`` values (sentence-transformers' ``similarity_fn_name`` among them) -> how search scores
METRICS = {"cosine": "cosine", "cos": "cosine", "dot": "dot", "dot_product": "dot", "ip": "dot",
           "inner_product": "dot", "l2": "l2", "euclidean": "l2"}
_NORM_BLOCK_ROWS = 32_768  # rows per step of the squared norms: bounded copies from the memory map
_CACHE_FORMAT = 1
_KEEP_MATRICES = 4  # matrices held per process (memory-mapped: pages, not copies)

@dataclass
class Matrix:
    """A version's vectors as search reads them: ``vectors[i]`` is the row of ``keys[i]``."""

    vectors: np.ndarray  # (rows, dim) float32, memory-mapped when cached; unit rows for cosine
    keys: pa.Table
    key: list[str]
    fingerprint: str
    unit: bool
    _tokens: pa.Array | None = field(default=None, repr=False)
    _sq_norms: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return self.vectors.shape[0]

    def tokens(self) -> pa.Array:
        """One comparable value per row (``key_tokens``), computed once."""
        if self._tokens is None:
            self._tokens = key_tokens(self.keys, self.key)
        return self._tokens

    def sq_norms(self) -> np.ndarray:
        """Squared row norms, for ``l2`` (computed once per process)."""
        if self._sq_norms is None:
            out = np.empty(self.n_rows, dtype=np.float32)
            for start in range(0, self.n_rows, _NORM_BLOCK_ROWS):
                block = self.vectors[start:start + _NORM_BLOCK_ROWS]
                out[start:start + _NORM_BLOCK_ROWS] = np.einsum("ij,ij->i", block, block)
            self._sq_norms = out
        return self._sq_norms

    def rows_of(self, keys: pa.Table) -> np.ndarray:
        """Row numbers of ``keys`` (a table of the key columns), -1 where a key is not in the version."""
        wanted = key_tokens(cast_keys(keys, self.keys.schema), self.key)
        hit = np.flatnonzero(pc.is_in(self.tokens(), value_set=wanted).to_numpy(zero_copy_only=False))
        found = dict(zip(self.tokens().take(pa.array(hit)).to_pylist(), hit.tolist()))
        return np.array([found.get(t, -1) for t in wanted.to_pylist()], dtype=np.int64)


def fingerprint(m: Manifest) -> str:
    """Which rows a cache (or an index) covers: the committed partitions, and how the rows were combined."""
    parts = [(p.file, p.rows, p.bytes, p.crc32) for p in m.partitions]
    blob = json.dumps({"format": _CACHE_FORMAT, "key": m.key, "dim": m.dim, "dtype": m.dtype,
                       "has_updates": m.has_updates, "partitions": parts}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()


def resolve_metric(fs: FeatureSet, metric: str | None) -> str:
    """The search metric: the caller's, else the spec's (``cosine`` when the spec has none)."""
    name = metric if metric is not None else fs.manifest.spec.get("metric", "cosine")
    found = METRICS.get(str(name).lower())
    if found is None:
        raise SpecMismatchError(
            f"Feature set {fs.name!r} v{fs.version} has metric {name!r}, which search does not score. "
            f"Known: {sorted(set(METRICS.values()))}.\n  Help: pass metric='cosine', 'dot' or 'l2'."
        )
    return found


# -- the cached matrix ------------------------------------------------------------------------------------------
_MATRICES: OrderedDict[str, Matrix] = OrderedDict()
_MATRICES_LOCK = threading.Lock()


def cache_files(vdir: Path, fp: str, unit: bool) -> tuple[Path, Path]:
    """(matrix ``.npy``, keys ``.arrow``) of a version's search cache."""
    return vdir / f"{CACHE_PREFIX}{fp}-{'unit' if unit else 'raw'}.npy", vdir / f"{CACHE_PREFIX}{fp}.keys.arrow"


def load_matrix(fs: FeatureSet, *, unit: bool, progress: bool | None = None) -> Matrix:
    """The version's matrix: from this process's memory, else the cache files, else built from the partitions."""
    fp = fingerprint(fs.manifest)
    vectors_path, keys_path = cache_files(fs.path, fp, unit)
    with _MATRICES_LOCK:
        found = _MATRICES.get(str(vectors_path))
        if found is not None:
            _MATRICES.move_to_end(str(vectors_path))
            return found
    matrix = _read_cache(fs, vectors_path, keys_path, fp, unit)
    if matrix is None:
        matrix = _build_cache(fs, vectors_path, keys_path, fp, unit, progress)
    with _MATRICES_LOCK:
        _MATRICES[str(vectors_path)] = matrix
        while len(_MATRICES) > _KEEP_MATRICES:
            _MATRICES.popitem(last=False)
    return matrix


def _read_cache(fs: FeatureSet, vectors_path: Path, keys_path: Path, fp: str, unit: bool) -> Matrix | None:
    """The cache files if both are there and agree with the manifest (rows, dim); None otherwise."""
    if not (vectors_path.is_file() and keys_path.is_file()):
        return None
    try:
        vectors = np.load(vectors_path, mmap_mode="r")
        with pa.memory_map(str(keys_path)) as source:
            keys = pa.ipc.open_file(source).read_all()
    except (OSError, ValueError, pa.ArrowException):
        return None  # a damaged cache is only a cache: it is written again
    m = fs.manifest
    expected_rows = None if m.has_updates else m.rows_written
    if (vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != m.dim or keys.num_rows != vectors.shape[0]
            or keys.column_names != m.key or (expected_rows is not None and expected_rows != keys.num_rows)):
        return None
    return Matrix(vectors, keys, list(m.key), fp, unit)


def _rows_in_order(fs: FeatureSet) -> Any:
    """(keys, (rows, dim) vectors) chunks of the version in view order, one partition at a time when no key repeats."""
    m = fs.manifest
    if m.has_updates:  # newest row per key: needs every partition at once
        table = read_latest(fs.path, m, columns=[EMBEDDING])
        yield table.select(m.key), to_matrix(table.column(EMBEDDING), m.dim)
        return
    for p in oldest_first(m.partitions):
        table = read_partition(fs.path, m, p, [*m.key, EMBEDDING])
        yield table.select(m.key), to_matrix(table.column(EMBEDDING), m.dim)


def _build_cache(fs: FeatureSet, vectors_path: Path, keys_path: Path, fp: str, unit: bool,
                 progress: bool | None) -> Matrix:
    """Read the partitions into a float32 matrix, write it beside the version (atomically), and memory-map it.

    Where the folder cannot be written (a read-only store), the matrix stays in memory for this process.
    """
    m = fs.manifest
    total = m.rows_written
    tmp_vectors = vectors_path.with_name(f".tmp-{uuid.uuid4().hex}-{vectors_path.name}")
    tmp_keys = keys_path.with_name(f".tmp-{uuid.uuid4().hex}-{keys_path.name}")
    key_chunks: list[pa.Table] = []
    blocks: list[np.ndarray] = []
    with rich_progress(f"search cache {fs.name} v{fs.version}", total, enabled=progress_enabled(progress)) as bar:
        done = 0
        for keys, block in _rows_in_order(fs):
            block = np.array(block, dtype=np.float32, copy=True)
            if unit:
                unit_rows(block)
            key_chunks.append(keys)
            blocks.append(block)
            done += len(block)
            bar(done)
    keys_table = (pa.concat_tables(key_chunks) if key_chunks else _empty_keys(fs)).combine_chunks()
    vectors = np.concatenate(blocks) if blocks else np.empty((0, m.dim), dtype=np.float32)
    del blocks
    try:
        with open(tmp_keys, "wb") as f:
            with pa.ipc.new_file(f, keys_table.schema) as out:
                out.write_table(keys_table)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp_vectors, "wb") as f:
            np.save(f, vectors)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_keys, keys_path)
        os.replace(tmp_vectors, vectors_path)  # last: a cache is complete once its matrix is in place
        fsync_path(vectors_path.parent)
    except OSError as exc:
        tmp_keys.unlink(missing_ok=True)
        tmp_vectors.unlink(missing_ok=True)
        warnings.warn(f"Cannot write the search cache of {fs.name!r} v{fs.version} in {fs.path} ({exc}); "
                      "searching from memory in this process.", stacklevel=4)
        return Matrix(vectors, keys_table, list(m.key), fp, unit)
    remove_stale(fs.path, prefix=CACHE_PREFIX, keep=fp)
    del vectors
    return Matrix(np.load(vectors_path, mmap_mode="r"), keys_table, list(m.key), fp, unit)


def remove_stale(vdir: Path, *, prefix: str, keep: str) -> None:
    """Delete a version's ``<prefix><fingerprint>...`` files of row sets it no longer holds: neither ``keep`` nor
    what its manifest on disk holds now (a snapshot's cache may sit beside the current one)."""
    try:
        current = fingerprint(read_manifest(vdir))
    except CorruptStoreError:
        return
    for f in vdir.iterdir():
        if f.name.startswith(prefix) and not f.name.startswith((f"{prefix}{keep}", f"{prefix}{current}")):
            f.unlink(missing_ok=True)


def _empty_keys(fs: FeatureSet) -> pa.Table:
    return read_latest(fs.path, fs.manifest, columns=[]).select(fs.key)


def cast_keys(keys: pa.Table, schema: pa.Schema) -> pa.Table:
    try:
        return keys.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
        raise ValidationError(f"Keys {keys.to_pylist()[:3]} cannot be compared with the set's key columns "
                              f"{schema}: {exc}") from None

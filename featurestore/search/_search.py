"""Exact vector search over a feature set version: a cached float32 matrix, blocked matmul, ties broken by key.

The matrix of a version (one row per key, the newest row winning, as the SQL views and ``FeatureSet.to_numpy``) is
written once beside the version as ``search-<fingerprint>-<unit|raw>.npy`` with its keys in
``search-<fingerprint>.keys.arrow``, and memory-mapped after that. The fingerprint covers the manifest's partitions
(file, rows, bytes, CRC32), so an append or an update makes a new cache and the old one is removed; neither name is a
leftover to ``_leftovers`` (not ``.tmp-*``, not ``*.parquet``), so ``doctor`` and writers leave the files alone.
For ``cosine`` the cached rows are unit length, so a score is one dot product.

Scoring is a float32 matrix product and ``np.argpartition`` (one product for a single query; blocks of rows for a
batch or a filtered subset), keeping every row within float32 rounding of the k-th score; those few candidates are
rescored in float64 and ordered by score, then key, so the answer is exact and ties always come out the same.
Measured on 1M x 384 (2-core AMD EPYC, shared): one query takes what plain numpy over the same matrix in RAM takes
(see ``benchmarks/bench_search.py``).

``where`` runs in the store's fenced read-only SQL (``select key from <view> where ...``) and only those rows are
scored; ``columns`` are read for the hits only, through the same SQL.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.query._catalog import quote_ident
from featurestore.query._featureset import FeatureSet, read_latest, read_partition
from featurestore.storage._format import EMBEDDING, describe_keys, key_tokens, to_matrix
from featurestore.storage._manifest import Manifest, fsync_dir, read_manifest
from featurestore.storage._newest import oldest_first
from featurestore.utils._progress import progress_enabled, rich_progress
from featurestore.utils._validation import InstanceOf, Interval, StrOptions, validate_params
from featurestore.errors import CorruptStoreError, FeatureStoreError, SpecMismatchError, ValidationError

if TYPE_CHECKING:
    from featurestore._store import Store

CACHE_PREFIX = "search-"
SCORE, RANK, QUERY = "score", "rank", "query"
#: spec ``metric`` values (sentence-transformers' ``similarity_fn_name`` among them) -> how search scores
METRICS = {"cosine": "cosine", "cos": "cosine", "dot": "dot", "dot_product": "dot", "ip": "dot",
           "inner_product": "dot", "l2": "l2", "euclidean": "l2"}
# Rows scored per block. 32k rows x 384 dims is 48 MB: large enough that BLAS runs at full speed, small enough that
# a block's scores stay in cache for argpartition; a batch of queries shrinks it so scores stay near 64 MB.
BLOCK_ROWS = 32_768
_SCORE_BYTES = 64 << 20
_CACHE_FORMAT = 1
_KEEP_MATRICES = 4  # matrices held per process (memory-mapped: pages, not copies)

_PARAMS: dict[str, list] = {
    "k": [Interval(numbers.Integral, 1, None, closed="left")],
    "where": [InstanceOf(str, "an SQL predicate (str)"), None],
    "metric": [StrOptions(set(METRICS)), None],
    "include_self": ["boolean"],
    "index": [StrOptions({"exact", "ann"})],
}


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
            for start in range(0, self.n_rows, BLOCK_ROWS):
                block = self.vectors[start:start + BLOCK_ROWS]
                out[start:start + BLOCK_ROWS] = np.einsum("ij,ij->i", block, block)
            self._sq_norms = out
        return self._sq_norms

    def rows_of(self, keys: pa.Table) -> np.ndarray:
        """Row numbers of ``keys`` (a table of the key columns), -1 where a key is not in the version."""
        wanted = key_tokens(_cast_keys(keys, self.keys.schema), self.key)
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
        fsync_dir(vectors_path.parent)
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


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place; zero rows stay zero (their cosine with anything is 0)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    np.maximum(norms, 1e-30, out=norms)
    x /= norms[:, None]
    return x


def _cast_keys(keys: pa.Table, schema: pa.Schema) -> pa.Table:
    try:
        return keys.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
        raise ValidationError(f"Keys {keys.to_pylist()[:3]} cannot be compared with the set's key columns "
                              f"{schema}: {exc}") from None


# -- scoring -----------------------------------------------------------------------------------------------------
def top_candidates(matrix: Matrix, queries: np.ndarray, k: int, metric: str,
                   rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Per query, the row numbers of every row that can be among its ``k`` best (ties and near-ties included).

    ``queries`` is (q, dim) float32, already unit length for cosine; ``rows`` (sorted row numbers) limits scoring to
    those rows. Float32 scores choose the candidates: every row within float32 rounding (``_slack``) of the k-th
    best is kept, so :func:`order_hits`, which rescores them in float64, ranks exactly; identical vectors tie exactly
    and are ordered by key.
    """
    vectors = matrix.vectors
    n = vectors.shape[0] if rows is None else len(rows)
    n_queries = queries.shape[0]
    # One query over contiguous rows: a single matrix-vector product, as plain numpy does (it is memory bound, and
    # 30 smaller calls measured up to 2x slower on 1M x 384, 2 shared cores); batches and gathered rows go by block.
    block_rows = n if n_queries == 1 and rows is None else max(1024, min(BLOCK_ROWS, _SCORE_BYTES // (4 * n_queries)))
    found_rows: list[list[np.ndarray]] = [[] for _ in range(n_queries)]
    found_scores: list[list[np.ndarray]] = [[] for _ in range(n_queries)]
    sq = matrix.sq_norms() if metric == "l2" else None
    q_sq = np.einsum("ij,ij->i", queries, queries)
    slack = _slack(matrix, q_sq, metric)
    for start in range(0, n, max(1, block_rows)):
        stop = min(n, start + block_rows)
        ids = None if rows is None else rows[start:stop]
        block = vectors[start:stop] if ids is None else vectors[ids]
        scores = (block @ queries[0])[None, :] if n_queries == 1 else queries @ block.T
        if metric == "l2":  # -(|q|^2 - 2 q.x + |x|^2), without the |q|^2 every row shares
            scores *= 2
            scores -= (sq[start:stop] if ids is None else sq[ids])[None, :]
        width = scores.shape[1]
        if width > k:
            part = np.argpartition(scores, width - k, axis=1)[:, width - k:]
            kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        else:
            kth = scores.min(axis=1)
        for i in range(n_queries):
            local = np.flatnonzero(scores[i] >= kth[i] - slack[i])  # the block's top k and all within rounding
            found_rows[i].append(local + start if ids is None else ids[local])
            found_scores[i].append(scores[i, local])
    out = []
    for i in range(n_queries):
        r = np.concatenate(found_rows[i]) if found_rows[i] else np.empty(0, dtype=np.int64)
        s = np.concatenate(found_scores[i]) if found_scores[i] else np.empty(0, dtype=np.float32)
        if len(s) > k:  # only rows within rounding of the overall k-th score can be among the k
            kth = np.partition(s, len(s) - k)[len(s) - k]
            r = r[s >= kth - slack[i]]
        out.append(r.astype(np.int64, copy=False))
    return out


def _slack(matrix: Matrix, q_sq: np.ndarray, metric: str) -> np.ndarray:
    """Per query, a bound on the float32 rounding error of a score (a sum of ``dim`` products; BLAS order varies)."""
    q_norm = np.sqrt(q_sq.astype(np.float64))
    x_norm = 1.0 if matrix.unit else float(np.sqrt(matrix.sq_norms().max(initial=0.0)))
    scale = q_norm * x_norm if metric != "l2" else (q_norm + x_norm) ** 2
    return (_ROUNDING * matrix.vectors.shape[1] * scale + 1e-30).astype(np.float32)


# float32 epsilon, doubled: |sum of d products - exact| <= d * eps * |q| |x| bounds the worst case of any order.
_ROUNDING = 2.0 * float(np.finfo(np.float32).eps)


def exact_scores(matrix: Matrix, query: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Scores of ``rows`` for one query in float64 (minus the squared distance for ``l2``)."""
    block = np.asarray(matrix.vectors[rows], dtype=np.float64)
    q = query.astype(np.float64)
    if metric == "l2":
        diff = block - q[None, :]
        return -np.einsum("ij,ij->i", diff, diff)
    return block @ q


def order_hits(matrix: Matrix, rows: np.ndarray, query: np.ndarray, metric: str,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of ``rows`` by float64 score descending, then key ascending (ties always come out the same);
    returns (rows, scores)."""
    scores = exact_scores(matrix, query, rows, metric)
    if len(rows) <= 1:
        return rows, scores
    table = matrix.keys.take(pa.array(rows)).append_column("__score", pa.array(-scores))
    order = pc.sort_indices(table, sort_keys=[("__score", "ascending")] + [(c, "ascending") for c in matrix.key])
    order = order.to_numpy()[:k]
    return rows[order], scores[order]


# -- queries -----------------------------------------------------------------------------------------------------
@dataclass
class _Queries:
    vectors: np.ndarray  # (q, dim) float32
    batch: bool
    self_rows: np.ndarray | None = None  # for key queries: each query's own row, left out of its results


_ENCODERS: OrderedDict[str, Any] = OrderedDict()
_ENCODERS_LOCK = threading.Lock()


def _tower(store: "Store", spec: Mapping[str, Any], modality: str) -> Any:
    """The encoder for ``modality`` queries against vectors of ``spec``: the set's own encoder rebuilt from its spec
    when the modalities agree; otherwise the other tower of the same model, which must share the set's ``space``
    (an open_clip text tower for an image set, and the reverse)."""
    from featurestore.encoders import encoder_from_spec, get_encoder

    if spec.get("modality", "text") == modality:
        return encoder_from_spec(spec, store=store)
    other = get_encoder(spec["encoder"], modality=modality)
    if not spec.get("space") or other.spec().get("space") != spec.get("space"):
        raise SpecMismatchError(f"{spec.get('encoder')!r} has no {modality} tower in the space of these vectors "
                                f"(space {spec.get('space')!r}, here {other.spec().get('space')!r}).")
    return other


def _encoder_for(store: "Store", fs: FeatureSet, modality: str = "text") -> Any:
    """The encoder for ``modality`` queries against the set's vectors (kept per process: models load once)."""
    spec = fs.manifest.spec
    cache_key = json.dumps([str(store.root), spec, modality], sort_keys=True, default=str)
    with _ENCODERS_LOCK:
        if cache_key in _ENCODERS:
            _ENCODERS.move_to_end(cache_key)
            return _ENCODERS[cache_key]
    try:
        encoder = _tower(store, spec, modality)
    except (FeatureStoreError, ValueError, ImportError, OSError, TypeError) as exc:
        raise SpecMismatchError(
            f"Cannot encode {'a text' if modality == 'text' else 'an image'} query for {fs.name!r} v{fs.version} "
            f"({spec.get('modality', 'text')} vectors of {spec.get('encoder')!r}): the encoder cannot be rebuilt here "
            f"for {modality} with the recorded spec ({str(exc).splitlines()[0]}).\n"
            "  Help: search with a vector (query=array) or a stored row (key=...) instead."
        ) from exc
    with _ENCODERS_LOCK:
        _ENCODERS[cache_key] = encoder
        while len(_ENCODERS) > 2:
            _ENCODERS.popitem(last=False)[1].close()
    return encoder


def _check_vectors(vectors: np.ndarray, fs: FeatureSet, what: str) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[1] != fs.dim:
        raise ValidationError(f"The {what} has shape {vectors.shape[-1] if vectors.ndim else ()} per query but "
                              f"{fs.name!r} v{fs.version} has dim={fs.dim}.")
    if vectors.shape[0] == 0:
        raise ValidationError(f"No query given: the {what} is empty.")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise ValidationError(f"Query {int(bad[0])} of the {what} holds NaN or inf.")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _key_table(key: Any, names: list[str], schema: pa.Schema) -> tuple[pa.Table, bool]:
    """``key=`` as a table of key columns: a scalar (or a tuple for a compound key) is one query, a list many."""
    batch = isinstance(key, list)
    values = key if batch else [key]
    if len(names) == 1:
        columns = {names[0]: values}
    else:
        bad = [v for v in values if not isinstance(v, (tuple, Mapping)) or len(v) != len(names)]
        if bad:
            raise ValidationError(f"The set's key is compound {names}: give each key as a tuple or a dict of "
                                  f"{len(names)} values. Got {bad[0]!r}.")
        columns = {n: [v[n] if isinstance(v, Mapping) else v[i] for v in values] for i, n in enumerate(names)}
    if not values:
        raise ValidationError("No query given: key=[] is empty.")
    try:
        table = pa.table({n: pa.array(columns[n], type=schema.field(n).type) for n in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError(f"key={key!r} does not fit the key column(s) {schema}: {exc}") from None
    return table, batch


def parse_queries(store: "Store", fs: FeatureSet, matrix: Matrix, query: Any, key: Any,
                  unit: bool, image: Any = None) -> _Queries:
    """Texts, images, vectors or stored keys -> (q, dim) float32 query vectors (unit length when scoring cosine)."""
    if sum(q is not None for q in (query, key, image)) != 1:
        raise ValidationError("Give exactly one of query (a text, texts, or vectors), image (a path, bytes or PIL "
                              "image, or a list of them) and key (a stored row's key).")
    self_rows = None
    if image is not None:
        batch = isinstance(image, (list, tuple))
        images = list(image) if batch else [image]
        if not images:
            raise ValidationError("No query given: image=[] is empty.")
        vectors = np.asarray(_encoder_for(store, fs, "image").encode(images), dtype=np.float32)
        vectors = _check_vectors(vectors.reshape(len(images), -1), fs, "encoded image")
        return _Queries(unit_rows(vectors.copy()) if unit else vectors, batch)
    if key is not None:
        keys, batch = _key_table(key, matrix.key, matrix.keys.schema)
        rows = matrix.rows_of(keys)
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            raise ValidationError(f"No row with key {describe_keys(keys, matrix.key, missing)} in {fs.name!r} "
                                  f"v{fs.version}.")
        vectors = np.array(matrix.vectors[rows], dtype=np.float32)  # already unit length for cosine
        return _Queries(vectors, batch, rows)
    if isinstance(query, str) or (isinstance(query, (list, tuple)) and query and all(isinstance(q, str) for q in query)):
        batch = not isinstance(query, str)
        texts = [query] if isinstance(query, str) else list(query)
        vectors = np.asarray(_encoder_for(store, fs, "text").encode(texts), dtype=np.float32)
        vectors = _check_vectors(vectors, fs, "encoded text")
    else:
        try:
            array = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValidationError(f"A query is a text, a list of texts, or a vector / (q, dim) array of numbers. "
                                  f"Got {type(query).__name__}.") from None
        if array.ndim not in (1, 2):
            raise ValidationError(f"A query vector is 1-D (dim,) or 2-D (queries, dim); got shape {array.shape}.")
        batch = array.ndim == 2
        vectors = _check_vectors(array.reshape(-1, array.shape[-1]) if array.ndim else array, fs, "query vector")
    if unit:
        vectors = unit_rows(vectors.copy())
    return _Queries(vectors, batch, self_rows)


# -- the public call ---------------------------------------------------------------------------------------------
def where_rows(store: "Store", fs: FeatureSet, matrix: Matrix, where: str) -> np.ndarray:
    """Row numbers (sorted) of the rows the SQL predicate ``where`` keeps, run in the store's read-only SQL."""
    import duckdb

    keys = ", ".join(quote_ident(k) for k in fs.key)
    try:
        table = store.sql(f"SELECT {keys} FROM {fs.view} WHERE ({where})").arrow()
    except duckdb.Error as exc:
        raise ValidationError(f"The where filter {where!r} cannot run on {fs.name!r} v{fs.version}: "
                              f"{str(exc).splitlines()[0]}") from None
    if table.num_rows == 0:
        return np.empty(0, dtype=np.int64)
    wanted = key_tokens(_cast_keys(table, matrix.keys.schema), matrix.key)
    mask = pc.is_in(matrix.tokens(), value_set=wanted).to_numpy(zero_copy_only=False)
    return np.flatnonzero(mask)


def hit_columns(store: "Store", fs: FeatureSet, hits: pa.Table, columns: list[str]) -> pa.Table:
    """``hits`` with the stored ``columns`` of each hit appended (read for those keys only)."""
    known = [c for c in fs.manifest.columns if c not in fs.key]
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValidationError(f"No column(s) {unknown} in {fs.name!r} v{fs.version}. Columns: {known}")
    taken = [c for c in columns if c in hits.column_names]
    if taken:
        raise ValidationError(f"Column(s) {taken} clash with the result's own columns {hits.column_names}.")
    if not columns:
        return hits
    key_sql = ", ".join(quote_ident(k) for k in fs.key)
    wanted = hits.select(fs.key)
    params = {f"k{i}": wanted.column(k).to_pylist() for i, k in enumerate(fs.key)}
    unnest = ", ".join(f"unnest(${p}) AS {quote_ident(k)}" for p, k in zip(params, fs.key))
    cols = ", ".join(f"v.{quote_ident(c)}" for c in [*fs.key, *columns])
    query = (f"SELECT DISTINCT {cols} FROM {fs.view} AS v JOIN (SELECT {unnest}) AS h USING ({key_sql})")
    found = store.sql(query, params=params).arrow()
    tokens = key_tokens(_cast_keys(found.select(fs.key), wanted.schema), fs.key).to_pylist()
    where = dict(zip(tokens, range(found.num_rows)))
    take = pa.array([where.get(t) for t in key_tokens(wanted, fs.key).to_pylist()], pa.int64())
    for c in columns:
        hits = hits.append_column(c, found.column(c).take(take))
    return hits


def search(store: "Store", name: str, query: Any = None, *, key: Any = None, image: Any = None, k: int = 10,
           where: str | None = None, columns: Sequence[str] | None = None, version: int | None = None,
           metric: str | None = None, include_self: bool = False, index: str = "exact",
           progress: bool | None = None) -> pa.Table:
    """See :meth:`Store.search`."""
    validate_params({"k": k, "where": where, "metric": metric, "include_self": include_self, "index": index},
                    _PARAMS, "Store.search")
    columns = _column_list(columns)
    fs = store.get(name, version)
    metric = resolve_metric(fs, metric)
    unit = metric == "cosine"
    matrix = load_matrix(fs, unit=unit, progress=progress)
    queries = parse_queries(store, fs, matrix, query, key, unit, image)
    rows = None if where is None else where_rows(store, fs, matrix, where)
    drop_self = queries.self_rows is not None and not include_self
    want = k + 1 if drop_self else k
    if index == "ann":
        if where is not None:
            raise ValidationError("index='ann' cannot apply a where filter (an approximate index would miss rows the "
                                  "filter keeps). Help: leave index='exact' with where: only the kept rows are scored.")
        from featurestore.search._ann import ann_candidates

        candidates = ann_candidates(store, fs, matrix, queries.vectors, want, metric, progress=progress)
    else:
        candidates = top_candidates(matrix, queries.vectors, want, metric, rows)
    parts = []
    for i, r in enumerate(candidates):
        r, s = order_hits(matrix, r, queries.vectors[i], metric, want)
        if drop_self:
            keep = r != queries.self_rows[i]
            r, s = r[keep], s[keep]
        r, s = r[:k], s[:k]
        if metric == "l2":  # minus the distance: higher is nearer, as for the other metrics
            s = -np.sqrt(np.maximum(-s, 0))
        part = matrix.keys.take(pa.array(r, pa.int64()))
        part = part.append_column(SCORE, pa.array(s.astype(np.float32)))
        part = part.append_column(RANK, pa.array(np.arange(1, len(r) + 1, dtype=np.int32)))
        if queries.batch:
            part = part.add_column(0, QUERY, pa.array(np.full(len(r), i, dtype=np.int32)))
        parts.append(part)
    result = pa.concat_tables(parts) if parts else _empty_result(matrix, queries.batch)
    return hit_columns(store, fs, result, columns)


def _column_list(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise ValidationError(f"columns must be a list of column names. Got {columns!r} instead.")
    return list(dict.fromkeys(columns))


def _empty_result(matrix: Matrix, batch: bool) -> pa.Table:
    table = matrix.keys.slice(0, 0).append_column(SCORE, pa.array([], pa.float32()))
    table = table.append_column(RANK, pa.array([], pa.int32()))
    return table.add_column(0, QUERY, pa.array([], pa.int32())) if batch else table


_INDEX_PARAMS: dict[str, list] = {
    "recall": [Interval(numbers.Real, 0, 1, closed="right")],
    "force": ["boolean"],
    "metric": [StrOptions(set(METRICS)), None],
}


def build_index(store: "Store", name: str, *, version: int | None = None, metric: str | None = None,
                recall: float = 0.95, force: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """See :meth:`Store.build_index`."""
    from featurestore.search._ann import build_index as build

    validate_params({"recall": recall, "force": force, "metric": metric}, _INDEX_PARAMS, "Store.build_index")
    fs = store.get(name, version)
    metric = resolve_metric(fs, metric)
    matrix = load_matrix(fs, unit=metric == "cosine", progress=progress)
    return build(store, fs, matrix, metric, recall=recall, force=force, progress=progress)


def index_info(store: "Store", name: str, *, version: int | None = None, metric: str | None = None) -> dict[str, Any]:
    """See :meth:`Store.index_info`."""
    from featurestore.search._ann import index_info as info

    validate_params({"metric": metric}, _INDEX_PARAMS, "Store.index_info")
    fs = store.get(name, version)
    return info(fs, resolve_metric(fs, metric))

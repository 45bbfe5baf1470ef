"""What a search asks: texts, images, vectors or stored keys as query vectors; ``where`` and ``columns`` through SQL.

Text and image queries go through the set's own recorded encoder spec (or the other tower of the same open_clip
model, checked to share the set's ``space``); encoders are kept per process, so a model loads once. ``where`` runs in
the store's fenced read-only SQL (``select key from <view> where ...``) and only those rows are scored; ``columns``
are read for the hits only, through the same SQL.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import FeatureStoreError, SpecMismatchError, ValidationError
from featurestore.query._catalog import quote_ident
from featurestore.query._featureset import FeatureSet
from featurestore.search._matrix import Matrix, cast_keys
from featurestore.storage._format import describe_keys, key_tokens
from featurestore.utils._vectors import unit_rows

if TYPE_CHECKING:
    from featurestore._store import Store

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
    wanted = key_tokens(cast_keys(table, matrix.keys.schema), matrix.key)
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
    tokens = key_tokens(cast_keys(found.select(fs.key), wanted.schema), fs.key).to_pylist()
    where = dict(zip(tokens, range(found.num_rows)))
    take = pa.array([where.get(t) for t in key_tokens(wanted, fs.key).to_pylist()], pa.int64())
    for c in columns:
        hits = hits.append_column(c, found.column(c).take(take))
    return hits

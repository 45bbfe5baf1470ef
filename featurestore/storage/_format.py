"""The Parquet row format of a feature set: input normalisation, validation and content hashes.

A partition holds the key column(s), ``content_hash``, ``embedding`` as ``fixed_size_list<float32|float16>[dim]``,
an optional ``event_time``, the ``run_id`` that wrote it, and any extra scalar columns the writer passed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import InvalidTypeError, ValidationError

EMBEDDING = "embedding"
CONTENT_HASH = "content_hash"
EVENT_TIME = "event_time"
RUN_ID = "run_id"
SYSTEM_COLUMNS = (CONTENT_HASH, EMBEDDING, EVENT_TIME, RUN_ID)
SPEC_METADATA_KEY = b"featurestore.spec"
SET_METADATA_KEY = b"featurestore.set"
PROVENANCE_METADATA_KEY = b"featurestore.provenance"
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
MAX_EXAMPLES = 5


def to_table(data: Any, *, embedding: str = EMBEDDING,
             mixed: Callable[[list[Any]], pa.Array] | None = None) -> pa.Table:
    """Any table-like input as an Arrow table: the one converter of the store, its writers and readers.

    Accepts a pyarrow Table or RecordBatch, a pandas or polars DataFrame, any object with ``__arrow_c_stream__`` or
    ``__arrow_c_array__`` (a DuckDB relation, a RecordBatchReader, ``store.sql(...)``), or a dict of columns where a
    2-D numpy array becomes a ``fixed_size_list`` column. Anything else is a ``TypeError``. Large and view string
    and binary columns become plain ``string``/``binary``, so rows from any source compare and append alike.

    ``embedding``: the name of the embedding column in ``data``, renamed to ``embedding``.
    ``mixed``: how to convert a pandas column that Arrow cannot type as a whole (a number among texts), given its
    values as a list; without it, such a column raises Arrow's error.
    """
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, Mapping):
        table = pa.table({name: _column(name, values) for name, values in data.items()})
    elif hasattr(data, "to_arrow") and not hasattr(data, "__arrow_c_stream__"):
        table = data.to_arrow()
    elif type(data).__module__.startswith("pandas"):
        table = _from_pandas(data, mixed)
    elif hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        table = pa.table(data)
    else:
        raise InvalidTypeError(
            f"Cannot convert {type(data).__name__} to an Arrow table: pass a pyarrow Table or RecordBatch, a pandas "
            "or polars DataFrame, an object with __arrow_c_stream__, or a dict of columns with a 2-D numpy "
            "'embedding'."
        )
    for i, f in enumerate(table.schema):  # pandas 3 hands strings over as large_string, polars as string_view
        if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.string()))
        elif pa.types.is_large_binary(f.type) or pa.types.is_binary_view(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.binary()))
    if embedding != EMBEDDING:
        if EMBEDDING in table.column_names:
            raise ValidationError(f"Both {embedding!r} and {EMBEDDING!r} columns given: which is the embedding?")
        if embedding not in table.column_names:
            raise ValidationError(f"No column {embedding!r} in the data. Columns: {table.column_names}")
        table = table.rename_columns([EMBEDDING if c == embedding else c for c in table.column_names])
    return table


def _column(name: Any, values: Any) -> Any:
    if isinstance(values, np.ndarray) and values.ndim >= 2:
        if values.ndim > 2:
            raise ValidationError(f"Column {name!r} is a {values.ndim}-D array of shape {values.shape}; "
                                  "an embedding matrix must be 2-D (rows, dim).")
        return fixed_size_list(values)
    return values


def _from_pandas(frame: Any, mixed: Callable[[list[Any]], pa.Array] | None) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if mixed is None:
            raise
    return pa.table({str(name): _pandas_column(frame[name], mixed) for name in frame.columns})


def _pandas_column(values: Any, mixed: Callable[[list[Any]], pa.Array]) -> pa.Array:
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return mixed(values.tolist())


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, dim) float matrix as a zero-copy Arrow ``fixed_size_list`` column."""
    matrix = np.ascontiguousarray(matrix)
    if matrix.ndim != 2:
        raise ValidationError(f"An embedding matrix must be 2-D (rows, dim); got shape {matrix.shape}.")
    if matrix.shape[1] == 0:
        raise ValidationError(f"An embedding matrix needs at least one dimension; got shape {matrix.shape}.")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def single_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array; a one-chunk column is used as is (``combine_chunks`` would copy it)."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def flat_values(column: pa.FixedSizeListArray, dim: int) -> np.ndarray:
    """The list values of exactly ``column``'s rows as one flat numpy array (zero-copy where possible).

    ``.values`` is the whole child array, right only for an unsliced column: a slice at offset 0 is shorter.
    """
    whole = column.offset == 0 and len(column.values) == len(column) * dim
    return (column.values if whole else column.flatten()).to_numpy(zero_copy_only=False)


def to_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """The embedding column as a (rows, dim) float32 numpy matrix (zero-copy when already float32)."""
    column = single_array(column)
    if len(column) == 0:
        return np.empty((0, dim), dtype=np.float32)
    flat = flat_values(column, dim)
    return flat.reshape(-1, dim).astype(np.float32, copy=False)


def describe_keys(table: pa.Table, key: Sequence[str], rows: np.ndarray) -> str:
    """``id=5, id=9 (and 3 more)``: the rows named by their keys, for error messages."""
    rows = np.asarray(rows)
    shown = []
    for i in rows[:MAX_EXAMPLES].tolist():
        parts = [f"{k}={table.column(k)[i].as_py()!r}" for k in key]
        shown.append(", ".join(parts) if len(parts) == 1 else "(" + ", ".join(parts) + ")")
    more = f" (and {len(rows) - MAX_EXAMPLES} more)" if len(rows) > MAX_EXAMPLES else ""
    return "; ".join(shown) + more


def _row_numbers(rows: np.ndarray) -> str:
    shown = ", ".join(str(i) for i in rows[:MAX_EXAMPLES].tolist())
    more = f" (and {len(rows) - MAX_EXAMPLES} more)" if len(rows) > MAX_EXAMPLES else ""
    return f"row {shown}{more}" if len(rows) == 1 else f"rows {shown}{more}"


def key_tokens(table: pa.Table, key: Sequence[str]) -> pa.Array:
    """One comparable value per row for single or compound keys; two different keys never share a token.

    A single key is its own column. A compound key is the concatenation of ``<byte length>:<bytes>`` for each part
    (a length-prefixed, hence unambiguous, encoding: ``("a|b", "c")`` and ``("a", "b|c")`` differ), as binary, so
    binary parts that are not UTF-8 need no decoding.
    """
    if len(key) == 1:
        col = table.column(key[0])
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    parts: list[pa.Array] = []
    for k in key:
        col = table.column(k)
        raw = col if pa.types.is_binary(col.type) else pc.cast(pc.cast(col, pa.string()), pa.binary())
        length = pc.cast(pc.cast(pc.binary_length(raw), pa.string()), pa.binary())
        parts += [length, pa.repeat(pa.scalar(b":", pa.binary()), table.num_rows), raw]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary())).combine_chunks()


def check_keys(table: pa.Table, key: Sequence[str]) -> None:
    """Key columns exist, are scalar, and are neither null nor duplicated within the write."""
    for k in key:
        if k not in table.column_names:
            raise ValidationError(f"Key column {k!r} is missing. Columns: {table.column_names}")
        if k in SYSTEM_COLUMNS:
            raise ValidationError(f"{k!r} cannot be a key column: the store writes it itself.")
        t = table.schema.field(k).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_binary(t)):
            raise ValidationError(f"Key column {k!r} has type {t}; keys must be integers, strings or dates.")
        nulls = np.flatnonzero(table.column(k).is_null().to_numpy(zero_copy_only=False))
        if len(nulls):
            raise ValidationError(f"{len(nulls)} null value(s) in key column {k!r} at {_row_numbers(nulls)}.")
    if table.num_rows < 2:
        return
    counts = table.group_by(list(key)).aggregate([([], "count_all")])
    dups = counts.filter(pc.greater(counts.column("count_all"), 1))
    if dups.num_rows:
        raise ValidationError(
            f"{dups.num_rows} key(s) appear more than once in this write: "
            f"{describe_keys(dups, key, np.arange(dups.num_rows))}. A write holds one row per key."
        )


def check_strings(table: pa.Table, column: str, key: Sequence[str], *, allow_null: bool = False,
                  rows: str = "row(s)", what: str = "") -> None:
    """``column`` holds strings, and no null unless allowed (else a :class:`ValidationError` naming the rows)."""
    typ = table.schema.field(column).type
    if not pa.types.is_string(typ):
        raise ValidationError(f"Column {column!r}{what} must hold strings; got {typ}.")
    if allow_null:
        return
    nulls = np.flatnonzero(table.column(column).is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        raise ValidationError(f"{len(nulls)} {rows} have a null {column}: {describe_keys(table, key, nulls)}.")


def to_partition(table: pa.Table, key: Sequence[str], *, run_id: str) -> pa.Table:
    """Checked rows (keys and embedding already normalised) in the partition layout.

    Key(s), ``content_hash`` (the vector's own hash when not given), ``embedding``, ``event_time`` if given, the
    extra scalar columns, then ``run_id`` (the writer's, replacing any given).
    """
    if CONTENT_HASH in table.column_names:
        check_strings(table, CONTENT_HASH, key)
    else:
        dim = table.schema.field(EMBEDDING).type.list_size
        table = table.append_column(CONTENT_HASH, vector_hashes(table.column(EMBEDDING), dim))
    if EVENT_TIME in table.column_names and not pa.types.is_timestamp(table.schema.field(EVENT_TIME).type):
        raise ValidationError(f"Column {EVENT_TIME!r} must be a timestamp; got {table.schema.field(EVENT_TIME).type}.")
    if RUN_ID in table.column_names:
        table = table.drop_columns([RUN_ID])
    extras = [c for c in table.column_names if c not in key and c not in SYSTEM_COLUMNS]
    for c in extras:
        typ = table.schema.field(c).type
        if pa.types.is_nested(typ):
            raise ValidationError(f"Extra column {c!r} has nested type {typ}; only scalar extra columns are stored.")
    order = [*key, CONTENT_HASH, EMBEDDING] + ([EVENT_TIME] if EVENT_TIME in table.column_names else [])
    table = table.select(order + extras)
    return table.append_column(RUN_ID, pa.repeat(pa.scalar(run_id, pa.string()), table.num_rows))


def changed_rows(tokens: Sequence[Any], hashes: Sequence[str], committed: Mapping[Any, str]) -> np.ndarray:
    """Which rows to write: those whose (key token, content_hash) is not committed (a new key, or new content).

    Re-appending identical rows writes nothing; ``committed`` maps key tokens (:func:`key_tokens`) to hashes.
    """
    return np.fromiter((committed.get(t) != h for t, h in zip(tokens, hashes)), dtype=bool, count=len(tokens))


def normalize_embedding(table: pa.Table, key: Sequence[str], *, dim: int | None, dtype: str | None) -> pa.Table:
    """Check the embedding column and return the table with it as ``fixed_size_list<dtype>[dim]``."""
    if EMBEDDING not in table.column_names:
        raise ValidationError(f"No {EMBEDDING!r} column in the data. Columns: {table.column_names}")
    column = single_array(table.column(EMBEDDING))
    typ = column.type
    if not (pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        raise ValidationError(
            f"Column {EMBEDDING!r} has type {typ}; expected a list of floats "
            "(fixed_size_list<float32|float16>[dim])."
        )
    value_type = typ.value_type
    if not pa.types.is_floating(value_type):
        raise ValidationError(
            f"Column {EMBEDDING!r} holds {value_type} values; embeddings must be float32 or float16 (got the wrong dtype)."
        )
    nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        raise ValidationError(f"{len(nulls)} row(s) have a null embedding: {describe_keys(table, key, nulls)}.")
    if pa.types.is_fixed_size_list(typ):
        got_dim = typ.list_size
        if dim is not None and got_dim != dim:
            raise ValidationError(f"The rows have dim={got_dim} but the spec has dim={dim}.")
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        expected = dim if dim is not None else (int(lengths[0]) if len(lengths) else 0)
        bad = np.flatnonzero(lengths != expected)
        if len(bad):
            raise ValidationError(
                f"{len(bad)} row(s) have an embedding of the wrong dim (expected {expected}): "
                f"{describe_keys(table, key, bad)} has dim {int(lengths[bad[0]])}."
            )
        got_dim = expected
        if got_dim < 1:
            raise ValidationError("Embeddings must have at least one dimension; got empty vectors.")
        column = pa.FixedSizeListArray.from_arrays(column.flatten(), got_dim)
    if got_dim < 1:
        raise ValidationError("Embeddings must have at least one dimension; got empty vectors.")
    target = dtype or ("float16" if pa.types.is_float16(value_type) else "float32")
    if target not in DTYPES:
        raise ValidationError(f"Unsupported embedding dtype {target!r}; expected one of {sorted(DTYPES)}.")
    flat = flat_values(column, got_dim)
    matrix = flat.reshape(-1, got_dim)
    bad = _nonfinite_rows(matrix)
    if len(bad):
        raise ValidationError(f"{len(bad)} row(s) have NaN or inf in {EMBEDDING!r}: {describe_keys(table, key, bad)}.")
    np_target = np.float16 if target == "float16" else np.float32
    if matrix.dtype != np_target:
        if target == "float16" and matrix.dtype != np.float16:
            with np.errstate(over="ignore"):
                big = np.flatnonzero(~np.isfinite(matrix.astype(np.float16)).all(axis=1))
            if len(big):
                raise ValidationError(
                    f"{len(big)} row(s) overflow float16: {describe_keys(table, key, big)}. Store them as float32."
                )
        matrix = matrix.astype(np_target)
        column = fixed_size_list(matrix)
    elif column.offset or not pa.types.is_fixed_size_list(column.type):
        column = fixed_size_list(matrix)
    index = table.column_names.index(EMBEDDING)
    return table.set_column(index, pa.field(EMBEDDING, column.type, nullable=False), column)


def _nonfinite_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows holding NaN or inf. A row sum is NaN/inf when any element is (checked exactly only for those rows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        suspects = np.flatnonzero(~np.isfinite(matrix.sum(axis=1, dtype=np.float32)))
    if not len(suspects):
        return suspects
    return suspects[~np.isfinite(matrix[suspects].astype(np.float32)).all(axis=1)]


def vector_hashes(column: pa.Array | pa.ChunkedArray, dim: int) -> pa.Array:
    """128-bit content hashes of the embedding rows themselves, for vectors whose payload we never saw.

    Two lanes of a multiply-add hash over the raw bits taken as 64-bit words (exact integer arithmetic mod 2**64,
    so the same vector hashes the same on any machine), then a splitmix finaliser. About 20x faster than hashlib
    per row, and enough to tell an identical re-append from a change.
    """
    column = single_array(column)
    flat = flat_values(column, dim)
    row_bytes = dim * flat.dtype.itemsize
    raw = flat.view(np.uint8).reshape(-1, row_bytes)
    if row_bytes % 8:
        padded = np.zeros((raw.shape[0], row_bytes + 8 - row_bytes % 8), dtype=np.uint8)
        padded[:, :row_bytes] = raw
        raw = padded
    words = raw.view(np.uint64)
    weights = _hash_weights(words.shape[1])
    lanes = np.empty((words.shape[0], 2), dtype=np.uint64)
    step = 8192
    with np.errstate(over="ignore"):
        for start in range(0, words.shape[0], step):
            lanes[start:start + step] = np.einsum("ij,jk->ik", words[start:start + step], weights)
        z = lanes + np.uint64(dim)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    hexed = z.astype(">u8").tobytes().hex().encode()
    offsets = np.arange(0, 32 * (len(z) + 1), 32, dtype=np.int32)  # every hash is 32 hex characters
    return pa.StringArray.from_buffers(len(z), pa.py_buffer(offsets), pa.py_buffer(hexed))


@functools.lru_cache(maxsize=64)
def _hash_weights(n_words: int) -> np.ndarray:
    """Odd 64-bit multipliers, two per word, from a splitmix64 stream with a fixed seed.

    Pure integer arithmetic mod 2**64, written out here rather than drawn from ``numpy.random`` (whose streams NumPy
    does not promise to keep across versions): stored content hashes must never change under an upgrade.
    """
    with np.errstate(over="ignore"):
        z = np.uint64(_HASH_SEED) + np.arange(1, 2 * n_words + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    weights = (z | np.uint64(1)).reshape(n_words, 2)
    weights.setflags(write=False)
    return weights


_HASH_SEED = 0x5EED


def text_hashes(payloads: Sequence[str | bytes], fingerprint: str) -> pa.Array:
    """Content hashes of payloads under a preprocessing fingerprint: a changed text or a changed spec re-embeds."""
    import hashlib

    salt = fingerprint.encode()
    out = []
    for p in payloads:
        h = hashlib.blake2b(salt, digest_size=16)
        h.update(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else bytes(p))
        out.append(h.hexdigest())
    return pa.array(out, type=pa.string())


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec: equal specs give equal fingerprints."""
    import hashlib

    return hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()

"""Join several stored feature sets and a labels table by key into one aligned TrainingSet.

Alignment is the whole point: every block's row ``i`` must describe the same key as ``y[i]``, whatever order each
feature set was written in. The join runs in DuckDB on (key, row number) tables; no Python loop over rows.
Keys a feature set lacks are reported (count and examples), never dropped silently.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from featurestore.errors import InvalidIndexError, InvalidTypeError, MissingFileError, ValidationError
from featurestore.query import parse_as_of, quote_ident, read_history
from featurestore.storage import EMBEDDING, EVENT_TIME, to_matrix, to_table
from featurestore.utils import DistinctNames, Interval, StrOptions, validate_params
from stackers.errors import MissingKeysError

__all__ = ["TrainingSet", "MissingKeysWarning", "MissingKeysError", "join", "read_labels"]

_ROW = "__stackers_row"
_TIME = "__stackers_time"
_N_EXAMPLES = 5
_JOIN_CONSTRAINTS = {"names": [DistinctNames("feature set names")], "how": [StrOptions({"inner", "error"})]}
_SPLIT_CONSTRAINTS = {
    "test_size": [Interval(Real, 0, 1, closed="neither")],
    "stratify": ["boolean"],
    "random_state": ["random_state"],
}


class MissingKeysWarning(UserWarning):
    """Some label keys have no row in a feature set; they were dropped from the join."""


@dataclass
class TrainingSet:
    """Aligned inputs for a stacker: one float32 block per feature set, plus labels, groups and table columns.

    Row ``i`` of every block, of ``y``, ``groups``, ``columns`` and ``keys`` refers to the same key. Build one with
    ``stackers.join`` or by hand (``TrainingSet(blocks={"a": Xa, "b": Xb}, y=y)``).
    """

    blocks: dict[str, np.ndarray]
    y: np.ndarray | None = None
    keys: pa.Table | None = None
    groups: np.ndarray | None = None
    columns: pd.DataFrame | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, dict) or not self.blocks:
            raise ValidationError("A TrainingSet needs at least one block: a dict of name -> (n_rows, dim) array.")
        blocks = {}
        for name, block in self.blocks.items():
            block = np.asarray(block)
            if block.ndim != 2:
                raise ValidationError(f"Block {name!r} must be 2-D (n_rows, dim); got shape {block.shape}.")
            blocks[str(name)] = block
        self.blocks = blocks
        n = self.n_rows
        for name, block in blocks.items():
            if block.shape[0] != n:
                raise ValidationError(f"Block {name!r} has {block.shape[0]} rows but the first block has {n}.")
        if self.y is not None:
            self.y = np.asarray(self.y)
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
        if self.columns is not None and not isinstance(self.columns, pd.DataFrame):
            self.columns = pd.DataFrame(self.columns)
        if self.columns is not None:
            self.columns = self.columns.reset_index(drop=True)
        if self.keys is not None and not isinstance(self.keys, pa.Table):
            try:
                self.keys = to_table(self.keys)
            except TypeError:  # records or a plain array: pandas makes a table of them
                self.keys = to_table(pd.DataFrame(self.keys))
        for what, value in (("y", self.y), ("groups", self.groups), ("columns", self.columns), ("keys", self.keys)):
            if value is not None and len(value) != n:
                raise ValidationError(f"TrainingSet.{what} has {len(value)} rows but the blocks have {n}.")

    # -- shape -----------------------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return next(iter(self.blocks.values())).shape[0]

    @property
    def dims(self) -> dict[str, int]:
        return {name: block.shape[1] for name, block in self.blocks.items()}

    @property
    def key(self) -> list[str]:
        """The key column names, or [] when the set was built without keys."""
        return [] if self.keys is None else list(self.keys.column_names)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, total block dims): lets scikit-learn's model selection index a TrainingSet like an array."""
        return (self.n_rows, sum(self.dims.values()))

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, idx) -> "TrainingSet":
        # scikit-learn's _safe_indexing calls ``X[idx, ...]`` on objects with a shape.
        if isinstance(idx, tuple):
            if len(idx) != 2 or idx[1] is not Ellipsis:
                raise InvalidIndexError("A TrainingSet is indexed by rows only: ts[rows] or ts[rows, ...].")
            idx = idx[0]
        return self.subset(idx)

    def to_numpy(self) -> np.ndarray:
        """All blocks side by side, in block order: the input of a single probe on concatenated features."""
        return np.hstack(list(self.blocks.values()))

    # -- row selection ---------------------------------------------------------------------------------------
    def subset(self, idx) -> "TrainingSet":
        """The rows ``idx`` (integer positions, a slice or a boolean mask) of every part, still aligned."""
        if isinstance(idx, slice):
            idx = np.arange(self.n_rows)[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.n_rows,):
                raise InvalidIndexError(f"Boolean mask has shape {idx.shape}; expected ({self.n_rows},).")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        return TrainingSet(
            blocks={name: block[idx] for name, block in self.blocks.items()},
            y=None if self.y is None else self.y[idx],
            keys=None if self.keys is None else self.keys.take(pa.array(idx)),
            groups=None if self.groups is None else self.groups[idx],
            columns=None if self.columns is None else self.columns.iloc[idx].reset_index(drop=True),
            sources=self.sources,
            missing=self.missing,
        )

    def split(
        self, test_size: float = 0.25, *, stratify: bool = True, random_state: int | None = 0
    ) -> tuple["TrainingSet", "TrainingSet"]:
        """Hold out ``test_size`` of the rows; with groups, whole groups go to one side (no group on both).

        Stratified by ``y`` when ``stratify`` and labels exist (``StratifiedGroupKFold`` when there are groups).
        """
        from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

        validate_params({"test_size": test_size, "stratify": stratify, "random_state": random_state},
                        _SPLIT_CONSTRAINTS, "TrainingSet.split")
        rows = np.arange(self.n_rows)
        strat = stratify and self.y is not None
        if self.groups is not None:
            if strat:
                n_splits = max(2, int(round(1.0 / test_size)))
                splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
                train, test = next(splitter.split(rows, self.y, self.groups))
            else:
                splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=random_state)
                train, test = next(splitter.split(rows, groups=self.groups))
        else:
            train, test = train_test_split(
                rows, test_size=test_size, stratify=self.y if strat else None, random_state=random_state
            )
        return self.subset(np.sort(train)), self.subset(np.sort(test))

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}: {v}" for k, v in self.dims.items())
        extras = []
        if self.y is not None:
            extras.append(f"classes={len(np.unique(self.y))}")
        if self.groups is not None:
            extras.append(f"groups={len(np.unique(self.groups))}")
        if self.columns is not None:
            extras.append(f"columns={list(self.columns.columns)}")
        tail = (", " + ", ".join(extras)) if extras else ""
        return f"TrainingSet(rows={self.n_rows}, blocks={{{dims}}}{tail})"


# -- join ----------------------------------------------------------------------------------------------------
def read_labels(labels: Any, *, what: str = "labels") -> pa.Table:
    """A labels (or keys) table from a .parquet/.csv/.tsv path or anything ``featurestore`` writes from (a pyarrow
    Table, a pandas or polars DataFrame, an Arrow stream, a dict of columns); ``what`` names it in errors."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.exists():
            raise MissingFileError(f"{what.capitalize()} file {str(path)!r} does not exist.")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            return pacsv.read_csv(path, parse_options=opts)
        raise ValidationError(f"Cannot read {what} from {str(path)!r}: expected a .parquet or .csv file.")
    try:
        return to_table(labels)
    except TypeError:
        raise InvalidTypeError(
            f"{what} must be a pyarrow Table, a pandas or polars DataFrame, a dict of columns or a path to a "
            f".parquet/.csv file. Got {type(labels).__name__} instead."
        ) from None


def _key_examples(keys: pa.Table, limit: int = _N_EXAMPLES) -> list:
    head = keys.slice(0, limit).to_pylist()
    names = keys.column_names
    if len(names) == 1:
        return [row[names[0]] for row in head]
    return [tuple(row[n] for n in names) for row in head]


def _align_key_types(labels_keys: pa.Table, set_keys: pa.Table, set_name: str) -> pa.Table:
    """Cast the labels' key columns to the feature set's key types (CSV ids often read as int vs string)."""
    arrays = []
    for name in labels_keys.column_names:
        col = labels_keys.column(name)
        target = set_keys.schema.field(name).type
        if col.type != target:
            try:
                col = col.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidTypeError(
                    f"Key column {name!r} is {col.type} in labels but {target} in feature set {set_name!r}, "
                    f"and cannot be cast: {exc}"
                ) from exc
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=labels_keys.column_names)


def _match_rows(con, labels_keys: pa.Table, set_keys: pa.Table, key: list[str], *, times: pa.Array | None = None,
                set_times: pa.Array | None = None) -> np.ndarray:
    """For each labels row, the row number of the same key in the feature set, or -1: one DuckDB left join.

    With ``times`` (each labels row's time) and ``set_times`` (each set row's ``event_time``), an ASOF join: the row
    of the same key with the latest event time at or before the label's, so no labels row sees a later embedding.
    """
    left, right = labels_keys, set_keys.select(key)
    on = " AND ".join(f"l.{quote_ident(k)} = r.{quote_ident(k)}" for k in key)  # key names come from files
    join = "LEFT JOIN"
    if times is not None:
        left, right = left.append_column(_TIME, times), right.append_column(_TIME, set_times)
        on, join = f"{on} AND l.{quote_ident(_TIME)} >= r.{quote_ident(_TIME)}", "ASOF LEFT JOIN"
    left = left.append_column(_ROW, pa.array(np.arange(labels_keys.num_rows, dtype=np.int64)))
    right = right.append_column(_ROW, pa.array(np.arange(set_keys.num_rows, dtype=np.int64)))
    con.register("stackers_left", left)
    con.register("stackers_right", right)
    try:
        result = con.execute(
            f"SELECT l.{quote_ident(_ROW)} AS lrow, coalesce(r.{quote_ident(_ROW)}, -1) AS rrow "
            f"FROM stackers_left l {join} stackers_right r ON {on} ORDER BY lrow"
        ).fetchnumpy()
    finally:
        con.unregister("stackers_left")
        con.unregister("stackers_right")
    lrow = np.asarray(result["lrow"], dtype=np.int64)
    if len(lrow) != labels_keys.num_rows or np.any(lrow != np.arange(labels_keys.num_rows)):
        raise ValidationError("A feature set holds duplicate keys; the join is ambiguous. Run `featurestore doctor`.")
    return np.asarray(result["rrow"], dtype=np.int64)


def _label_times(table: pa.Table, column: str) -> pa.Array:
    """The labels' ``column`` as UTC timestamps without a zone (naive values are UTC), for the ASOF join."""
    if column not in table.column_names:
        raise ValidationError(f"as_of names {column!r}, which is not a column of the labels. Columns: {table.column_names}.")
    col = table.column(column).combine_chunks()
    typ = col.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):  # ISO text, read as store.get(as_of=...) reads it
        col = pa.array([None if v is None else parse_as_of(v) for v in col.to_pylist()], pa.timestamp("us", tz="UTC"))
    elif pa.types.is_date(typ):
        col = col.cast(pa.timestamp("us"))
    elif not pa.types.is_timestamp(typ):
        raise InvalidTypeError(f"The as_of column {column!r} must hold timestamps (or dates, or ISO strings); got {typ}.")
    if col.null_count:
        raise ValidationError(f"The as_of column {column!r} holds {col.null_count} nulls: each labels row needs a time.")
    return _utc_naive(col)


def _utc_naive(col: pa.Array) -> pa.Array:
    # Arrow stores zoned timestamps as UTC instants: dropping the zone keeps the UTC wall time; naive ones are UTC.
    return col.cast(pa.timestamp("us"))


def join(
    store,
    names: Sequence[str],
    labels: Any = None,
    *,
    key: str | Sequence[str] = "id",
    label: str | None = "label",
    groups: str | None = None,
    columns: Sequence[str] | None = None,
    how: str = "inner",
    versions: dict[str, int] | None = None,
    as_of: str | None = None,
) -> TrainingSet:
    """Join feature sets ``names`` from ``store`` with ``labels`` by ``key`` into an aligned TrainingSet.

    ``labels`` is a table (pyarrow, pandas, polars, a dict of columns) or a .parquet/.csv path with the key column(s),
    optionally the ``label`` column (absent at prediction time: ``y`` is then None), a ``groups`` column and extra
    ``columns`` to carry through. ``labels=None`` takes every key of the first feature set. Rows keep the labels' order.
    Keys missing from a set are reported in ``.missing`` and a ``MissingKeysWarning``; ``how="inner"`` drops them,
    ``how="error"`` raises. ``versions`` pins feature set versions (latest otherwise).

    Point in time: ``as_of="label_time"`` names a timestamp column of the labels; each labels row then gets, per set,
    the newest embedding of its key whose ``event_time`` is at or before that time (a DuckDB ASOF JOIN over every
    committed row, not only the newest), so no row sees the future. A key may then appear in several labels rows.
    Rows with no embedding by their time count as missing (``how`` as above). Naive times are UTC.
    """
    import duckdb

    names = [names] if isinstance(names, str) else list(names) if isinstance(names, Iterable) else names
    validate_params({"names": names, "how": how}, _JOIN_CONSTRAINTS, "join")
    versions = dict(versions or {})
    for name, v in versions.items():
        if name not in names:
            raise ValidationError(f"versions names {name!r}, which is not among the joined sets {names!r}.")
        validate_params({name: v}, {name: [Interval(Integral, 0, None), None]}, "join versions")

    sets = {name: store.get(name, version=versions.get(name)) for name in names}
    key_list = [key] if isinstance(key, str) else list(key)
    for name, fs in sets.items():
        if list(fs.key) != key_list:
            raise ValidationError(f"Feature set {name!r} is keyed by {list(fs.key)!r}, not {key_list!r}.")

    if labels is None:
        table = sets[names[0]].keys()
        label = None if label not in table.column_names else label
    else:
        table = read_labels(labels)
    absent = [k for k in key_list if k not in table.column_names]
    if absent:
        raise ValidationError(f"Labels have no key column {absent[0]!r}. Columns: {table.column_names}.")
    for what, col in (("groups", groups), *(("columns", c) for c in (columns or ()))):
        if col is not None and col not in table.column_names:
            raise ValidationError(f"The {what} column {col!r} is not in the labels. Columns: {table.column_names}.")

    labels_keys = table.select(key_list)
    times = None if as_of is None else _label_times(table, as_of)
    histories: dict[str, np.ndarray] = {}
    con = duckdb.connect()
    try:
        dup = labels_keys.num_rows - labels_keys.group_by(key_list).aggregate([]).num_rows
        if dup and as_of is None:
            raise ValidationError(f"Labels hold {dup} duplicate keys; each key must appear once.")
        null_keys = sum(labels_keys.column(k).null_count for k in key_list)
        if null_keys:
            raise ValidationError(f"Labels hold {null_keys} null key values.")
        matches, missing, keep = {}, {}, np.ones(table.num_rows, dtype=bool)
        for i, (name, fs) in enumerate(sets.items()):
            history = None if as_of is None else read_history(fs)
            set_keys = fs.keys() if history is None else history.select(key_list)
            aligned = _align_key_types(labels_keys, set_keys, name)
            if i == 0:
                labels_keys = aligned  # the TrainingSet's keys take the store's key types
            if history is None:
                rows = _match_rows(con, aligned, set_keys, key_list)
            else:
                rows = _match_rows(con, aligned, set_keys, key_list, times=times,
                                   set_times=_utc_naive(history.column(EVENT_TIME).combine_chunks()))
                histories[name] = to_matrix(history.column(EMBEDDING), fs.dim)
            matches[name] = rows
            lost = rows < 0
            missing[name] = {"count": int(lost.sum()), "examples": _key_examples(labels_keys.filter(pa.array(lost)))}
            keep &= ~lost
    finally:
        con.close()

    lost_sets = {n: m for n, m in missing.items() if m["count"]}
    if lost_sets:
        when = "" if as_of is None else f" at or before their {as_of!r}"
        detail = "; ".join(
            f"{m['count']} of {table.num_rows} label keys are missing from feature set {n!r} (v{sets[n].version}){when}, "
            f"e.g. {', '.join(repr(e) for e in m['examples'])}"
            for n, m in lost_sets.items()
        )
        if how == "error":
            raise MissingKeysError(f"{detail}. Pass how='inner' to drop them with a warning.")
        warnings.warn(
            f"{detail}. Dropped {int((~keep).sum())} rows (how='inner'); pass how='error' to fail instead.",
            MissingKeysWarning,
            stacklevel=2,
        )

    kept = np.flatnonzero(keep)
    blocks = {}
    for name, fs in sets.items():
        matrix = histories[name] if name in histories else np.asarray(fs.to_numpy(), dtype=np.float32)
        blocks[name] = matrix[matches[name][kept]]
    kept_pa = pa.array(kept)
    y = None
    if label is not None and label in table.column_names:
        y_col = table.column(label).take(kept_pa)
        if y_col.null_count:
            raise ValidationError(f"The label column {label!r} holds {y_col.null_count} nulls among the joined rows.")
        y = y_col.to_numpy(zero_copy_only=False)
    group_arr = None
    if groups is not None:
        group_arr = table.column(groups).take(kept_pa).to_numpy(zero_copy_only=False)
    extra = None
    if columns:
        extra = table.select(list(columns)).take(kept_pa).to_pandas()
    sources = {
        name: {"version": int(fs.version), "spec": dict(fs.spec), "dim": int(fs.dim)} | ({"as_of": as_of} if as_of else {})
        for name, fs in sets.items()
    }
    return TrainingSet(
        blocks=blocks,
        y=y,
        keys=labels_keys.take(kept_pa),
        groups=group_arr,
        columns=extra,
        sources=sources,
        missing=missing,
    )

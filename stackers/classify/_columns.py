"""The table columns a meta learner sees beside the base scores: numbers stay numbers, the rest are categories.

A ``ColumnEncoder`` is fitted on the TrainingSet's ``columns`` frame and keeps its state as plain JSON (names, kinds,
training means, category lists), so a saved model re-encodes new rows exactly as it encoded the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from featurestore.errors import ValidationError

__all__ = ["ColumnEncoder"]


@dataclass
class _Column:
    name: str
    kind: str  # "numeric" | "categorical"
    fill: float = 0.0  # numeric: training mean, used where a value is missing (logistic only)
    categories: tuple[str, ...] = ()  # categorical: known values, as strings, sorted


class ColumnEncoder:
    """Encodes the TrainingSet's extra columns: numbers stay numbers, everything else is a category.

    Pandas ``category`` dtype forces a column to be categorical (e.g. integer department ids). Categories are
    compared as strings so they survive a round trip through JSON; unseen categories encode as missing.
    """

    def __init__(self, columns: list[_Column] | None = None):
        self.columns = list(columns or [])

    def fit(self, df: pd.DataFrame | None) -> "ColumnEncoder":
        self.columns = []
        if df is None:
            return self
        for name in df.columns:
            s = df[name]
            if (is_numeric_dtype(s) or is_bool_dtype(s)) and not isinstance(s.dtype, pd.CategoricalDtype):
                values = s.astype(np.float64)
                mean = float(np.nanmean(values)) if values.notna().any() else 0.0
                self.columns.append(_Column(str(name), "numeric", fill=mean))
            else:
                cats = tuple(sorted(set(_as_str(s).dropna().tolist())))
                self.columns.append(_Column(str(name), "categorical", categories=cats))
        return self

    @property
    def numeric_names(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[_Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    def check(self, df: pd.DataFrame | None, n_rows: int) -> None:
        if not self.columns:
            return
        names = [c.name for c in self.columns]
        if df is None:
            raise ValidationError(f"This model was trained with table columns {names}; pass them (a TrainingSet's columns).")
        absent = [n for n in names if n not in df.columns]
        if absent:
            raise ValidationError(f"Missing table column(s) {absent}; the model was trained with {names}.")
        if len(df) != n_rows:
            raise ValidationError(f"The table columns have {len(df)} rows but the blocks have {n_rows}.")

    def numeric(self, df: pd.DataFrame | None, *, impute: bool) -> np.ndarray:
        cols = [c for c in self.columns if c.kind == "numeric"]
        if not cols:
            return np.empty((len(df), 0))
        out = np.column_stack([pd.to_numeric(df[c.name], errors="coerce").astype(np.float64) for c in cols])
        if impute:
            fills = np.array([c.fill for c in cols])
            out = np.where(np.isnan(out), fills, out)
        return out

    def codes(self, df: pd.DataFrame | None) -> np.ndarray:
        """Integer codes (as float, NaN for missing or unseen) of each categorical column."""
        cols = self.categorical
        if not cols:
            return np.empty((len(df), 0))
        out = []
        for c in cols:
            # -1 for missing or unseen values, which both trees and one-hot treat as "no category"
            codes = pd.Index(list(c.categories), dtype=object).get_indexer(_as_str(df[c.name])).astype(np.float64)
            codes[codes < 0] = np.nan
            out.append(codes)
        return np.column_stack(out)

    def onehot(self, df: pd.DataFrame | None) -> np.ndarray:
        cols = self.categorical
        if not cols:
            return np.empty((len(df), 0))
        codes = self.codes(df)
        parts = []
        for j, c in enumerate(cols):
            block = np.zeros((codes.shape[0], len(c.categories)))
            ok = ~np.isnan(codes[:, j])
            block[np.flatnonzero(ok), codes[ok, j].astype(np.int64)] = 1.0
            parts.append(block)
        return np.hstack(parts)

    def onehot_names(self) -> list[str]:
        return [f"{c.name}={v}" for c in self.categorical for v in c.categories]

    def state(self) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "kind": c.kind, "fill": c.fill, "categories": list(c.categories)} for c in self.columns
        ]

    @classmethod
    def from_state(cls, state: list[dict[str, Any]]) -> "ColumnEncoder":
        return cls([_Column(d["name"], d["kind"], float(d["fill"]), tuple(d["categories"])) for d in state])


def _as_str(s: pd.Series) -> pd.Series:
    """Values as strings, missing kept missing (so 3 and "3" are one category, None is none)."""
    return s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v))

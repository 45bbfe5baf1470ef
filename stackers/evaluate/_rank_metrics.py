"""Top-k ranking metrics over users, with bootstrap intervals over users (vectorised numpy).

Everything starts from the 1-based rank of each held-out item among the items a user could be recommended (the
whole catalogue minus the user's training items): a model is scored on its full ranking, never on a sampled set of
negatives. For one user with held-out items at ranks ``r``:

- ``recall@k`` = (held-out items ranked <= k) / (held-out items);
- ``ndcg@k`` = sum over those of 1 / log2(rank + 1), divided by the best possible sum (all of them on top);
- ``mrr`` = 1 / (the best rank among them), over the full ranking (no cut-off);
- ``coverage@k`` (a model-level number): distinct items in all users' top-k lists / catalogue size.

The per-user values are averaged over users (each user counts once, however many held-out items they have).
Intervals resample users with :func:`stackers.evaluate._metrics.bootstrap_indices`, the same draws for every model, so the
per-resample differences of two models give a paired interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featurestore.errors import ValidationError
from stackers.evaluate._metrics import CONFIDENCE, bootstrap_indices, interval

__all__ = ["RANK_METRICS", "per_user_metrics", "coverage", "summarize", "paired_difference"]

RANK_METRICS = ("recall", "ndcg", "mrr")


def per_user_metrics(ranks: np.ndarray, owner: np.ndarray, n_users: int, k: int = 10) -> dict[str, np.ndarray]:
    """``recall@k``, ``ndcg@k`` and ``mrr`` per user from the 1-based ``ranks`` of held-out items; ``owner[i]`` is
    the user position (0..n_users-1) of held-out item ``i``. Users without held-out items get NaN."""
    ranks = np.asarray(ranks, dtype=np.float64)
    owner = np.asarray(owner, dtype=np.int64)
    if ranks.shape != owner.shape:
        raise ValidationError(f"ranks and owner must have one entry per held-out item; got {ranks.shape} and {owner.shape}.")
    if ranks.size and (ranks.min() < 1 or not np.isfinite(ranks).all()):
        raise ValidationError("ranks must be finite and 1-based (the best item has rank 1).")
    if owner.size and (owner.min() < 0 or owner.max() >= n_users):
        raise ValidationError(f"owner must hold user positions in [0, {n_users - 1}].")
    n_held = np.bincount(owner, minlength=n_users).astype(np.float64)
    hit = ranks <= k
    hits = np.bincount(owner, weights=hit.astype(np.float64), minlength=n_users)
    dcg = np.bincount(owner, weights=np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0), minlength=n_users)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal = np.where(n_held > 0, discounts[np.minimum(n_held, k).astype(int) - 1], np.nan)
    best = np.full(n_users, np.inf)
    np.minimum.at(best, owner, ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"recall": hits / n_held, "ndcg": dcg / ideal, "mrr": np.where(n_held > 0, 1.0 / best, np.nan)}


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k list (``top_items``: (users, k) indices;
    negative entries are padding)."""
    top = np.asarray(top_items).ravel()
    return float(len(np.unique(top[top >= 0])) / n_items) if n_items else float("nan")


def summarize(values: dict[str, np.ndarray], idx: np.ndarray | None, confidence: float = CONFIDENCE
              ) -> dict[str, dict[str, float]]:
    """Mean and bootstrap interval of each per-user metric; ``idx`` from :func:`bootstrap_indices` over the same
    users (``None``: no intervals)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        entry = {"value": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")}
        if idx is not None and idx.size:
            low, high = interval(np.nanmean(v[idx], axis=1), confidence)
            entry |= {"low": low, "high": high}
        out[name] = entry
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, idx: np.ndarray, confidence: float = CONFIDENCE
                      ) -> dict[str, float]:
    """Mean of per-user ``a - b`` and its interval over the same user resamples (users in the same order)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = interval(np.nanmean(d[idx], axis=1), confidence)
    return {"value": float(np.nanmean(d)), "low": low, "high": high}


def resamples(n_users: int, n_boot: int, random_state: int | None) -> np.ndarray | None:
    """The user resamples shared by every model of one evaluation (``None`` when ``n_boot`` is 0)."""
    return bootstrap_indices(n_users, n_boot, random_state) if n_boot else None


def as_row(name: str, summary: dict[str, dict[str, float]], cov: float, k: int) -> dict[str, Any]:
    """One flat table row: model, recall@k, its interval, ndcg@k, its interval, mrr, coverage@k."""
    row: dict[str, Any] = {"model": name}
    for m in RANK_METRICS:
        label = m if m == "mrr" else f"{m}@{k}"
        row[label] = summary[m]["value"]
        if "low" in summary[m]:
            row[f"{label}_low"], row[f"{label}_high"] = summary[m]["low"], summary[m]["high"]
    row[f"coverage@{k}"] = cov
    return row

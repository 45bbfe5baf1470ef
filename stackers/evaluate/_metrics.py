"""Held-out metrics with bootstrap intervals, vectorised over resamples.

One code path computes a metric for the full test set and for every bootstrap resample (a resample is just
another row index), so point estimates and intervals can never disagree in definition. The definitions match
scikit-learn's ``accuracy_score``, ``f1_score(average="macro")``, ``log_loss`` and
``roc_auc_score(multi_class="ovr", average="macro")``; ``tests/stackers/evaluate/test_metrics.py`` checks that.

Accuracy and macro-F1 score the labels a model actually predicts (``pred``): a model with a tuned decision threshold
predicts by that threshold, not by the largest probability, and is scored so. Without ``pred`` they score the argmax.
Log loss and ROC-AUC always score the probabilities.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from featurestore.errors import ValidationError
from featurestore.utils import Interval

__all__ = ["METRICS", "HIGHER_IS_BETTER", "BOOTSTRAP_CONSTRAINTS", "CONFIDENCE", "score", "bootstrap_scores",
           "bootstrap_indices", "interval"]

METRICS = ("accuracy", "macro_f1", "log_loss", "roc_auc")
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "log_loss": False, "roc_auc": True}
# The parameters of every function that bootstraps (0 resamples: point estimates only; the seed goes to default_rng).
BOOTSTRAP_CONSTRAINTS = {"n_boot": [Interval(Integral, 0, None)], "random_state": [Interval(Integral, 0, None), None]}
CONFIDENCE = 0.95
_CELLS = 4_000_000  # rows x resamples per vectorised chunk (~32 MB of float64)


def bootstrap_indices(n: int, n_boot: int, random_state: int | None) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement; shared by every model so comparisons are paired."""
    rng = np.random.default_rng(random_state)
    return rng.integers(0, n, size=(n_boot, n), dtype=np.int64)


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each row appears in each resample: (n_boot, n). Every metric below is a weighted sum over rows,
    so a resample costs O(n) and scores are sorted once per class, not once per resample."""
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _macro_f1(y: np.ndarray, pred: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    cells = np.zeros((len(y), k * k))
    cells[np.arange(len(y)), y * k + pred] = 1.0
    cm = (W @ cells).reshape(-1, k, k)  # weighted confusion matrix per resample
    tp = np.diagonal(cm, axis1=1, axis2=2)
    denom = cm.sum(axis=2) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = denom > 0  # scikit-learn averages over labels seen in y_true or y_pred
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def _roc_auc(y: np.ndarray, proba: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    """Mann-Whitney AUC per class (one-vs-rest; ties count one half), macro averaged over classes that have both
    positives and negatives in the resample."""
    classes = [1] if k == 2 else range(k)
    total = np.zeros(W.shape[0])
    counted = np.zeros(W.shape[0])
    for c in classes:
        order = np.argsort(proba[:, c], kind="stable")
        scores = proba[order, c]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of tied scores
        Ws = W[:, order]
        pos = (y[order] == c)
        g_pos = np.add.reduceat(Ws * pos, starts, axis=1)
        g_neg = np.add.reduceat(Ws * ~pos, starts, axis=1)
        below = np.cumsum(g_neg, axis=1) - g_neg
        u = (g_pos * (below + 0.5 * g_neg)).sum(axis=1)
        n_pos, n_neg = g_pos.sum(axis=1), g_neg.sum(axis=1)
        ok = (n_pos > 0) & (n_neg > 0)
        auc = np.divide(u, n_pos * n_neg, out=np.zeros_like(u), where=ok)
        total += np.where(ok, auc, 0.0)
        counted += ok
    return np.divide(total, counted, out=np.full_like(total, np.nan), where=counted > 0)


def _scores_for(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    n, k = proba.shape
    correct = (pred == y).astype(np.float64)
    eps = np.finfo(proba.dtype).eps
    nll = -np.log(np.clip(proba[np.arange(n), y], eps, 1 - eps))
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    step = max(1, _CELLS // max(1, n))
    for start in range(0, idx.shape[0], step):
        W = _weights(idx[start:start + step], n)
        size = W.sum(axis=1)
        out["accuracy"].append(W @ correct / size)
        out["macro_f1"].append(_macro_f1(y, pred, W, k))
        out["log_loss"].append(W @ nll / size)
        out["roc_auc"].append(_roc_auc(y, proba, W, k))
    return {m: np.concatenate(v) for m, v in out.items()}


def _check(y: np.ndarray, proba: np.ndarray, pred: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y.shape[0] or proba.shape[1] < 2:
        raise ValidationError(f"proba must be (n_rows, n_classes >= 2) for {y.shape[0]} labels; got {proba.shape}.")
    k = proba.shape[1]
    if y.min(initial=0) < 0 or y.max(initial=0) >= k:
        raise ValidationError("y must hold class indices 0..n_classes-1 into the proba columns.")
    if pred is None:
        return y, proba, np.argmax(proba, axis=1)
    pred = np.asarray(pred)
    if pred.shape != y.shape or pred.dtype.kind not in "iu" or pred.min(initial=0) < 0 or pred.max(initial=0) >= k:
        raise ValidationError(f"pred must hold {y.shape[0]} predicted class indices 0..{k - 1} (one per row of proba); "
                         f"got {pred.dtype} of shape {pred.shape}.")
    return y, proba, pred.astype(np.int64, copy=False)


def score(y: np.ndarray, proba: np.ndarray, pred: np.ndarray | None = None) -> dict[str, float]:
    """Point estimates on all rows. ``y`` holds class indices into the columns of ``proba``; ``pred`` the predicted
    class indices that accuracy and macro-F1 score (default: the argmax of ``proba``)."""
    y, proba, pred = _check(y, proba, pred)
    full = np.arange(len(y))[None, :]
    return {m: float(v[0]) for m, v in _scores_for(y, proba, pred, full).items()}


def bootstrap_scores(y: np.ndarray, proba: np.ndarray, idx: np.ndarray,
                     pred: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each metric on each resample ``idx[b]`` (from ``bootstrap_indices``): arrays of shape (n_boot,). ``pred`` as
    in ``score``."""
    y, proba, pred = _check(y, proba, pred)
    return _scores_for(y, proba, pred, idx)


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of per-resample ``values`` (NaN resamples, e.g. ROC-AUC with one class, ignored);
    (nan, nan) when none is finite. For a paired difference pass the per-resample differences of two models scored
    on the same resamples: their spread is much smaller than either model's own, because row difficulty cancels."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(values, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return float(low), float(high)

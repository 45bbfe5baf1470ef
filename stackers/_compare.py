"""Honest evaluation: every single feature set's probe, all blocks concatenated, and the stack, on held-out rows.

A stack is only worth its complexity if it beats the best single probe and the plain concatenation on data none
of them trained on. All models are scored on the same bootstrap resamples (paired), with 95% intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from featurestore._validation import validate_params

from featurestore._validation import InstanceOf
from ._join import TrainingSet
from ._metrics import BOOTSTRAP_CONSTRAINTS, HIGHER_IS_BETTER, METRICS, bootstrap_indices, bootstrap_scores, score
from ._probes import LogisticProbe, expand_to_classes
from ._stacking import StackingClassifier

__all__ = ["Comparison", "compare"]

PRIMARY = "macro_f1"
CONFIDENCE = 0.95
_LABELLED_SET = InstanceOf(TrainingSet, "a TrainingSet (from stackers.join)")
_CONSTRAINTS = {
    "train": [_LABELLED_SET],
    "test": [_LABELLED_SET],
    "model": [InstanceOf(StackingClassifier), None],
    **BOOTSTRAP_CONSTRAINTS,
}


def _clean(x: float) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. ROC-AUC with one class present) is written as null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class Comparison:
    """Held-out metrics of several models on one test set, each with a paired-bootstrap 95% interval.

    ``results[model][metric]`` is ``{"value", "low", "high"}``; ``probas[model]`` the test probabilities
    (columns in ``classes`` order), kept for plots; ``kinds[model]`` is "probe", "concat" or "stack".
    """

    classes: np.ndarray
    y_true: np.ndarray
    probas: dict[str, np.ndarray]
    kinds: dict[str, str]
    results: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    n_boot: int = 1000
    random_state: int | None = 0
    model: StackingClassifier | None = None

    @classmethod
    def from_probas(cls, classes, y_true, probas: dict[str, np.ndarray], kinds: dict[str, str], *,
                    n_boot: int = 1000, random_state: int | None = 0, model=None) -> "Comparison":
        """Score each model's probabilities on the same bootstrap resamples of the test rows."""
        classes = np.asarray(classes)
        y_true = np.asarray(y_true)
        y_enc = _encode(classes, y_true)
        idx = bootstrap_indices(len(y_enc), int(n_boot), random_state) if n_boot else None
        lo_q, hi_q = 100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2
        results = {}
        for name, proba in probas.items():
            point = score(y_enc, proba)
            boot = bootstrap_scores(y_enc, proba, idx) if idx is not None else None
            results[name] = {}
            for m in METRICS:
                low = high = float("nan")
                if boot is not None and np.isfinite(boot[m]).any():
                    low, high = np.nanpercentile(boot[m], [lo_q, hi_q])
                results[name][m] = {"value": _clean(point[m]), "low": _clean(float(low)), "high": _clean(float(high))}
        return cls(classes, y_true, dict(probas), dict(kinds), results, int(n_boot), random_state, model)

    @classmethod
    def from_model(cls, model: StackingClassifier, test: TrainingSet, *, n_boot: int = 1000,
                   random_state: int | None = 0) -> "Comparison":
        """The stack and its own per-block probes (refit on all training rows) on ``test``; no concat baseline,
        which would need the training rows."""
        validate_params({"test": test, "n_boot": n_boot, "random_state": random_state}, _CONSTRAINTS,
                        "Comparison.from_model")
        check_is_fitted(model)
        _require_labels(test, "test")
        probas, kinds = {}, {}
        for block in model.blocks_:
            probe = model.base_estimators_[block].get("logistic")
            if probe is not None:
                probas[f"probe:{block}"] = _full_proba(probe, test.blocks[block], len(model.classes_))
                kinds[f"probe:{block}"] = "probe"
        probas["stack"] = model.predict_proba(test)
        kinds["stack"] = "stack"
        return cls.from_probas(model.classes_, test.y, probas, kinds, n_boot=n_boot, random_state=random_state,
                               model=model)

    # -- views -----------------------------------------------------------------------------------------------
    @property
    def best(self) -> str:
        """The model with the highest held-out macro-F1 (ties: the simpler model, listed first)."""
        return max(self.results, key=lambda name: _sortable(self.results[name][PRIMARY]["value"]))

    @property
    def n_test(self) -> int:
        return int(len(self.y_true))

    def table(self) -> pd.DataFrame:
        """One row per model; for each metric its value and the 95% interval bounds (``<metric>_low/_high``)."""
        rows = []
        for name, metrics in self.results.items():
            row: dict[str, Any] = {"model": name, "kind": self.kinds.get(name, "")}
            for m in METRICS:
                row[m] = metrics[m]["value"]
                row[f"{m}_low"] = metrics[m]["low"]
                row[f"{m}_high"] = metrics[m]["high"]
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers: what ``report`` writes to metrics.json."""
        out: dict[str, Any] = {
            "classes": [c.item() if isinstance(c, np.generic) else c for c in self.classes.tolist()],
            "n_test": self.n_test,
            "n_boot": self.n_boot,
            "confidence": CONFIDENCE,
            "random_state": self.random_state,
            "primary_metric": PRIMARY,
            "higher_is_better": dict(HIGHER_IS_BETTER),
            "best": self.best,
            "models": {
                name: {"kind": self.kinds.get(name, ""), "metrics": {m: dict(v) for m, v in metrics.items()}}
                for name, metrics in self.results.items()
            },
        }
        if self.model is not None:
            out["stack"] = {
                "meta": self.model.meta_name_,
                "meta_scores": dict(self.model.meta_scores_),
                "blocks": dict(self.model.blocks_),
                "columns": list(self.model.columns_),
                "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                           for k, v in self.model.get_params(deep=False).items()},
                "sources": self.model.sources_,
            }
        return out

    def to_text(self) -> str:
        """A plain-text table: one line per model, value [low, high] per metric, the best model marked."""
        header = ["model"] + [m for m in METRICS]
        lines = []
        for name, metrics in self.results.items():
            cells = [name + (" *" if name == self.best else "")]
            for m in METRICS:
                v = metrics[m]
                cells.append(f"{_fmt(v['value'])} [{_fmt(v['low'])}, {_fmt(v['high'])}]")
            lines.append(cells)
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        render = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        rule = "  ".join("-" * w for w in widths)
        foot = (f"n_test={self.n_test}, {int(CONFIDENCE * 100)}% paired bootstrap intervals over {self.n_boot} "
                f"resamples; * best {PRIMARY}; log_loss: lower is better")
        return "\n".join([render(header), rule, *(render(r) for r in lines), "", foot])

    def __repr__(self) -> str:
        return f"Comparison(models={list(self.results)}, n_test={self.n_test}, best={self.best!r})"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _sortable(x: float | None) -> float:
    return -math.inf if x is None else x


def _encode(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(classes, y)
    pos = np.clip(pos, 0, len(classes) - 1)
    unseen = classes[pos] != y
    if np.any(unseen):
        raise ValueError(
            f"The test labels hold {len(np.unique(y[unseen]))} classes never seen in training, "
            f"e.g. {np.unique(y[unseen])[:5].tolist()}."
        )
    return pos.astype(np.int64)


def _full_proba(est, X: np.ndarray, n_classes: int) -> np.ndarray:
    return expand_to_classes(est.predict_proba(X), est.classes_, n_classes)


def _require_labels(ts: TrainingSet, what: str) -> None:
    if ts.y is None:
        raise ValueError(f"The {what} TrainingSet has no labels; join it with a label column.")


def compare(train: TrainingSet, test: TrainingSet, model: StackingClassifier | None = None, *,
            n_boot: int = 1000, random_state: int | None = 0) -> Comparison:
    """Fit on ``train``, score on ``test``: each block's probe, all blocks concatenated, and the stack.

    ``model`` is the stack to evaluate (default ``StackingClassifier()``); an unfitted one is cloned and fitted on
    ``train``, a fitted one is used as is. Probes use the stack's ``C``. Metrics: accuracy, macro-F1, log loss,
    ROC-AUC (macro one-vs-rest), each with a paired bootstrap 95% interval over ``n_boot`` resamples.
    """
    validate_params({"train": train, "test": test, "model": model, "n_boot": n_boot, "random_state": random_state},
                    _CONSTRAINTS, "compare")
    _require_labels(train, "train")
    _require_labels(test, "test")
    if list(train.blocks) != list(test.blocks):
        raise ValueError(f"train has blocks {list(train.blocks)} but test has {list(test.blocks)}.")
    if model is None:
        model = StackingClassifier(random_state=random_state)
    try:
        check_is_fitted(model)
    except NotFittedError:
        model = clone(model).fit(train)
    classes = model.classes_
    y_train = _encode(classes, train.y)
    k = len(classes)
    probas, kinds = {}, {}
    for block in train.blocks:
        probe = LogisticProbe(C=model.C).fit(train.blocks[block], y_train)
        probas[f"probe:{block}"] = _full_proba(probe, test.blocks[block], k)
        kinds[f"probe:{block}"] = "probe"
    if len(train.blocks) > 1:
        probe = LogisticProbe(C=model.C).fit(train.to_numpy(), y_train)
        probas["concat"] = _full_proba(probe, test.to_numpy(), k)
        kinds["concat"] = "concat"
    probas["stack"] = model.predict_proba(test)
    kinds["stack"] = "stack"
    return Comparison.from_probas(classes, test.y, probas, kinds, n_boot=n_boot, random_state=random_state,
                                  model=model)

"""Honest evaluation: every single feature set's tuned probe, all sets concatenated, and the stack, on held-out rows.

A stack is only worth its complexity if it beats what a careful user would write by hand without it. So each
baseline is a ``LogisticProbeCV`` tuned the way such a user would tune one (``C`` and scaling by inner CV, class
weights tried both ways, macro-F1 as the criterion, and for binary problems a decision threshold chosen on its
out-of-fold scores), fitted on the training rows only, with grouped inner folds when the training rows have groups.

All models are scored on the same bootstrap resamples of the test rows (paired), with 95% intervals. Accuracy and
macro-F1 score the labels each model actually predicts (by its threshold, when it has one); log loss and ROC-AUC its
probabilities. The headline is a paired interval of the stack's macro-F1 minus the best baseline's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import UnknownNameError, ValidationError
from featurestore.utils import InstanceOf, Interval, validate_params
from stackers.classify._probes import expand_to_classes
from stackers.classify._stacking import StackingClassifier
from stackers.classify._tuning import LogisticProbeCV
from stackers.data._join import TrainingSet
from stackers.evaluate._metrics import (
    BOOTSTRAP_CONSTRAINTS,
    CONFIDENCE,
    HIGHER_IS_BETTER,
    METRICS,
    bootstrap_indices,
    bootstrap_scores,
    interval,
    score,
)

PRIMARY = "macro_f1"
# Rows a stack is compared against. "base" rows (a saved model's own base learners, shown when the training rows
# are not at hand) are a fallback only: they are what the stack is built from, not what a user would write instead.
BASELINE_KINDS = ("probe", "concat")

__all__ = ["Comparison", "compare", "BASELINE_KINDS"]
BASELINE_RULE = ("the best baseline is chosen by point macro-F1 on these same test rows, which favours the baseline "
                 "(its score is the maximum of several noisy ones), so the comparison is conservative")
_DEFAULT_INNER_CV = 5
_LABELLED_SET = InstanceOf(TrainingSet, "a TrainingSet (from stackers.join)")
_CONSTRAINTS = {
    "train": [_LABELLED_SET],
    "test": [_LABELLED_SET],
    "model": [InstanceOf(StackingClassifier), None],
    "n_jobs": [Interval(Integral, None, None), None],
    **BOOTSTRAP_CONSTRAINTS,
}
_FROM_MODEL_CONSTRAINTS = {**_CONSTRAINTS, "train": [_LABELLED_SET, None]}


def _clean(x: float | None) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. ROC-AUC with one class present) is written as null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class Comparison:
    """Held-out metrics of several models on one test set, each with a paired-bootstrap 95% interval.

    ``results[model][metric]`` is ``{"value", "low", "high"}``; ``probas[model]`` the test probabilities (columns in
    ``classes`` order) and ``preds[model]`` the labels the model predicts (by its tuned threshold when it has one),
    kept for plots; ``kinds[model]`` is "probe", "concat", "stack" or "base" (a saved stack's own base learner);
    ``thresholds[model]`` the positive-class cut of a binary model that has one. ``paired`` is the stack's macro-F1
    minus the best baseline's, ``{"model", "baseline", "metric", "value", "low", "high"}``, its interval taken over
    the per-resample differences (the same resamples for both); None without a stack or a baseline. ``notes`` are
    caveats printed with the table (e.g. missing baselines).
    """

    classes: np.ndarray
    y_true: np.ndarray
    probas: dict[str, np.ndarray]
    kinds: dict[str, str]
    results: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    n_boot: int = 1000
    random_state: int | None = 0
    model: StackingClassifier | None = None
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    paired: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    boot: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)  # model -> metric -> (n_boot,)

    @classmethod
    def from_probas(cls, classes, y_true, probas: dict[str, np.ndarray], kinds: dict[str, str], *,
                    preds: dict[str, np.ndarray] | None = None, thresholds: dict[str, float] | None = None,
                    n_boot: int = 1000, random_state: int | None = 0, model=None,
                    notes: list[str] | tuple[str, ...] = ()) -> "Comparison":
        """Score each model on the same bootstrap resamples of the test rows.

        ``probas[name]`` holds probabilities (columns in ``classes`` order); ``preds[name]``, when given, the labels
        that model predicts (values of ``classes``), which accuracy and macro-F1 score; otherwise the argmax.
        """
        classes = np.asarray(classes)
        y_true = np.asarray(y_true)
        y_enc = _encode(classes, y_true)
        preds = dict(preds or {})
        idx = bootstrap_indices(len(y_enc), int(n_boot), random_state) if n_boot else None
        results, boot, labels = {}, {}, {}
        for name, proba in probas.items():
            pred = _encode(classes, np.asarray(preds[name]), what="predicted") if name in preds else None
            labels[name] = classes[np.argmax(proba, axis=1)] if pred is None else np.asarray(preds[name])
            point = score(y_enc, proba, pred)
            boot[name] = bootstrap_scores(y_enc, proba, idx, pred) if idx is not None else {}
            results[name] = {}
            for m in METRICS:
                low, high = interval(boot[name][m], CONFIDENCE) if idx is not None else (math.nan, math.nan)
                results[name][m] = {"value": _clean(point[m]), "low": _clean(low), "high": _clean(high)}
        comp = cls(classes, y_true, dict(probas), dict(kinds), results, int(n_boot), random_state, model,
                   preds=labels, thresholds=dict(thresholds or {}), notes=list(notes), boot=boot)
        baseline = comp.best_baseline
        if "stack" in results and baseline is not None:
            comp.paired = {"model": "stack", "baseline": baseline, **comp.paired_difference("stack", baseline)}
        return comp

    @classmethod
    def from_model(cls, model: StackingClassifier, test: TrainingSet, *, train: TrainingSet | None = None,
                   n_boot: int = 1000, random_state: int | None = 0, n_jobs: int | None = None,
                   notes: list[str] | tuple[str, ...] = ()) -> "Comparison":
        """A fitted stack on ``test`` against the baselines.

        With ``train`` (the rows the model was fitted on), the tuned per-set probes and the concat are refitted on
        them, exactly as ``compare`` does. Without, the baselines cannot be fitted: the rows are the stack and its
        own base learners (``base:<set>``, refit on all its training rows), and a note says the baselines are
        missing. ``notes`` are added to the comparison's own.
        """
        validate_params({"test": test, "train": train, "n_boot": n_boot, "random_state": random_state,
                         "n_jobs": n_jobs}, _FROM_MODEL_CONSTRAINTS, "Comparison.from_model")
        check_is_fitted(model)
        _require_labels(test, "test")
        if train is not None:
            _require_labels(train, "train")
            comp = _compare_fitted(train, test, model, n_boot=n_boot, random_state=random_state, n_jobs=n_jobs)
            comp.notes.extend(notes)
            return comp
        probas, kinds = {}, {}
        for block in model.blocks_:
            est = _own_probe(model.base_estimators_[block])
            if est is not None:
                probas[f"base:{block}"] = _full_proba(est, _block(model, test, block), len(model.classes_))
                kinds[f"base:{block}"] = "base"
        probas["stack"], preds, thresholds = _stack_outputs(model, test)
        kinds["stack"] = "stack"
        missing = ("Baselines missing: without the training rows the tuned per-set probes and the concat cannot be "
                   "fitted; the base:<set> rows are the stack's own base learners, not tuned baselines.")
        return cls.from_probas(model.classes_, test.y, probas, kinds, preds=preds, thresholds=thresholds,
                               n_boot=n_boot, random_state=random_state, model=model, notes=[missing, *notes])

    # -- views -----------------------------------------------------------------------------------------------
    @property
    def best(self) -> str:
        """The model with the highest held-out macro-F1 (ties: the simpler model, listed first)."""
        return max(self.results, key=lambda name: _sortable(self.results[name][PRIMARY]["value"]))

    @property
    def best_baseline(self) -> str | None:
        """The non-stack row with the highest point macro-F1 (ties: listed first): a tuned probe or the concat, or,
        when neither is present, the stack's own best base learner. Chosen on the test rows: conservative."""
        for kinds in (BASELINE_KINDS, ("base",)):
            names = [n for n in self.results if self.kinds.get(n) in kinds]
            if names:
                return max(names, key=lambda n: _sortable(self.results[n][PRIMARY]["value"]))
        return None

    @property
    def n_test(self) -> int:
        return int(len(self.y_true))

    def paired_difference(self, a: str, b: str, metric: str = PRIMARY) -> dict[str, float | None]:
        """``a``'s ``metric`` minus ``b``'s: the point difference and the 95% interval of the per-resample
        differences (both models were scored on the same resamples, so the interval is paired)."""
        for name in (a, b):
            if name not in self.results:
                raise UnknownNameError(f"No model named {name!r} in this comparison. Known: {list(self.results)}.")
        if metric not in METRICS:
            raise ValidationError(f"metric must be one of {METRICS}. Got {metric!r} instead.")
        va, vb = self.results[a][metric]["value"], self.results[b][metric]["value"]
        value = None if va is None or vb is None else va - vb
        low = high = math.nan
        if self.boot.get(a) and self.boot.get(b):
            low, high = interval(self.boot[a][metric] - self.boot[b][metric], CONFIDENCE)
        return {"metric": metric, "value": _clean(value), "low": _clean(low), "high": _clean(high)}

    @property
    def headline(self) -> str | None:
        """One sentence: does the stack beat the best baseline on macro-F1, with the paired 95% interval?"""
        return _headline(self.paired, self.kinds)

    def table(self) -> pd.DataFrame:
        """One row per model; for each metric its value and the 95% interval bounds (``<metric>_low/_high``)."""
        rows = []
        for name, metrics in self.results.items():
            row: dict[str, Any] = {"model": name, "kind": self.kinds.get(name, "")}
            for m in METRICS:
                row[m] = metrics[m]["value"]
                row[f"{m}_low"] = metrics[m]["low"]
                row[f"{m}_high"] = metrics[m]["high"]
            row["threshold"] = self.thresholds.get(name)
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
            "best_baseline": self.best_baseline,
            "headline": self.headline,
            "paired": None if self.paired is None else dict(self.paired, rule=BASELINE_RULE),
            "notes": list(self.notes),
            "models": {
                name: {"kind": self.kinds.get(name, ""), "metrics": {m: dict(v) for m, v in metrics.items()},
                       "threshold": self.thresholds.get(name)}
                for name, metrics in self.results.items()
            },
        }
        if self.model is not None:
            out["stack"] = {
                "meta": self.model.meta_name_,
                "meta_scores": dict(getattr(self.model, "meta_scores_", {}) or {}),
                "threshold": _clean(getattr(self.model, "threshold_", None)),
                "blocks": dict(self.model.blocks_),
                "columns": list(self.model.columns_),
                "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                           for k, v in self.model.get_params(deep=False).items()},
                "sources": self.model.sources_,
            }
        return out

    def to_text(self) -> str:
        """A plain-text table (one line per model, value [low, high] per metric, the best marked), the headline,
        and the notes."""
        header = ["model"] + list(METRICS)
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
        foot = [f"n_test={self.n_test}, {int(CONFIDENCE * 100)}% paired bootstrap intervals over {self.n_boot} "
                f"resamples; * best {PRIMARY}; log_loss: lower is better; accuracy and macro_f1 score each model's "
                "predicted labels (its tuned threshold, when it has one)"]
        if self.thresholds:
            foot.append("thresholds (positive-class cut): "
                        + ", ".join(f"{n} {t:.3f}" for n, t in self.thresholds.items()))
        if self.headline:
            foot.append(f"{self.headline} (paired bootstrap; the best baseline is picked on these test rows, "
                        "which favours it: conservative)")
        foot.extend(self.notes)
        return "\n".join([render(header), rule, *(render(r) for r in lines), "", *foot])

    def __repr__(self) -> str:
        return f"Comparison(models={list(self.results)}, n_test={self.n_test}, best={self.best!r})"


def _headline(paired: dict[str, Any] | None, kinds: dict[str, str]) -> str | None:
    if paired is None or paired["value"] is None:
        return None
    name = paired["baseline"]
    what = "best baseline" if kinds.get(name) in BASELINE_KINDS else "its best own base learner"
    value, low, high = paired["value"], paired["low"], paired["high"]
    label = {"macro_f1": "macro-F1"}.get(paired["metric"], paired["metric"])
    if low is None or high is None:
        return f"stack vs {what} ({name}): {value:+.3f} {label} (no interval: n_boot=0)"
    if low > 0:
        return f"stack beats {what} ({name}) by {value:+.3f} {label} [{low:+.3f}, {high:+.3f}]"
    if high < 0:  # the shortfall and its interval, as positive numbers
        return f"stack is below {what} ({name}) by {-value:.3f} {label} [{-high:.3f}, {-low:.3f}]"
    return f"no significant gain over {what} ({name}): {value:+.3f} {label} [{low:+.3f}, {high:+.3f}]"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _sortable(x: float | None) -> float:
    return -math.inf if x is None else x


def _encode(classes: np.ndarray, y: np.ndarray, what: str = "test") -> np.ndarray:
    pos = np.searchsorted(classes, y)
    pos = np.clip(pos, 0, len(classes) - 1)
    unseen = classes[pos] != y
    if np.any(unseen):
        raise ValidationError(
            f"The {what} labels hold {len(np.unique(y[unseen]))} classes never seen in training, "
            f"e.g. {np.unique(y[unseen])[:5].tolist()}."
        )
    return pos.astype(np.int64)


def _full_proba(est, X: np.ndarray, n_classes: int) -> np.ndarray:
    return expand_to_classes(est.predict_proba(X), est.classes_, n_classes)


def _own_probe(estimators: dict[str, Any]):
    """A saved stack's probability-giving base learner of one block: its logistic probe if it has one."""
    if "logistic" in estimators:
        return estimators["logistic"]
    return next((e for e in estimators.values() if hasattr(e, "predict_proba")), None)


def _block(model: StackingClassifier, data: TrainingSet, block: str) -> np.ndarray:
    if block not in data.blocks:
        raise ValidationError(f"Missing block {block!r}; this model was fitted on blocks {list(model.blocks_)}.")
    return data.blocks[block]


def _require_labels(ts: TrainingSet, what: str) -> None:
    if ts.y is None:
        raise ValidationError(f"The {what} TrainingSet has no labels; join it with a label column.")


def _stack_outputs(model: StackingClassifier, test: TrainingSet):
    """The stack's probabilities, the labels it predicts (``predict``: its threshold when it has one), its cut."""
    proba = model.predict_proba(test)
    threshold = getattr(model, "threshold_", None)
    return proba, {"stack": model.predict(test)}, ({} if threshold is None else {"stack": float(threshold)})


def _tuned_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, cv: int, random_state) -> LogisticProbeCV:
    """The baseline a careful user writes by hand: C, scaling and class weights by inner (grouped) CV on macro-F1,
    and a decision threshold on its out-of-fold scores for binary problems. One thread: ``compare`` parallelises over
    the probes instead."""
    probe = LogisticProbeCV(class_weight="auto", scoring="macro_f1", threshold="auto", cv=cv,
                            random_state=random_state, n_jobs=1)
    return probe.fit(X, y, groups=groups)


def fit_baselines(train: TrainingSet, classes: np.ndarray, *, cv: int = _DEFAULT_INNER_CV,
                  random_state: int | None = 0, n_jobs: int | None = None) -> dict[str, tuple[str, Any]]:
    """``{name: (kind, fitted LogisticProbeCV)}``: one tuned probe per block ("probe:<block>") and, with several
    blocks, one on all of them side by side ("concat"), fitted on ``train`` (labels encoded by ``classes``) in
    parallel over the probes with joblib."""
    y = _encode(classes, train.y, what="training")
    jobs = [(f"probe:{b}", "probe", b) for b in train.blocks]
    if len(train.blocks) > 1:
        jobs.append(("concat", "concat", None))
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_tuned_probe)(train.blocks[b] if b is not None else train.to_numpy(), y, train.groups, cv,
                              random_state)
        for _, _, b in jobs
    )
    return {name: (kind, probe) for (name, kind, _), probe in zip(jobs, fitted)}


def _compare_fitted(train: TrainingSet, test: TrainingSet, model: StackingClassifier, *, n_boot: int,
                    random_state: int | None, n_jobs: int | None) -> Comparison:
    """Tuned baselines fitted on ``train`` and the fitted ``model``, all scored on ``test``."""
    if list(train.blocks) != list(test.blocks):
        raise ValidationError(f"train has blocks {list(train.blocks)} but test has {list(test.blocks)}.")
    classes = model.classes_
    k = len(classes)
    cv = int(model.cv) if isinstance(model.cv, Integral) else _DEFAULT_INNER_CV
    probas, preds, kinds, thresholds = {}, {}, {}, {}
    for name, (kind, probe) in fit_baselines(train, classes, cv=cv, random_state=random_state, n_jobs=n_jobs).items():
        X = test.to_numpy() if kind == "concat" else test.blocks[name.split(":", 1)[1]]
        probas[name] = _full_proba(probe, X, k)
        preds[name] = classes[probe.predict(X)]  # the probe was fitted on class indices: predict gives indices
        kinds[name] = kind
        if probe.threshold_ is not None:
            thresholds[name] = float(probe.threshold_)
    probas["stack"], stack_pred, stack_threshold = _stack_outputs(model, test)
    preds.update(stack_pred)
    thresholds.update(stack_threshold)
    kinds["stack"] = "stack"
    return Comparison.from_probas(classes, test.y, probas, kinds, preds=preds, thresholds=thresholds, n_boot=n_boot,
                                  random_state=random_state, model=model)


def compare(train: TrainingSet, test: TrainingSet, model: StackingClassifier | None = None, *,
            n_boot: int = 1000, random_state: int | None = 0, n_jobs: int | None = None) -> Comparison:
    """Fit on ``train``, score on ``test``: each block's tuned probe, all blocks concatenated, and the stack.

    ``model`` is the stack to evaluate (default ``StackingClassifier()``); an unfitted one is cloned and fitted on
    ``train``, a fitted one is used as is. Each baseline is ``LogisticProbeCV(class_weight="auto",
    scoring="macro_f1", threshold="auto")`` with the stack's number of folds (5 for a splitter), grouped by
    ``train.groups`` when present; ``n_jobs`` fits the baselines in parallel (one thread each). Metrics: accuracy,
    macro-F1 (both of the predicted labels), log loss, ROC-AUC (macro one-vs-rest), each with a paired bootstrap 95%
    interval over ``n_boot`` resamples, and the paired interval of the stack minus the best baseline
    (``Comparison.headline``).
    """
    validate_params({"train": train, "test": test, "model": model, "n_boot": n_boot, "random_state": random_state,
                     "n_jobs": n_jobs}, _CONSTRAINTS, "compare")
    _require_labels(train, "train")
    _require_labels(test, "test")
    if list(train.blocks) != list(test.blocks):
        raise ValidationError(f"train has blocks {list(train.blocks)} but test has {list(test.blocks)}.")
    if model is None:
        model = StackingClassifier(random_state=random_state)
    try:
        check_is_fitted(model)
    except NotFittedError:
        model = clone(model).fit(train)
    return _compare_fitted(train, test, model, n_boot=n_boot, random_state=random_state, n_jobs=n_jobs)

"""Tuning a logistic probe per block: ``C`` and the scaling chosen by out-of-fold log loss, and ``LogisticProbeCV``.

A probe's regularisation is not a constant: the best ``C`` for 384 unit-norm MiniLM dims on 3,500 rows is about
100x smaller once features are standardized, and a probe left at ``C=1`` on standardized embeddings overfits (its
held-out log loss is no better than a uniform guess). ``tune_logistic`` picks ``C`` and the scaling per block by
out-of-fold log loss along a path of ``C`` values (stopped once the loss rises), and returns the out-of-fold
probabilities of the chosen setting, which is exactly what a stacker feeds its meta learner.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featurestore.errors import ValidationError
from featurestore.utils import Constraint, Interval, StrOptions, validate_params
from stackers.classify._probes import LogisticProbe, expand_to_classes, one_blas_thread, scaled, scaling

__all__ = ["DEFAULT_GRID", "LogisticProbeCV", "Tuned", "best_threshold", "stratified_folds", "tune_logistic"]

# Searched per block; logistic loss is flat near its optimum, so a factor 10 between values loses little.
# Standardized features: each of d dims has unit variance, so a good C scales like 1/d (~0.01 for 384 dims).
# Raw features are only rescaled so that rows have unit norm on average, which keeps the encoder's geometry.
STANDARDIZED_CS = (1e-3, 1e-2, 1e-1, 1.0)
RAW_CS = (1.0, 10.0, 100.0)
DEFAULT_GRID = tuple([{"standardize": True, "C": c} for c in STANDARDIZED_CS]
                     + [{"standardize": False, "C": c} for c in RAW_CS])


@dataclass
class Tuned:
    """What ``tune_logistic`` found: the chosen settings, their out-of-fold probabilities, every setting's score."""

    params: dict[str, Any]
    oof: np.ndarray  # (n_rows, n_classes) probabilities of the chosen setting, each row from its held-out fold
    scores: list[dict[str, Any]]  # {"standardize", "C", "class_weight", "score", "log_loss"} per setting scored


_SCORINGS = ("log_loss", "macro_f1")


def _path_oof(X: np.ndarray, y: np.ndarray, train: np.ndarray, standardize: bool, class_weight: str | None,
              Cs: list[float], n_classes: int, max_iter: int, stop_on_rise: bool,
              tol: float = 1e-4) -> list[np.ndarray | None]:
    """Probabilities on the rows outside ``train`` for each C (ascending), each fit warm-started from the last;
    ``None`` for the Cs skipped because this fold's validation log loss had already risen (``stop_on_rise``: the
    loss is unimodal in log C, and the weakly regularised end of a path costs the most iterations).

    ``tol`` is scikit-learn's default unless the path only scouts: a looser one (1e-3, cold starts) was 2.4x faster on
    3,000 rows x 384 dims x 12 classes, but left some out-of-fold probabilities 0.5 away from the converged fit on
    digits, so probabilities that feed a meta learner always come from fits at the default.
    """
    Xa, ya, Xb = X[train], y[train], X[~train]
    yb = y[~train]
    present = np.unique(ya)
    if len(present) == 1:  # a grouped fold can hold one class: it is then predicted with certainty
        out = np.zeros((len(Xb), n_classes))
        out[:, present[0]] = 1.0
        return [out] * len(Cs)
    mean, scale = scaling(Xa, standardize)
    Xa, Xb = scaled(Xa, mean, scale), scaled(Xb, mean, scale)
    lr = LogisticRegression(max_iter=max_iter, warm_start=True, class_weight=class_weight, tol=tol)
    out: list[np.ndarray | None] = []
    previous = np.inf
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a path point that stops early is still scored
        for c in Cs:
            lr.set_params(C=c)
            lr.fit(Xa, ya)
            proba = expand_to_classes(lr.predict_proba(Xb), lr.classes_, n_classes)
            out.append(proba)
            loss = -_score(yb, proba, "log_loss")
            if stop_on_rise and loss > previous:
                break
            previous = loss
    return out + [None] * (len(Cs) - len(out))


def _score(y: np.ndarray, proba: np.ndarray, scoring: str) -> float:
    """Higher is better for both scorings (log loss is negated)."""
    if scoring == "log_loss":
        p = np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)
        return float(np.mean(np.log(p)))
    return float(f1_score(y, np.argmax(proba, axis=1), average="macro"))


def tune_logistic(X: np.ndarray, y: np.ndarray, fold_ids: np.ndarray, *,
                  grid: Sequence[Mapping[str, Any]] = DEFAULT_GRID, class_weights: Sequence[str | None] = (None,),
                  scoring: str = "log_loss", n_classes: int | None = None, max_iter: int = 1000,
                  n_jobs: int | None = None, select_on: str = "all_folds") -> Tuned:
    """Choose a logistic probe's ``C``, scaling and class weighting by out-of-fold ``scoring`` over ``fold_ids``.

    ``y`` holds class indices 0..n_classes-1; ``fold_ids[i]`` is the fold row ``i`` is validated in. One path of
    C per (fold, scaling, class weight), run in parallel over those with joblib. With log loss a path stops once
    its fold's loss rises (settings past that point are not candidates), and the scaling / class weighting is
    picked on the first fold, so only its paths run on the other folds (``scores`` lists the settings scored on
    every fold). Log loss
    (the default) picks calibrated probes, which is what a meta learner wants; macro-F1 picks the best classifier
    on its own (ties broken by log loss, then by the smaller C).

    ``select_on="first_fold"`` (log loss only) scouts every setting's path on the first fold alone, at a loose
    tolerance, and then fits just the chosen setting on every fold at the default one: about the fits of an untuned
    out-of-fold pass plus one fold's path, which is what keeps a tuned stack near the cost of scikit-learn's
    (``scores`` then holds the first fold's scouting losses, marked ``"fold": 0``).
    """
    if scoring not in _SCORINGS:
        raise ValidationError(f"scoring must be one of {_SCORINGS}. Got {scoring!r} instead.")
    if select_on not in ("all_folds", "first_fold"):
        raise ValidationError(f"select_on must be 'all_folds' or 'first_fold'. Got {select_on!r} instead.")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    paths: dict[tuple[bool, Any], list[float]] = {}
    for point in grid:
        paths.setdefault(bool(point["standardize"]), []).append(float(point["C"]))
    settings = [(std, cw) for std in paths for cw in class_weights]
    n_splits = int(fold_ids.max()) + 1
    stop = scoring == "log_loss"

    def run(jobs: list[tuple[tuple[bool, Any], int]]) -> list[list[np.ndarray | None]]:
        return Parallel(n_jobs=n_jobs)(
            delayed(_path_oof)(X, y, fold_ids != f, std, cw, sorted(paths[std]), n_classes, max_iter, stop)
            for (std, cw), f in jobs
        )

    if stop and select_on == "first_fold" and n_splits > 2:
        return _tune_on_first_fold(X, y, fold_ids, paths, settings, n_classes, max_iter, n_jobs)
    if stop and len(settings) > 1 and n_splits > 2:
        # Log loss: the settings other than C (scaling, class weights) are compared on the first fold's paths, and
        # only the best runs on the other folds. The scalings' best losses differ little on embeddings (MiniLM:
        # 0.265 vs 0.266), and this halves the fits; C is still chosen on every fold.
        first = [(setting, 0) for setting in settings]
        first_results = run(first)
        val0 = y[fold_ids == 0]
        best = min(range(len(settings)), key=lambda i: min(
            -_score(val0, p, "log_loss") for p in first_results[i] if p is not None))
        rest = [(settings[best], f) for f in range(1, n_splits)]
        jobs, results = [first[best], *rest], [first_results[best], *run(rest)]
    else:
        jobs = [(s, f) for s in settings for f in range(n_splits)]
        results = run(jobs)
    oof: dict[tuple, np.ndarray] = {}
    skipped = set()  # settings some fold stopped before: past the optimum there, never chosen
    for ((std, cw), f), probas in zip(jobs, results):
        val = fold_ids == f
        for c, proba in zip(sorted(paths[std]), probas):
            if proba is None:
                skipped.add((std, cw, c))
            else:
                oof.setdefault((std, cw, c), np.zeros((len(y), n_classes)))[val] = proba
    oof = {setting: p for setting, p in oof.items() if setting not in skipped}
    scores = [{"standardize": std, "C": c, "class_weight": cw, "score": _score(y, p, scoring),
               "log_loss": -_score(y, p, "log_loss")} for (std, cw, c), p in oof.items()]
    # Macro-F1 ties often (it counts decisions): among tied settings keep the best-calibrated one, so a probe tuned
    # for decisions still gives honest probabilities. Log-loss ties go to the smaller C.
    best = max(scores, key=lambda s: (round(s["score"], 12), -round(s["log_loss"], 12), -s["C"]))
    params = {k: best[k] for k in ("standardize", "C", "class_weight")}
    return Tuned(params=params, oof=oof[(params["standardize"], params["class_weight"], params["C"])],
                 scores=scores)


_SCOUT_TOL = 1e-3  # ranks settings a factor 10 apart in C; never used for probabilities a meta learner sees


def _tune_on_first_fold(X: np.ndarray, y: np.ndarray, fold_ids: np.ndarray, paths: dict[bool, list[float]],
                        settings: list[tuple[bool, Any]], n_classes: int, max_iter: int,
                        n_jobs: int | None) -> Tuned:
    """``tune_logistic(select_on="first_fold")``: scout on fold 0, then one converged fit per fold."""
    n_splits = int(fold_ids.max()) + 1
    scouted = Parallel(n_jobs=n_jobs)(
        delayed(_path_oof)(X, y, fold_ids != 0, std, cw, sorted(paths[std]), n_classes, max_iter, True, _SCOUT_TOL)
        for std, cw in settings
    )
    val0 = y[fold_ids == 0]
    scores = [{"standardize": std, "C": c, "class_weight": cw, "score": _score(val0, p, "log_loss"),
               "log_loss": -_score(val0, p, "log_loss"), "fold": 0}
              for (std, cw), probas in zip(settings, scouted) for c, p in zip(sorted(paths[std]), probas)
              if p is not None]
    best = max(scores, key=lambda s: (round(s["score"], 12), -s["C"]))  # ties: the smaller C
    params = {k: best[k] for k in ("standardize", "C", "class_weight")}
    per_fold = Parallel(n_jobs=n_jobs)(
        delayed(_path_oof)(X, y, fold_ids != f, params["standardize"], params["class_weight"], [params["C"]],
                           n_classes, max_iter, False)
        for f in range(n_splits)
    )
    oof = np.zeros((len(y), n_classes))
    for f, (proba,) in enumerate(per_fold):
        oof[fold_ids == f] = proba
    return Tuned(params=params, oof=oof, scores=scores)


def best_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The cut on a binary problem's positive-class probability ``p`` with the best macro-F1 on ``y`` (0/1), and
    that F1. Candidates are 0.5 and the percentiles of ``p``; ties keep the cut nearest 0.5."""
    y = np.asarray(y, dtype=bool)
    cuts = np.unique(np.r_[0.5, np.percentile(p, np.arange(1, 100))])
    pred = p[None, :] > cuts[:, None]  # (cuts, rows): the positive class strictly above the cut
    tp = (pred & y).sum(axis=1)
    fp = (pred & ~y).sum(axis=1)
    fn = y.sum() - tp
    tn = len(y) - tp - fp - fn
    f1_pos = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(cuts)), where=(2 * tp + fp + fn) > 0)
    f1_neg = np.divide(2 * tn, 2 * tn + fn + fp, out=np.zeros(len(cuts)), where=(2 * tn + fn + fp) > 0)
    macro = (f1_pos + f1_neg) / 2
    i = max(range(len(cuts)), key=lambda j: (round(float(macro[j]), 12), -abs(cuts[j] - 0.5)))
    return float(cuts[i]), float(macro[i])


class _Grid(Constraint):
    """A non-empty list of {"standardize": bool, "C": float > 0} settings."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(p, Mapping) and set(p) == {"standardize", "C"} and isinstance(p["standardize"], bool)
            and isinstance(p["C"], Real) and not isinstance(p["C"], bool) and p["C"] > 0 for p in value)

    def __str__(self) -> str:
        return 'a non-empty list of {"standardize": bool, "C": float > 0} settings'


class LogisticProbeCV(ClassifierMixin, BaseEstimator):
    """A logistic probe that tunes itself: ``C``, the scaling and (optionally) class weights by inner
    cross-validation, and for binary problems the decision threshold on its out-of-fold scores.

    This is the baseline a careful user would write by hand (``LogisticRegressionCV`` with ``class_weight`` tried
    both ways and a tuned threshold), so a stack compared with it is compared honestly.

    Parameters
    ----------
    grid : sequence of {"standardize": bool, "C": float}
        Settings tried; the default covers standardized and raw (unit-norm-rescaled) features.
    class_weight : {None, "balanced", "auto"}
        "auto" tries both and keeps the better by ``scoring``.
    scoring : {"log_loss", "macro_f1"}
    threshold : {"auto", None}
        "auto": for a binary problem, predict the positive class above the cut that maximises out-of-fold macro-F1.
    cv : int >= 2
        Stratified folds (grouped when ``groups`` are passed to ``fit``).

    Fitted: ``classes_``, ``C_``, ``standardize_``, ``class_weight_``, ``threshold_`` (None unless binary and
    "auto"), ``best_score_``, ``cv_results_`` (every setting's score), ``oof_proba_``, ``probe_``.
    """

    _parameter_constraints = {
        "grid": [_Grid()],
        "class_weight": [StrOptions({"balanced", "auto"}), None],
        "scoring": [StrOptions(set(_SCORINGS))],
        "threshold": [StrOptions({"auto"}), None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(Integral, None, None), None],
    }

    def __init__(self, grid: Sequence[Mapping[str, Any]] = DEFAULT_GRID, class_weight: str | None = None,
                 scoring: str = "log_loss", threshold: str | None = None, cv: int = 5, random_state: Any = 0,
                 n_jobs: int | None = None):
        self.grid, self.class_weight, self.scoring, self.threshold = grid, class_weight, scoring, threshold
        self.cv, self.random_state, self.n_jobs = cv, random_state, n_jobs

    def fit(self, X, y, groups=None) -> "LogisticProbeCV":
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValidationError(f"{type(self).__name__} needs at least 2 classes in y; got {list(self.classes_)}.")
        fold_ids = stratified_folds(y_enc, groups, self.cv, self.random_state)
        weights = (None, "balanced") if self.class_weight == "auto" else (self.class_weight,)
        tuned = tune_logistic(X, y_enc, fold_ids, grid=self.grid, class_weights=weights, scoring=self.scoring,
                              n_classes=len(self.classes_), n_jobs=self.n_jobs)
        self.C_, self.standardize_ = tuned.params["C"], tuned.params["standardize"]
        self.class_weight_ = tuned.params["class_weight"]
        self.cv_results_ = tuned.scores
        self.best_score_ = max(s["score"] for s in tuned.scores)
        self.oof_proba_ = tuned.oof
        self.threshold_ = None
        if self.threshold == "auto" and len(self.classes_) == 2:
            self.threshold_, _ = best_threshold(tuned.oof[:, 1], y_enc == 1)
        self.probe_ = LogisticProbe(C=self.C_, standardize=self.standardize_, class_weight=self.class_weight_).fit(
            X, y_enc)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.probe_.decision_function(validate_data(self, X, dtype=np.float64, reset=False))

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return expand_to_classes(self.probe_.predict_proba(X), self.probe_.classes_, len(self.classes_))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        if self.threshold_ is not None:
            return self.classes_[(proba[:, 1] > self.threshold_).astype(int)]
        return self.classes_[np.argmax(proba, axis=1)]


def stratified_folds(y_enc: np.ndarray, groups: np.ndarray | None, cv: int, random_state: Any, *,
                     stacklevel: int = 3) -> np.ndarray:
    """The validation fold of each row for ``cv`` stratified (grouped when ``groups``) folds, shrunk with a warning
    when the data cannot fill them."""
    n_splits = int(cv)
    limit = int(np.bincount(y_enc).max()) if groups is None else len(np.unique(groups))
    if n_splits > limit:
        warnings.warn(f"cv={cv} but only {limit} {'rows in the largest class' if groups is None else 'groups'}; "
                      f"using {max(2, limit)} folds.", UserWarning, stacklevel=stacklevel)
        n_splits = max(2, limit)
    if groups is None:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    else:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=random_state)
    fold_ids = np.full(len(y_enc), -1, dtype=np.int64)
    for i, (_, val) in enumerate(splitter.split(np.zeros((len(y_enc), 1)), y_enc, groups)):
        fold_ids[val] = i
    return fold_ids



"""Learning curves on stored feature sets: how each set's tuned probe (and a stack of the best) scores as labels grow.

    data = stackers.join(store, ["photos_features_6", "photos", "photos_random"], labels="labels.parquet")
    curve = stackers.learning_curve(data, n_per_class=(10, 50, 200))
    print(curve.table())
    curve.save("reports/curves")          # table.csv, table.md, learning_curves.png, summary.txt

One fixed held-out test set is cut first (stratified, ``test_size`` of the rows); the rest is the training pool.
For each ``n`` labels per class, ``draws`` seeded subsets of exactly ``n`` rows per class are drawn from the pool
(never from the test set), every set's ``LogisticProbeCV`` is tuned on the subset alone and scored on the whole test
set, and the best ``stack_top`` sets of that draw, picked by the probes' own inner-CV scores (never by the test
rows), are stacked with ``StackingClassifier``. Intervals are over draws (a t interval on the draws' scores), so
they show how much a result depends on which few rows happened to be labelled; where the pool holds exactly ``n``
rows per class every draw would be the same subset, so there is one draw and the interval is a bootstrap over test
rows instead (the ``interval`` column says which).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from featurestore.errors import ValidationError
from featurestore.utils import (
    InstanceOf,
    Interval,
    ProgressCallback,
    StrOptions,
    progress_enabled,
    rich_progress,
    validate_params,
)
from stackers.classify._stacking import StackingClassifier
from stackers.classify._tuning import LogisticProbeCV
from stackers.data._join import TrainingSet
from stackers.evaluate._curve import OUTPUT_STAGE, STACK, LearningCurve
from stackers.evaluate._metrics import CONFIDENCE, bootstrap_indices, bootstrap_scores, interval, score

__all__ = ["LearningCurve", "learning_curve", "STACK"]


DEFAULT_N = (10, 50, 200, 500)
_CONSTRAINTS = {
    "data": [InstanceOf(TrainingSet, "a labelled TrainingSet (stackers.join with labels=)")],
    "draws": [Interval(Integral, 1, None)],
    "test_size": [Interval(Real, 0, 1, closed="neither")],
    "seed": [Interval(Integral, 0, None)],
    "metric": [StrOptions({"accuracy", "macro_f1"})],
    "stack_top": [Interval(Integral, 0, None)],
    "n_boot": [Interval(Integral, 0, None)],
    "n_jobs": [Interval(Integral, None, None), None],
    "progress": ["boolean", None],
}


def _stage_of(spec: Mapping[str, Any]) -> str | None:
    """A set's stage from its spec: its ``layer``, ``OUTPUT_STAGE`` for ``layer: null``, None without the key."""
    if "layer" not in spec:
        return None
    return OUTPUT_STAGE if spec["layer"] is None else str(spec["layer"])


def learning_curve(data: TrainingSet, *, n_per_class: Sequence[int] = DEFAULT_N, draws: int = 3,
                   test_size: float = 0.2, seed: int = 0, metric: str = "accuracy", stack_top: int = 3,
                   families: Mapping[str, str] | None = None, contrast: tuple[str, str] | None = None,
                   n_boot: int = 1000, n_jobs: int | None = None, progress: bool | None = None,
                   on_progress: ProgressCallback | None = None) -> LearningCurve:
    """Score every block of ``data`` (a labelled ``TrainingSet``) at ``n_per_class`` labels per class.

    ``n_per_class``: sizes of the labelled subset per class (each >= 2); sizes above what the pool holds for its
    smallest class are dropped and replaced by that largest possible size (said in ``notes``). ``draws``: seeded
    subsets per size. ``metric``: "accuracy" or "macro_f1" (both are recorded). ``stack_top``: how many sets the
    stack takes (0: no stack; needs at least 2 sets). ``families``: set name -> family label for the table and the
    plot's colours (default: each set's encoder from its spec); ``contrast``: two family labels whose gap the summary
    reports at the fewest and the most labels. ``n_jobs`` goes to each probe.
    """
    validate_params({"data": data, "draws": draws, "test_size": test_size, "seed": seed, "metric": metric,
                     "stack_top": stack_top, "n_boot": n_boot, "n_jobs": n_jobs, "progress": progress},
                    _CONSTRAINTS, "learning_curve")
    if data.y is None:
        raise ValidationError("learning_curve needs labels: build the TrainingSet with stackers.join(..., labels=...).")
    if data.groups is not None:
        raise ValidationError("learning_curve draws labelled rows one by one, so rows of one group could straddle the "
                         "labelled subset and the test set. Join without groups= (or drop them: data.groups = None) "
                         "if the rows are independent.")
    sizes = _check_sizes(n_per_class)
    names = list(data.blocks)
    families = _families(data, families)
    if contrast is not None:
        if (not isinstance(contrast, (tuple, list)) or len(contrast) != 2
                or any(c not in set(families.values()) for c in contrast)):
            raise ValidationError(f"The 'contrast' parameter of learning_curve must be two family labels among "
                             f"{sorted(set(families.values()))}. Got {contrast!r} instead.")
        contrast = (str(contrast[0]), str(contrast[1]))
    stages = {n: _stage_of(data.sources.get(n, {}).get("spec", {})) for n in names}

    classes, y = np.unique(data.y, return_inverse=True)
    if len(classes) < 2:
        raise ValidationError(f"learning_curve needs at least 2 classes; the labels hold {list(classes)}.")
    pool, test = _split(y, test_size, seed)
    per_class = np.bincount(y[pool], minlength=len(classes))
    sizes, notes = _fit_sizes(sizes, per_class, classes)
    plan = [(n, d) for n in sizes for d in range(draws if (per_class > n).any() else 1)]
    use_stack = stack_top >= 2 and len(names) >= 2
    if stack_top == 1 or (stack_top >= 2 and len(names) < 2):
        notes.append("No stack: it needs stack_top >= 2 and at least 2 sets.")

    rows: list[dict[str, Any]] = []
    train_rows: dict[tuple[int, int], np.ndarray] = {}
    total = len(plan) * (len(names) + int(use_stack))
    with rich_progress("learning curve", total, enabled=progress_enabled(progress), unit="fits") as bar:
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            bar(done, total)
            if on_progress is not None:
                on_progress(done, total)

        for n, d in plan:
            rows_nd = _draw(y, pool, n, seed, d)
            train_rows[(n, d)] = rows_nd
            single = not (per_class > n).any()  # the whole pool: every draw the same subset
            cv = min(5, n)
            fitted: dict[str, float] = {}
            for name in names:
                X = data.blocks[name]
                probe = LogisticProbeCV(cv=cv, random_state=seed, n_jobs=n_jobs).fit(X[rows_nd], y[rows_nd])
                proba = probe.predict_proba(X[test])
                rows.append(_row(name, n, d, rows_nd, y[test], proba, probe.predict(X[test]), single, n_boot, seed,
                                 cv_score=probe.best_score_, C=probe.C_, standardize=probe.standardize_))
                fitted[name] = probe.best_score_
                tick()
            if use_stack:
                members = sorted(names, key=lambda s: -fitted[s])[:stack_top]
                stack = StackingClassifier(cv=cv, random_state=seed, n_jobs=n_jobs).fit(
                    {s: data.blocks[s][rows_nd] for s in members}, y[rows_nd])
                test_blocks = {s: data.blocks[s][test] for s in members}
                rows.append(_row(STACK, n, d, rows_nd, y[test], stack.predict_proba(test_blocks),
                                 stack.predict(test_blocks), single, n_boot, seed, members=",".join(members)))
                tick()
    return LearningCurve(scores=pd.DataFrame(rows), train_rows=train_rows, test_rows=test, pool_rows=pool,
                         metric=metric, families=families, stages=stages, contrast=contrast, notes=notes, seed=seed)


def _check_sizes(n_per_class: Any) -> list[int]:
    ok = (isinstance(n_per_class, (list, tuple)) and len(n_per_class) > 0
          and all(isinstance(n, Integral) and not isinstance(n, bool) and n >= 2 for n in n_per_class))
    if not ok:
        raise ValidationError(f"The 'n_per_class' parameter of learning_curve must be a non-empty list of ints >= 2 "
                         f"(labelled rows per class). Got {n_per_class!r} instead.")
    return sorted({int(n) for n in n_per_class})


def _fit_sizes(sizes: list[int], per_class: np.ndarray, classes: np.ndarray) -> tuple[list[int], list[str]]:
    """Sizes the pool can give for every class; larger ones become the largest possible size, with a note."""
    cap = int(per_class.min())
    smallest = classes[int(per_class.argmin())]
    if cap < 2:
        raise ValidationError(f"The training pool holds {cap} row(s) of class {smallest}; a learning curve needs at "
                         "least 2 per class. Use a smaller test_size or more rows.")
    kept = [n for n in sizes if n <= cap]
    notes = []
    if len(kept) < len(sizes):
        dropped = [n for n in sizes if n > cap]
        kept = sorted({*kept, cap})
        notes.append(f"n={', '.join(map(str, dropped))} per class would exceed the training pool (class "
                     f"{smallest} has {cap} rows there after the test set is held out): the largest point is "
                     f"n={cap}.")
    return kept, notes


def _split(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, test rows): a stratified cut, fixed by ``seed`` for every n and draw."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    try:
        pool, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)
    except ValueError as exc:  # too few rows on one side for a stratified cut
        raise ValidationError(f"test_size={test_size} leaves no stratified split of {len(y)} rows with "
                         f"{len(np.unique(y))} classes: {exc}. A learning curve needs at least 2 rows per class in "
                         "the training pool; use a smaller test_size or more rows.") from None
    return np.sort(pool), np.sort(test)


def _draw(y: np.ndarray, pool: np.ndarray, n: int, seed: int, draw: int) -> np.ndarray:
    """Exactly ``n`` pool rows of each class, drawn without replacement under (seed, n, draw)."""
    rng = np.random.default_rng([seed, n, draw])
    picked = [rng.choice(pool[y[pool] == c], size=n, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def _row(name: str, n: int, draw: int, rows: np.ndarray, y_test: np.ndarray, proba: np.ndarray, pred: np.ndarray,
         single: bool, n_boot: int, seed: int, **extra: Any) -> dict[str, Any]:
    """One fit's held-out scores; with a single draw, bootstrap bounds over the test rows for the interval."""
    classes = np.arange(proba.shape[1])
    pred_idx = np.searchsorted(classes, pred)
    point = score(y_test, proba, pred_idx)
    boot = {}
    if single and n_boot:
        boot = bootstrap_scores(y_test, proba, bootstrap_indices(len(y_test), n_boot, seed), pred_idx)
    row = {"set": name, "n_per_class": n, "draw": draw, "n_train": int(len(rows)),
           "accuracy": point["accuracy"], "macro_f1": point["macro_f1"], "log_loss": point["log_loss"],
           "cv_score": extra.get("cv_score"), "C": extra.get("C"), "standardize": extra.get("standardize"),
           "members": extra.get("members")}
    for m in ("accuracy", "macro_f1"):
        row[f"boot_low_{m}"], row[f"boot_high_{m}"] = interval(boot[m], CONFIDENCE) if boot else (math.nan, math.nan)
    return row


def _families(data: TrainingSet, families: Mapping[str, str] | None) -> dict[str, str]:
    """Set -> family label: as given (every set must be named), else each set's encoder from its spec."""
    names = list(data.blocks)
    if families is None:
        return {n: str(data.sources.get(n, {}).get("spec", {}).get("encoder") or n) for n in names}
    if not isinstance(families, Mapping):
        raise ValidationError(f"The 'families' parameter of learning_curve must be a mapping of set name -> family "
                         f"label. Got {type(families).__name__} instead.")
    missing = [n for n in names if n not in families]
    unknown = [n for n in families if n not in names]
    if missing or unknown:
        raise ValidationError(f"The 'families' mapping must name every set of the data exactly: missing {missing}, "
                         f"unknown {unknown}. Sets: {names}.")
    return {n: str(families[n]) for n in names}

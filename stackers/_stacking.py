"""StackingClassifier: one probe per feature block, out-of-fold scores, a meta learner on top.

As in scikit-learn's ``ensemble/_stacking.py``, the meta learner only ever sees out-of-fold outputs of the base
learners (so it learns how far to trust each encoder on rows that encoder did not train on), while the base
learners are refit on all rows for inference. Folds are stratified, and grouped when groups are given, so rows of
one group (a product, a user, a document) never sit on both sides of a fold.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._join import TrainingSet
from ._meta import META_KINDS, make_meta
from ._probes import CentroidSimilarity, LogisticProbe, expand_to_classes
from featurestore._validation import CVSplitter, HasMethods, Interval, StrOptions, SubsetOf, validate_params

__all__ = ["StackingClassifier"]

_ARRAY_BLOCK = "x"  # the block name given to a plain 2-D array


class StackingClassifier(ClassifierMixin, BaseEstimator):
    """Stack per-encoder linear probes with a logistic or LightGBM meta learner trained on out-of-fold scores.

    Parameters
    ----------
    base : "logistic" or an unfitted classifier with ``predict_proba``
        The base learner fitted on each block. "logistic" is a standardized L2 logistic probe (``C`` below).
    meta : {"auto", "logistic", "lightgbm"}
        The meta learner. "auto" picks by macro-F1 in an inner cross-validation over the same folds
        (scores kept in ``meta_scores_``): logistic usually wins on encoder scores alone, LightGBM when
        informative table columns join them.
    cv : int >= 2 or a CV splitter
        Folds for out-of-fold predictions: ``StratifiedKFold``, or ``StratifiedGroupKFold`` when groups are given.
    extras : tuple of {"centroid"}
        Extra out-of-fold base outputs per block: "centroid" adds the cosine similarity to each class centroid.
    C : float > 0
        Inverse regularisation strength of the logistic probes.
    random_state : int, RandomState or None
        Seeds fold shuffling and LightGBM.
    n_jobs : int or None
        Parallel fits of the (block, fold) base learners with joblib. None means 1. The LightGBM meta learner
        always runs on one thread: its input is small.

    Fitted attributes: ``classes_``, ``blocks_`` (name -> dim), ``n_features_in_``, ``base_estimators_``
    (name -> {kind -> estimator refit on all rows}), ``oof_predictions_`` and ``oof_feature_names_``, ``fold_ids_``,
    ``n_splits_``, ``meta_estimator_``, ``meta_name_``, ``meta_scores_``, ``columns_``, ``sources_``, ``key_``.
    """

    _parameter_constraints: dict[str, list] = {
        "base": [StrOptions({"logistic"}), HasMethods(["fit", "predict_proba"])],
        "meta": [StrOptions({"auto", *META_KINDS})],
        "cv": [Interval(Integral, 2, None, closed="left"), CVSplitter()],
        "extras": [SubsetOf({"centroid"})],
        "C": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(Integral, None, None), None],
    }

    def __init__(
        self,
        base: Any = "logistic",
        meta: str = "auto",
        cv: Any = 5,
        extras: tuple[str, ...] = (),
        C: float = 1.0,
        random_state: Any = 0,
        n_jobs: int | None = None,
    ):
        self.base = base
        self.meta = meta
        self.cv = cv
        self.extras = extras
        self.C = C
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- inputs ----------------------------------------------------------------------------------------------
    def _fit_inputs(self, X, y, groups):
        """Blocks, y, groups, columns and provenance from an array, a dict of blocks or a TrainingSet."""
        sources, key, columns, is_array = {}, [], None, False
        if isinstance(X, TrainingSet):
            blocks = dict(X.blocks)
            y = X.y if y is None else y
            groups = X.groups if groups is None else groups
            columns, sources, key = X.columns, X.sources, X.key
        elif _is_block_dict(X):
            blocks = dict(X)
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
            blocks, is_array = {_ARRAY_BLOCK: X}, True
        if not is_array:
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
            if not blocks:
                raise ValueError("Pass at least one block of features.")
            blocks = {
                str(n): check_array(b, dtype=[np.float64, np.float32], input_name=f"block {n!r}")
                for n, b in blocks.items()
            }
            y = column_or_1d(y, warn=True)
            check_consistent_length(y, *blocks.values())
            self.n_features_in_ = int(sum(b.shape[1] for b in blocks.values()))
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        if groups is not None:
            groups = column_or_1d(groups)
            check_consistent_length(y, groups)
        if columns is not None and len(columns.columns) == 0:
            columns = None
        return blocks, y, groups, columns, dict(sources), list(key)

    def _predict_inputs(self, X) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
        if isinstance(X, TrainingSet):
            blocks, columns = X.blocks, X.columns
        elif _is_block_dict(X):
            blocks, columns = dict(X), None
        else:
            if len(self.blocks_) > 1:
                raise ValueError(self._named_blocks_message(X))
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
            return {next(iter(self.blocks_)): X}, None
        absent = [n for n in self.blocks_ if n not in blocks]
        if absent:
            raise ValueError(f"Missing block(s) {absent}; this model was fitted on blocks {list(self.blocks_)}.")
        out = {}
        for name, dim in self.blocks_.items():
            b = check_array(blocks[name], dtype=[np.float64, np.float32], input_name=f"block {name!r}")
            if b.shape[1] != dim:
                raise ValueError(
                    f"Block {name!r} has {b.shape[1]} features, but {type(self).__name__} is expecting {dim} "
                    "features as input."
                )
            out[name] = b
        check_consistent_length(*out.values())
        return out, columns

    def _named_blocks_message(self, X) -> str:
        """Why a model fitted on several named blocks refuses one plain array, and how to pass the blocks."""
        name, n_features = type(self).__name__, self.n_features_in_
        shape = getattr(X, "shape", None) or np.shape(X)
        blocks = "{" + ", ".join(f"{b!r}: {d}" for b, d in self.blocks_.items()) + "}"
        example = "{" + ", ".join(f"{b!r}: X_{i}" for i, b in enumerate(self.blocks_)) + "}"
        if len(shape) == 2 and shape[1] != n_features:
            head = f"X has {shape[1]} features, but {name} is expecting {n_features} features as input"
        else:
            head = f"A plain array of shape {tuple(shape)} cannot be split safely"
        return (f"{head}: this {name} was fitted on {len(self.blocks_)} named blocks {blocks}, and one array would "
                f"be cut into them by column position alone. Pass the blocks by name: a dict {example} or a "
                "TrainingSet (from stackers.join).")

    # -- folds -----------------------------------------------------------------------------------------------
    def _folds(self, y_enc: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        """The validation fold of each row; every row is validated exactly once."""
        n = len(y_enc)
        if isinstance(self.cv, Integral):
            n_splits = int(self.cv)
            # StratifiedKFold fails when no class has n_splits rows; grouped folds need n_splits groups.
            limit = int(np.bincount(y_enc).max()) if groups is None else len(np.unique(groups))
            if n_splits > limit:
                warnings.warn(
                    f"cv={self.cv} but only {limit} {'rows in the largest class' if groups is None else 'groups'}; "
                    f"using {max(2, limit)} folds.",
                    UserWarning,
                    stacklevel=3,
                )
                n_splits = max(2, limit)
            if groups is None:
                splitter = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
            else:
                splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=self.random_state)
        else:
            splitter = self.cv
        fold_ids = np.full(n, -1, dtype=np.int64)
        for i, (_, val) in enumerate(splitter.split(np.zeros((n, 1)), y_enc, groups)):
            if np.any(fold_ids[val] >= 0):
                raise ValueError("The cv splitter validates some rows more than once; it must partition the rows.")
            fold_ids[val] = i
        if np.any(fold_ids < 0):
            raise ValueError(
                f"The cv splitter never validates {int((fold_ids < 0).sum())} rows; out-of-fold predictions need "
                "every row in exactly one validation fold (a partition, e.g. KFold, not TimeSeriesSplit)."
            )
        return fold_ids

    # -- base learners ---------------------------------------------------------------------------------------
    def _kinds(self) -> list[str]:
        return ["logistic" if isinstance(self.base, str) else "base", *self.extras]

    def _template(self, kind: str):
        if kind == "logistic":
            return LogisticProbe(C=self.C)
        if kind == "centroid":
            return CentroidSimilarity()
        return clone(self.base)

    def _scores(self, est, kind: str, X: np.ndarray) -> np.ndarray:
        """Base outputs in global class order; one column for a binary probability (the other is redundant)."""
        k = len(self.classes_)
        raw = est.transform(X) if kind == "centroid" else est.predict_proba(X)
        out = expand_to_classes(raw, est.classes_, k)
        if kind != "centroid" and k == 2:
            return out[:, 1:]
        return out

    def _score_names(self, block: str, kind: str) -> list[str]:
        classes = self.classes_
        if kind != "centroid" and len(classes) == 2:
            classes = classes[1:]
        return [f"{block}:{kind}:{c}" for c in classes]

    def _meta_input(self, blocks: dict[str, np.ndarray], estimators: dict[str, dict[str, Any]]) -> np.ndarray:
        parts = [self._scores(estimators[b][kind], kind, blocks[b]) for b in self.blocks_ for kind in self._kinds()]
        return np.hstack(parts)

    # -- fit -------------------------------------------------------------------------------------------------
    def fit(self, X, y=None, *, groups=None) -> "StackingClassifier":
        """Fit base learners out-of-fold, the meta learner on their OOF scores, then refit the bases on all rows.

        ``X`` is a 2-D array (one block), a dict of name -> array, or a ``TrainingSet`` (its y, groups and
        columns are used unless ``y``/``groups`` are passed).
        """
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        blocks, y, groups, columns, sources, key = self._fit_inputs(X, y, groups)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class ({self.classes_[0]!r})."
            )
        self.blocks_ = {name: int(b.shape[1]) for name, b in blocks.items()}
        self.columns_ = [] if columns is None else [str(c) for c in columns.columns]
        self.sources_ = sources
        self.key_ = key
        fold_ids = self._folds(y_enc, groups)
        self.fold_ids_ = fold_ids
        self.n_splits_ = int(fold_ids.max()) + 1

        kinds = self._kinds()
        tasks = [(b, kind, f) for b in blocks for kind in kinds for f in [*range(self.n_splits_), None]]
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_base)(self._template(kind), blocks[b], y_enc, None if f is None else fold_ids != f)
            for b, kind, f in tasks
        )
        per_fold: dict[int, dict[str, dict[str, Any]]] = {f: {b: {} for b in blocks} for f in range(self.n_splits_)}
        self.base_estimators_ = {b: {} for b in blocks}
        for (b, kind, f), est in zip(tasks, fitted):
            (self.base_estimators_ if f is None else per_fold[f])[b][kind] = est

        oof = None
        for f in range(self.n_splits_):
            val = fold_ids == f
            part = self._meta_input({b: blocks[b][val] for b in blocks}, per_fold[f])
            if oof is None:
                oof = np.zeros((len(y_enc), part.shape[1]))
            oof[val] = part
        self.oof_predictions_ = oof
        self.oof_feature_names_ = [n for b in blocks for kind in kinds for n in self._score_names(b, kind)]

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        k = len(self.classes_)
        proba_cols = tuple(i for i, name in enumerate(self.oof_feature_names_) if ":centroid:" not in name)
        if self.meta == "auto":
            self.meta_scores_ = {
                kind: _inner_cv_score(kind, oof, columns, y_enc, fold_ids, k, seed, proba_cols) for kind in META_KINDS
            }
            # Ties go to the logistic learner: simpler, and better calibrated on small data.
            self.meta_name_ = max(META_KINDS, key=lambda kind: (self.meta_scores_[kind], kind == "logistic"))
        else:
            self.meta_scores_ = {}
            self.meta_name_ = self.meta
        self.meta_estimator_ = make_meta(self.meta_name_, seed=seed, proba_columns=proba_cols).fit(
            oof, columns, y_enc, k
        )
        return self

    # -- inference -------------------------------------------------------------------------------------------
    def _meta_features(self, X) -> tuple[np.ndarray, pd.DataFrame | None]:
        check_is_fitted(self)
        blocks, columns = self._predict_inputs(X)
        n = next(iter(blocks.values())).shape[0]
        self.meta_estimator_.encoder_.check(columns, n)
        if columns is not None and not self.columns_:
            columns = None
        return self._meta_input(blocks, self.base_estimators_), columns

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities from the meta learner, columns in ``classes_`` order."""
        F, columns = self._meta_features(X)
        return self.meta_estimator_.predict_proba(F, columns)

    def decision_function(self, X) -> np.ndarray:
        """The meta learner's raw scores (logits); 1-D for binary problems, as in scikit-learn."""
        F, columns = self._meta_features(X)
        return self.meta_estimator_.decision_function(F, columns)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[np.argmax(proba, axis=1)]

    def save(self, path, *, metrics: Any = None) -> Path:
        """Write the fitted model to directory ``path`` (manifest.json, arrays.npz, LightGBM text); no pickle.

        ``metrics`` (a dict or a ``Comparison``) is recorded in the manifest. Load with ``stackers.load(path)``.
        """
        from ._persist import save

        return save(self, path, metrics=metrics)


def _is_block_dict(X) -> bool:
    # scipy's dok sparse matrices are dicts too; they go down the array path and fail there with a clear message.
    return isinstance(X, Mapping) and not issparse(X)


def _fit_base(est, X: np.ndarray, y: np.ndarray, mask: np.ndarray | None):
    if mask is not None:
        X, y = X[mask], y[mask]
    return est.fit(X, y)


def _inner_cv_score(kind: str, F: np.ndarray, columns: pd.DataFrame | None, y: np.ndarray, fold_ids: np.ndarray,
                    n_classes: int, seed: int, proba_columns: tuple[int, ...]) -> float:
    """Mean macro-F1 of one meta learner over the outer folds, trained on the other folds' OOF scores."""
    scores = []
    for f in range(int(fold_ids.max()) + 1):
        val = fold_ids == f
        train_cols = None if columns is None else columns[~val].reset_index(drop=True)
        val_cols = None if columns is None else columns[val].reset_index(drop=True)
        meta = make_meta(kind, seed=seed, proba_columns=proba_columns).fit(F[~val], train_cols, y[~val], n_classes)
        pred = np.argmax(meta.predict_proba(F[val], val_cols), axis=1)
        scores.append(f1_score(y[val], pred, average="macro"))
    return float(np.mean(scores))

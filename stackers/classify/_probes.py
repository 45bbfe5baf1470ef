"""Base learners for one block of embeddings: a logistic probe (tuned or fixed) and class-centroid similarity.

The probe's ``C`` and scaling are tuned per block (``_tuning``); the extras (class centroids, nearest neighbours)
give the meta learner scores, not probabilities.

All keep their fitted state as plain float64 arrays and predict with numpy, so a model saved with
``stackers.classify._format`` (arrays in ``.npz``, no pickle) predicts bit for bit what the fitted one did.
"""

from __future__ import annotations

import functools
from numbers import Integral, Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from featurestore.utils import InstanceOf, Interval, StrOptions, unit_rows, validate_params

__all__ = ["LogisticProbe", "CentroidSimilarity", "KNeighborsVotes", "expand_to_classes"]

class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression on scaled features: the linear probe of one encoder.

    ``standardize=True`` z-scores each feature (``make_pipeline(StandardScaler(), LogisticRegression(C=C))``);
    ``False`` only divides by one constant so rows have unit norm on average, keeping the encoder's own geometry
    (often better for unit-norm sentence embeddings). Either way ``C`` means the same for every encoder, whatever
    its scale. Use ``LogisticProbeCV`` (or ``tune_logistic``) to choose ``C`` and the scaling.
    """

    _parameter_constraints = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "standardize": ["boolean"],
        "class_weight": [StrOptions({"balanced"}), InstanceOf(dict, "a dict"), None],
        "max_iter": [Interval(Integral, 1, None)],
    }

    def __init__(self, C: float = 1.0, standardize: bool = True, class_weight: str | dict | None = None,
                 max_iter: int = 1000):
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(self, X, y) -> "LogisticProbe":
        X, y_enc = _fit_inputs(self, X, y)
        self.mean_, self.scale_ = scaling(X, self.standardize)
        n_out = 1 if len(self.classes_) <= 2 else len(self.classes_)
        if len(self.classes_) == 1:
            # A training fold can hold a single class (grouped folds, rare classes): predict it with certainty.
            self.coef_ = np.zeros((1, X.shape[1]))
            self.intercept_ = np.zeros(1)
            self.n_iter_ = np.zeros(1, dtype=np.int32)
            return self
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        # lbfgs does matrix-vector products, where BLAS threads buy little and, on a busy 2-core machine, spin
        # against other work: 4000x384, 12 classes took 0.55 s threaded vs 0.13 s on one thread (digits: 3 s vs 0.04 s).
        with one_blas_thread():
            lr.fit(scaled(X, self.mean_, self.scale_), y_enc)
        self.coef_ = np.asarray(lr.coef_, dtype=np.float64).reshape(n_out, -1)
        self.intercept_ = np.asarray(lr.intercept_, dtype=np.float64).reshape(n_out)
        self.n_iter_ = lr.n_iter_
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scores = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.ones((scores.shape[0], 1))
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        return softmax(scores, axis=1)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[np.argmax(proba, axis=1)]


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """``threadpool_limits(limits=1, user_api="blas")`` without scanning the loaded libraries again on each call
    (5 ms a call: a fifth of a 3,500-row binary stack's fit). Libraries are listed once, on first use."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _fit_inputs(est, X, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``est``'s parameters and (X, y) as scikit-learn does; set ``classes_``; return X and encoded y."""
    validate_params(est.get_params(deep=False), est._parameter_constraints, type(est).__name__)
    X, y = validate_data(est, X, y, dtype=[np.float64, np.float32])
    check_classification_targets(y)
    est.classes_, y_enc = np.unique(y, return_inverse=True)
    return X, y_enc


def scaling(X: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) in float64 such that ``(X - mean) / scale`` is what a probe fits on."""
    if standardize:
        scale = X.std(axis=0, dtype=np.float64)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # constant features: leave unscaled, as StandardScaler
        return X.mean(axis=0, dtype=np.float64), scale
    rms = float(np.sqrt(np.mean(np.einsum("ij,ij->i", X, X, dtype=np.float64)))) if X.size else 1.0
    return np.zeros(X.shape[1]), np.full(X.shape[1], rms if rms > np.finfo(np.float64).tiny else 1.0)


def scaled(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` in X's own dtype: a float32 block is fitted in float32, as scikit-learn's lbfgs does,
    which halves the cost of every iteration (MiniLM, 2,658 x 384, 12 classes: 0.28 s -> 0.13 s per fit, AMD EPYC)
    while the features are O(1) after scaling, well within float32's precision."""
    return ((X - mean) / scale).astype(X.dtype, copy=False)


class CentroidSimilarity(TransformerMixin, BaseEstimator):
    """Cosine similarity of each row to each class centroid (mean of unit-normalised rows).

    A cheap, nearly parameter-free signal that often complements a linear probe on small classes.
    ``transform`` returns one column per class in ``classes_``.
    """

    def fit(self, X, y) -> "CentroidSimilarity":
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        Xn = unit_rows(X, copy=True)
        sums = np.zeros((len(self.classes_), X.shape[1]))
        np.add.at(sums, y_enc, Xn)
        self.centroids_ = unit_rows(sums, copy=True)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return unit_rows(X, copy=True) @ self.centroids_.T


def expand_to_classes(scores, classes, n_classes: int) -> np.ndarray:
    """One float64 column per class ``0..n_classes-1`` from per-class ``scores`` of an estimator fitted on encoded
    labels, whose ``classes`` may lack some (a training fold without a rare class); absent classes score 0."""
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes).astype(np.int64)
    if len(classes) == n_classes:  # every class seen: sorted unique codes, so already 0..n_classes-1
        return scores
    full = np.zeros((scores.shape[0], n_classes))
    full[:, classes] = scores
    return full


class KNeighborsVotes(TransformerMixin, BaseEstimator):
    """The share of each class among a row's ``n_neighbors`` most cosine-similar training rows.

    A local, non-linear signal a linear probe cannot express (classes in several clusters of one embedding space).
    It keeps the training rows (unit-normalised, float32), so a saved model that uses it holds them too.
    ``transform`` returns one column per class in ``classes_``.
    """

    _parameter_constraints = {"n_neighbors": [Interval(Integral, 1, None)]}
    _BLOCK_ROWS = 2048  # query rows per similarity block: 2048 x 10,000 training rows is 80 MB of float32

    def __init__(self, n_neighbors: int = 15):
        self.n_neighbors = n_neighbors

    def fit(self, X, y) -> "KNeighborsVotes":
        X, y_enc = _fit_inputs(self, X, y)
        self.X_ = unit_rows(X, copy=True).astype(np.float32)
        self.y_ = y_enc.astype(np.int64)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = unit_rows(validate_data(self, X, dtype=np.float64, reset=False), copy=True).astype(np.float32)
        k = min(int(self.n_neighbors), len(self.y_))
        out = np.zeros((len(X), len(self.classes_)))
        for start in range(0, len(X), self._BLOCK_ROWS):
            sims = X[start:start + self._BLOCK_ROWS] @ self.X_.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            votes = self.y_[nearest]  # (rows, k) class indices
            rows = np.repeat(np.arange(len(votes)), k)
            np.add.at(out[start:start + len(votes)], (rows, votes.ravel()), 1.0 / k)
        return out

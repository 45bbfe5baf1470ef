"""Domain alignment for one block of embeddings: ZCA whitening and CORAL, as scikit-learn transformers.

Both work on second moments only, so they need no labels:

- ``Whitening`` (ZCA) maps rows to zero mean and identity covariance with the symmetric ``(X - mean) S^(-1/2)``,
  which keeps each output dimension closest to its input dimension. Fitted on a domain's own rows, it puts every
  domain in the same (white) frame.
- ``CORAL`` (Sun & Saenko, "Return of Frustratingly Easy Domain Adaptation", AAAI 2016) recolours source rows to a
  target domain's covariance, ``X Cs^(-1/2) Ct^(1/2)``, fitted with unlabelled target rows; a classifier trained on
  the recoloured source rows is then applied to target rows as they are.

Covariances are shrunk towards a scaled identity, ``(1 - a) S + a (trace(S) / d) I`` (Ledoit-Wolf's ``a`` by
default), because a few thousand rows of a 384-dim embedding give a poorly conditioned sample covariance. The paper
adds ``I`` instead, which assumes unit-variance features: on unit-norm embeddings, whose dims have variance ~1/d, it
would swamp the covariance. Shrinking is scale-free. The fitted state is plain float64 arrays (``mean_``,
``matrix_``, ...), saved by ``stackers.classify._format`` without pickle.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from featurestore.errors import ValidationError
from featurestore.utils import Interval, StrOptions, validate_params

__all__ = ["Whitening", "CORAL", "ALIGNERS", "fit_aligners"]

_SHRINKAGE = [StrOptions({"auto"}), Interval(Real, 0, 1, closed="both")]


def _covariance(X: np.ndarray, shrinkage: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, shrunk maximum-likelihood covariance, the shrinkage used) of the rows of ``X``."""
    mean = X.mean(axis=0)
    Xc = X - mean
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        shrinkage = float(ledoit_wolf_shrinkage(Xc, assume_centered=True))
    S = Xc.T @ Xc / X.shape[0]
    mu = np.trace(S) / S.shape[0]
    S = (1.0 - shrinkage) * S
    S.flat[:: S.shape[0] + 1] += shrinkage * mu
    return mean, S, float(shrinkage)


def _sym_power(S: np.ndarray, power: float) -> np.ndarray:
    """``S ** power`` for a symmetric positive semi-definite ``S``; eigenvalues are floored at a relative epsilon so
    that a rank-deficient, unshrunk covariance gives large but finite values instead of infinities."""
    w, U = np.linalg.eigh(S)
    floor = max(float(w.max(initial=0.0)), np.finfo(np.float64).tiny) * S.shape[0] * np.finfo(np.float64).eps
    return (U * np.maximum(w, floor) ** power) @ U.T


class Whitening(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """ZCA whitening with shrinkage: ``(X - mean_) @ matrix_`` has zero mean and identity covariance on the rows it
    was fitted on (up to shrinkage: each direction's variance is ``l / ((1 - a) l + a m)`` for a covariance
    eigenvalue ``l``, ``m`` the mean eigenvalue and ``a`` the shrinkage).

    Parameters
    ----------
    shrinkage : "auto" or float in [0, 1]
        Weight of the scaled identity in the covariance; "auto" is the Ledoit-Wolf estimate (``shrinkage_``).

    Fitted: ``mean_`` (d,), ``matrix_`` (d, d) the symmetric inverse square root of the shrunk covariance,
    ``shrinkage_``, ``n_features_in_``.
    """

    _parameter_constraints = {"shrinkage": _SHRINKAGE}

    def __init__(self, shrinkage: float | str = "auto"):
        self.shrinkage = shrinkage

    def fit(self, X, y=None) -> "Whitening":
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.mean_, S, self.shrinkage_ = _covariance(X, self.shrinkage)
        self.matrix_ = _sym_power(S, -0.5)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_) @ self.matrix_


class CORAL(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """CORrelation ALignment: recolour source rows ``X`` to the covariance of unlabelled target rows.

    ``fit(X, target=T)`` learns ``matrix_ = Cs^(-1/2) Ct^(1/2)`` from the shrunk covariances of ``X`` (source) and
    ``T`` (target); ``transform(X)`` returns ``(X - mean_source_) @ matrix_ + mean_target_``, whose covariance is the
    target's (exactly, without shrinkage) and whose mean is the target's. Train a classifier on ``transform`` of the
    labelled source rows and apply it to target rows untransformed.

    Parameters
    ----------
    shrinkage : "auto" or float in [0, 1]
        As in ``Whitening``, for both covariances ("auto": each domain's Ledoit-Wolf estimate).
    match_mean : bool
        True also moves the source mean onto the target's. False is the paper's map ``X @ matrix_``, which
        matches second moments only.

    Fitted: ``mean_source_``, ``mean_target_`` (d,), ``matrix_`` (d, d), ``shrinkage_source_``,
    ``shrinkage_target_``, ``n_features_in_``.
    """

    _parameter_constraints = {"shrinkage": _SHRINKAGE, "match_mean": ["boolean"]}

    def __init__(self, shrinkage: float | str = "auto", match_mean: bool = True):
        self.shrinkage = shrinkage
        self.match_mean = match_mean

    def fit(self, X, y=None, *, target=None) -> "CORAL":
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        if target is None:
            raise ValidationError(
                "CORAL.fit needs the target domain's rows: fit(X, target=T), where T holds unlabelled rows of the "
                "domain the model will predict for, with the same features as X."
            )
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        T = check_array(target, dtype=np.float64, input_name="target")
        if T.shape[0] < 2:
            raise ValidationError(f"CORAL needs at least 2 target rows to estimate their covariance; got {T.shape[0]}.")
        if T.shape[1] != X.shape[1]:
            raise ValidationError(
                f"The target rows have {T.shape[1]} features, but X has {X.shape[1]}; CORAL recolours X to the "
                "covariance of target rows of the same features."
            )
        self.mean_source_, Cs, self.shrinkage_source_ = _covariance(X, self.shrinkage)
        self.mean_target_, Ct, self.shrinkage_target_ = _covariance(T, self.shrinkage)
        self.matrix_ = _sym_power(Cs, -0.5) @ _sym_power(Ct, 0.5)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.match_mean:
            return (X - self.mean_source_) @ self.matrix_ + self.mean_target_
        return X @ self.matrix_


#: the stacker's ``align`` values and the transformer each one fits per block
ALIGNERS = {"whiten": Whitening, "coral": CORAL}


def fit_aligners(align: str, blocks: dict[str, np.ndarray], targets: dict[str, np.ndarray] | None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each block's fitted aligner for ``align`` ("coral" or "whiten"), and the training blocks as the probes will
    see them: CORAL recolours them to the target's covariance; whitening whitens each domain by its own statistics
    (rows at prediction time are the target's, if given)."""
    aligners, out = {}, {}
    for name, X in blocks.items():
        if align == "coral":
            aligner = CORAL().fit(X, target=targets[name])
            out[name] = aligner.transform(X)
        else:
            aligner = Whitening().fit(X if targets is None else targets[name])
            out[name] = (aligner if targets is None else Whitening().fit(X)).transform(X)
        aligners[name] = aligner
    return aligners, out

"""StackingClassifier: one probe per feature block, out-of-fold scores, a meta learner on top.

As in scikit-learn's ``ensemble/_stacking.py``, the meta learner only ever sees out-of-fold outputs of the base
learners (so it learns how far to trust each encoder on rows that encoder did not train on), while the base
learners are refit on all rows for inference. Folds are stratified, and grouped when groups are given, so rows of
one group (a product, a user, a document) never sit on both sides of a fold.
"""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.metrics import f1_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import ValidationError
from featurestore.utils import CVSplitter, HasMethods, Interval, StrOptions, SubsetOf, validate_params
from stackers.classify._align import ALIGNERS, Whitening, fit_aligners
from stackers.classify._decision import as_proba, decision_rule, inner_oof
from stackers.classify._inputs import fit_inputs, predict_inputs, target_blocks
from stackers.classify._meta import META_KINDS, make_meta
from stackers.classify._probes import CentroidSimilarity, KNeighborsVotes, LogisticProbe, expand_to_classes
from stackers.classify._tuning import DEFAULT_GRID, stratified_folds, tune_logistic

__all__ = ["StackingClassifier"]

_EXTRAS = {"centroid": CentroidSimilarity, "knn": KNeighborsVotes}  # extra base learners: scores, not probabilities


class StackingClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Stack per-encoder probes, each tuned on its own block, under a meta learner trained on out-of-fold scores.

    Parameters
    ----------
    base : "logistic" or an unfitted classifier with ``predict_proba``
        The base learner fitted on each block. "logistic" is a logistic probe whose ``C`` and scaling are
        tuned per block (see ``C``).
    meta : {"auto", "logistic", "lightgbm", "best"} or an unfitted classifier with ``predict_proba``
        The meta learner. "auto" picks by macro-F1 in an inner cross-validation over the same folds (scores in
        ``meta_scores_``) among a logistic learner on the probes' log-probabilities (class weights none or
        balanced), LightGBM (only when the training set has table columns), and "best": the best single probe
        passed through, so a stack of redundant blocks falls back to its best base instead of fitting noise. A
        scikit-learn classifier is used as given
        (on log-probabilities and table columns); such a model cannot be saved.
    cv : int >= 2 or a CV splitter
        Folds for out-of-fold predictions: ``StratifiedKFold``, or ``StratifiedGroupKFold`` when groups are given.
    extras : tuple of {"centroid", "knn"}
        Extra base learners per block: "centroid" (cosine similarity to each class centroid), "knn" (class shares
        among the 15 most similar training rows). Each (block, extra) is kept only where the inner CV says it helps:
        a logistic meta learner's out-of-fold macro-F1 without it must be lower (``pruned_`` lists those dropped).
    C : "auto" or float > 0
        "auto" tunes each block's probe by out-of-fold log loss over ``_probes.DEFAULT_GRID`` (standardized and
        raw features, a path of ``C``), which makes the probes calibrated; a number fixes ``C`` on standardized
        features for every block.
    threshold : {"auto", None}
        "auto" tunes the decision rule on the inner out-of-fold predictions for macro-F1: for a binary problem the
        cut on the stacked probability (``threshold_``), else a class-prior correction, ``argmax(p *
        class_weights_)`` with weights ``prior ** -a``, a in {0, 0.5, 1}. It matters on imbalanced labels. None:
        argmax of ``predict_proba``.
    random_state : int, RandomState or None
        Seeds fold shuffling and LightGBM.
    n_jobs : int or None
        Parallel fits of the base learners with joblib (one BLAS thread each). None means 1.
    align : {None, "whiten", "coral"}
        Per-block domain alignment (``stackers.classify._align``), fitted before the probes. "whiten": ZCA whitening; rows
        at prediction time are whitened by a ``Whitening`` fitted on the ``target`` rows passed to ``fit`` (the
        domain the model will predict for; the training rows by their own), or without ``target`` one whitening
        fitted on the training rows serves both. "coral": the training rows are recoloured to the covariance (and
        mean) of the ``target`` rows (``CORAL``, required), and rows at prediction time, target-domain rows, are
        used as they are. Fitted per block in ``aligners_``.

    Fitted attributes: ``classes_``, ``blocks_`` (name -> dim), ``n_features_in_``, ``base_estimators_``
    (name -> {kind -> estimator refit on all rows}), ``probe_params_`` (name -> chosen ``C``, scaling and
    out-of-fold log loss), ``oof_predictions_`` and ``oof_feature_names_``, ``fold_ids_``, ``n_splits_``,
    ``meta_estimator_``, ``meta_name_``, ``meta_scores_``, ``threshold_``, ``class_weights_``, ``columns_``,
    ``sources_``, ``key_``,
    ``aligners_`` (name -> the ``Whitening`` or ``CORAL`` of that block; empty without ``align``).

    ``transform`` returns the stacked base scores (``get_feature_names_out`` names them) and ``fit_transform``
    their out-of-fold version, so the stacker composes with other estimators without leaking labels.
    """

    _parameter_constraints: dict[str, list] = {
        "base": [StrOptions({"logistic"}), HasMethods(["fit", "predict_proba"])],
        "meta": [StrOptions({"auto", *META_KINDS}), HasMethods(["fit", "predict_proba"])],
        "cv": [Interval(Integral, 2, None, closed="left"), CVSplitter()],
        "extras": [SubsetOf(set(_EXTRAS))],
        "C": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "threshold": [StrOptions({"auto"}), None],
        "align": [StrOptions(set(ALIGNERS)), None],
        "random_state": ["random_state"],
        "n_jobs": [Interval(Integral, None, None), None],
    }

    def __init__(
        self,
        base: Any = "logistic",
        meta: Any = "auto",
        cv: Any = 5,
        extras: tuple[str, ...] = (),
        C: float | str = "auto",
        threshold: str | None = "auto",
        random_state: Any = 0,
        n_jobs: int | None = None,
        align: str | None = None,
    ):
        self.base = base
        self.meta = meta
        self.cv = cv
        self.extras = extras
        self.C = C
        self.threshold = threshold
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.align = align

    # -- inputs (``_inputs``) ---------------------------------------------------------------------------------
    def _fit_inputs(self, X, y, groups):
        return fit_inputs(self, X, y, groups)

    def _predict_inputs(self, X) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
        return predict_inputs(self, X)

    # -- folds -----------------------------------------------------------------------------------------------
    def _folds(self, y_enc: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        """The validation fold of each row; every row is validated exactly once."""
        n = len(y_enc)
        if isinstance(self.cv, Integral):
            # StratifiedKFold fails when no class has cv rows; grouped folds need cv groups: fewer, with a warning.
            return stratified_folds(y_enc, groups, int(self.cv), self.random_state, stacklevel=4)
        splitter = self.cv
        fold_ids = np.full(n, -1, dtype=np.int64)
        for i, (_, val) in enumerate(splitter.split(np.zeros((n, 1)), y_enc, groups)):
            if np.any(fold_ids[val] >= 0):
                raise ValidationError("The cv splitter validates some rows more than once; it must partition the rows.")
            fold_ids[val] = i
        if np.any(fold_ids < 0):
            raise ValidationError(
                f"The cv splitter never validates {int((fold_ids < 0).sum())} rows; out-of-fold predictions need "
                "every row in exactly one validation fold (a partition, e.g. KFold, not TimeSeriesSplit)."
            )
        return fold_ids

    # -- base learners ---------------------------------------------------------------------------------------
    def _kinds(self) -> list[str]:
        return ["logistic" if isinstance(self.base, str) else "base", *self.extras]

    def _template(self, kind: str):
        if kind in _EXTRAS:
            return _EXTRAS[kind]()
        return clone(self.base)

    def _grid(self) -> tuple[dict[str, Any], ...]:
        return DEFAULT_GRID if self.C == "auto" else ({"standardize": True, "C": float(self.C)},)

    def _scores(self, est, kind: str, X: np.ndarray) -> np.ndarray:
        """Base outputs in global class order; one column for a binary probability (the other is redundant)."""
        k = len(self.classes_)
        raw = est.transform(X) if kind in _EXTRAS else est.predict_proba(X)
        out = expand_to_classes(raw, est.classes_, k)
        if kind not in _EXTRAS and k == 2:
            return out[:, 1:]
        return out

    def _score_names(self, block: str, kind: str) -> list[str]:
        classes = self.classes_
        if kind not in _EXTRAS and len(classes) == 2:
            classes = classes[1:]
        return [f"{block}:{kind}:{c}" for c in classes]

    def _meta_input(self, blocks: dict[str, np.ndarray], estimators: dict[str, dict[str, Any]]) -> np.ndarray:
        parts = [self._scores(estimators[b][kind], kind, blocks[b]) for b in self.blocks_ for kind in estimators[b]]
        return np.hstack(parts)

    # -- fit -------------------------------------------------------------------------------------------------
    def fit(self, X, y=None, *, groups=None, target=None) -> "StackingClassifier":
        """Fit base learners out-of-fold, the meta learner on their OOF scores, then refit the bases on all rows.

        ``X`` is a 2-D array (one block), a dict of name -> array, or a ``TrainingSet`` (its y, groups and
        columns are used unless ``y``/``groups`` are passed). ``target``, for ``align``, holds unlabelled rows of
        the domain the model will predict for, in the same form as ``X`` (the same blocks; rows need not match).
        """
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        blocks, y, groups, columns, sources, key = self._fit_inputs(X, y, groups)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValidationError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class ({self.classes_[0]!r})."
            )
        self.blocks_ = {name: int(b.shape[1]) for name, b in blocks.items()}
        self.columns_ = [] if columns is None else [str(c) for c in columns.columns]
        self.sources_ = sources
        self.key_ = key
        blocks = self._fit_align(blocks, target)
        fold_ids = self._folds(y_enc, groups)
        self.fold_ids_ = fold_ids
        self.n_splits_ = int(fold_ids.max()) + 1

        kinds = self._kinds()
        k = len(self.classes_)
        oof_parts: dict[tuple[str, str], np.ndarray] = {}
        self.probe_params_ = {}
        if kinds[0] == "logistic":
            # Each block's probe is tuned on its own out-of-fold log loss; the chosen setting's out-of-fold
            # probabilities are the meta learner's input, so tuning costs no extra pass.
            for b in blocks:
                tuned = tune_logistic(blocks[b], y_enc, fold_ids, grid=self._grid(), n_classes=k,
                                      n_jobs=self.n_jobs, select_on="first_fold")
                oof_parts[(b, "logistic")] = tuned.oof[:, 1:] if k == 2 else tuned.oof
                p_true = np.clip(tuned.oof[np.arange(len(y_enc)), y_enc], 1e-15, 1.0)
                self.probe_params_[b] = {**tuned.params, "oof_log_loss": float(-np.mean(np.log(p_true)))}
        fold_kinds = [kind for kind in kinds if kind != "logistic"]
        tasks = [(b, kind, f) for b in blocks for kind in fold_kinds for f in [*range(self.n_splits_), None]]
        tasks += [(b, "logistic", None) for b in self.probe_params_]
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_base)(self._base(kind, b), blocks[b], y_enc, None if f is None else fold_ids != f)
            for b, kind, f in tasks
        )
        self.base_estimators_ = {b: {} for b in blocks}
        for (b, kind, f), est in zip(tasks, fitted):
            if f is None:
                self.base_estimators_[b][kind] = est
                continue
            val = fold_ids == f
            part = self._scores(est, kind, blocks[b][val])
            oof_parts.setdefault((b, kind), np.zeros((len(y_enc), part.shape[1])))[val] = part
        kept = self._prune_extras(oof_parts, blocks, kinds, columns, y_enc, fold_ids)
        self.base_estimators_ = {b: {kind: self.base_estimators_[b][kind] for kind in kept[b]} for b in blocks}
        self.oof_predictions_ = np.hstack([oof_parts[(b, kind)] for b in blocks for kind in kept[b]])
        self.oof_feature_names_ = [n for b in blocks for kind in kept[b] for n in self._score_names(b, kind)]
        self._fit_meta(self.oof_predictions_, columns, y_enc, fold_ids)
        return self

    # -- alignment -------------------------------------------------------------------------------------------
    def _fit_align(self, blocks: dict[str, np.ndarray], target) -> dict[str, np.ndarray]:
        """Fit each block's aligner (``aligners_``); return the training blocks as the probes will see them."""
        self.aligners_ = {}
        if self.align is None:
            if target is not None:
                raise ValidationError(f"target= (unlabelled rows of the target domain) is only used with align='whiten' "
                                 f"or align='coral'; this {type(self).__name__} has align=None.")
            return blocks
        if target is None and self.align == "coral":
            raise ValidationError(
                f"align='coral' recolours the training rows to the target domain's covariance, so fit needs that "
                f"domain's unlabelled rows: fit(X, y, target=T), T holding the blocks {list(self.blocks_)}."
            )
        targets = None if target is None else target_blocks(self, target)
        self.aligners_, out = fit_aligners(self.align, blocks, targets)
        return out

    def _align_for_predict(self, blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows at prediction time as the probes saw their kind: whitened, or as they are (CORAL moved the training
        rows to the target domain instead)."""
        aligners = getattr(self, "aligners_", None) or {}
        return {name: aligners[name].transform(X) if isinstance(aligners.get(name), Whitening) else X
                for name, X in blocks.items()}

    def _prune_extras(self, parts: dict[tuple[str, str], np.ndarray], blocks, kinds: list[str],
                      columns: pd.DataFrame | None, y: np.ndarray, fold_ids: np.ndarray) -> dict[str, list[str]]:
        """Each block's kinds, less the extra learners whose scores do not help: one backward pass over the
        (block, extra) groups, each dropped when a logistic meta learner's inner out-of-fold macro-F1 without it
        is at least as high (ties drop: fewer learners). Recorded in ``pruned_``."""
        kept = {b: list(kinds) for b in blocks}
        self.pruned_ = []
        groups = [(b, kind) for b in blocks for kind in kinds if kind in _EXTRAS]
        if not groups:
            return kept
        k = len(self.classes_)

        def score(keep: dict[str, list[str]]) -> float:
            names = [(b, kind) for b in blocks for kind in keep[b]]
            F = np.hstack([parts[g] for g in names])
            column_kinds = [g[1] for g in names for _ in range(parts[g].shape[1])]
            proba_cols = tuple(i for i, kind in enumerate(column_kinds) if kind not in _EXTRAS)
            make = lambda: make_meta("logistic", seed=0, proba_columns=proba_cols)  # noqa: E731
            return float(f1_score(y, np.argmax(inner_oof(make, F, columns, y, fold_ids, k), 1), average="macro"))

        current = score(kept)
        for b, kind in groups:
            trial = {**kept, b: [x for x in kept[b] if x != kind]}
            without = score(trial)
            if without >= current:
                kept, current = trial, without
                self.pruned_.append(f"{b}:{kind}")
        return kept

    def _base(self, kind: str, block: str):
        if kind == "logistic":
            params = self.probe_params_[block]
            return LogisticProbe(C=params["C"], standardize=params["standardize"])
        return self._template(kind)

    # -- meta learner ----------------------------------------------------------------------------------------
    def _candidates(self) -> dict[str, dict[str, Any]]:
        """Meta learners to try, by the name ``meta_scores_`` shows: make_meta arguments for each."""
        logistic = {"logistic": {"kind": "logistic"}, "logistic (balanced)": {"kind": "logistic",
                                                                             "class_weight": "balanced"}}
        if not isinstance(self.meta, str):
            return {"estimator": {"kind": self.meta}}
        if self.meta == "auto":
            # LightGBM joins only when the table's own columns do: on probe scores alone it never won the inner CV
            # on the benchmark tasks (2-12 classes; logistic or "best" did) and it was a third of the fit time.
            trees = {"lightgbm": {"kind": "lightgbm"}} if self.columns_ else {}
            return {**logistic, **trees, "best": {"kind": "best"}}
        if self.meta == "logistic":
            return logistic
        return {self.meta: {"kind": self.meta}}

    def _best_block(self, F: np.ndarray, y: np.ndarray, prior: np.ndarray) -> tuple[tuple[int, ...], str]:
        """The probability columns of the block whose base learner alone scores best out of fold."""
        best = None
        kind = self._kinds()[0]
        for b in self.blocks_:
            cols = tuple(i for i, name in enumerate(self.oof_feature_names_) if name.startswith(f"{b}:{kind}:"))
            score = self._decision_rule(as_proba(F[:, list(cols)], len(self.classes_)), y, prior)[1]
            if best is None or score > best[0]:
                best = (score, cols, b)
        return best[1], best[2]

    def _decision_rule(self, proba: np.ndarray, y: np.ndarray, prior: np.ndarray) -> tuple[Any, float]:
        return decision_rule(proba, y, prior, tune=self.threshold == "auto")

    def _fit_meta(self, F: np.ndarray, columns: pd.DataFrame | None, y: np.ndarray, fold_ids: np.ndarray) -> None:
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        k = len(self.classes_)
        column_kinds = [kind for b in self.blocks_ for kind in self.base_estimators_[b]
                        for _ in self._score_names(b, kind)]
        proba_cols = tuple(i for i, kind in enumerate(column_kinds) if kind not in _EXTRAS)
        prior = np.maximum(np.bincount(y, minlength=k) / len(y), 1.0 / len(y))
        passthrough = self._best_block(F, y, prior)

        def make(args: dict[str, Any]):
            return make_meta(args["kind"], seed=seed, proba_columns=proba_cols,
                             class_weight=args.get("class_weight"), passthrough=passthrough)

        candidates = self._candidates()
        needs_inner = len(candidates) > 1 or self.threshold == "auto"
        inner = {name: inner_oof(lambda a=args: make(a), F, columns, y, fold_ids, k)
                 for name, args in candidates.items()} if needs_inner else {}
        rules = {name: self._decision_rule(p, y, prior) for name, p in inner.items()}  # (rule, macro-F1)
        scores = {name: f1 for name, (_, f1) in rules.items()}
        if len(candidates) > 1:
            # Ties go to the simpler learner: passing the best base through, then logistic, then LightGBM.
            order = ["best", "logistic", "logistic (balanced)", "lightgbm"]
            chosen = max(candidates, key=lambda n: (round(scores[n], 12), -order.index(n) if n in order else -9))
            self.meta_scores_ = scores
        else:
            chosen = next(iter(candidates))
            self.meta_scores_ = {}
        self.meta_name_ = candidates[chosen]["kind"] if isinstance(candidates[chosen]["kind"], str) else "estimator"
        self.threshold_, self.class_weights_ = None, None
        rule = rules[chosen][0] if self.threshold == "auto" else None
        if k == 2:
            self.threshold_ = rule
        elif rule:  # a power > 0
            self.class_weights_ = prior ** -rule
        self.meta_estimator_ = make(candidates[chosen]).fit(F, columns, y, k)

    # -- inference -------------------------------------------------------------------------------------------
    def _meta_features(self, X) -> tuple[np.ndarray, pd.DataFrame | None]:
        check_is_fitted(self)
        blocks, columns = self._predict_inputs(X)
        blocks = self._align_for_predict(blocks)
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
        """The meta learner's raw scores (logits; 1-D for binary problems, as in scikit-learn), shifted by the
        tuned decision rule so that they decide as ``predict`` does: minus the logit of ``threshold_`` (binary),
        plus the log of ``class_weights_`` (multiclass)."""
        F, columns = self._meta_features(X)
        scores = self.meta_estimator_.decision_function(F, columns)
        if getattr(self, "threshold_", None) is not None:
            t = float(np.clip(self.threshold_, 1e-12, 1 - 1e-12))
            scores = scores - (np.log(t) - np.log1p(-t))
        if getattr(self, "class_weights_", None) is not None:
            scores = scores + np.log(self.class_weights_)
        return scores

    def predict(self, X) -> np.ndarray:
        """Class labels by the tuned decision rule: for a binary problem the positive class when its probability is
        above ``threshold_``; else the class maximising probability x ``class_weights_`` (a class-prior correction
        for macro-F1); the most probable class when neither was tuned."""
        if getattr(self, "threshold_", None) is not None:
            return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]
        proba = self.predict_proba(X)  # checks fitted first
        if getattr(self, "class_weights_", None) is not None:
            proba = proba * self.class_weights_
        return self.classes_[np.argmax(proba, axis=1)]

    def transform(self, X) -> np.ndarray:
        """The stacked base scores of ``X`` (what the meta learner sees), named by ``get_feature_names_out``."""
        return self._meta_features(X)[0]

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit, then return the out-of-fold base scores of the training rows (not ``transform`` of them, which
        would come from probes that saw those very labels): the leakage-free input for a next estimator."""
        return self.fit(X, y, **fit_params).oof_predictions_

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``"<block>:<base kind>:<class>"`` for each stacked score (one column per class, only the positive
        class for a binary probability)."""
        check_is_fitted(self)
        return np.asarray(self.oof_feature_names_, dtype=object)

    def save(self, path, *, metrics: Any = None) -> Path:
        """Write the fitted model to directory ``path`` (manifest.json, arrays.npz, LightGBM text); no pickle.

        ``metrics`` (a dict or a ``Comparison``) is recorded in the manifest. Load with ``stackers.load(path)``.
        """
        from stackers.classify._format import save_stacker

        return save_stacker(self, path, metrics=metrics)

    @classmethod
    def load(cls, path) -> StackingClassifier:
        """A model saved by :meth:`save`, every file checked first (``stackers.load`` reads any model kind)."""
        from stackers.classify._format import load_stacker

        return load_stacker(path, cls)


def _fit_base(est, X: np.ndarray, y: np.ndarray, mask: np.ndarray | None):
    if mask is not None:
        X, y = X[mask], y[mask]
    return est.fit(X, y)

"""A recommender from stored item embeddings: candidates from each feature set and from the interactions, re-ranked
by LightGBM LambdaRank on stacked features.

**Generators** (``_generators``) each score every catalogue item for a user; **features** (``_features``) describe
each (user, candidate) pair for the LambdaRank ranker; ``_evaluation`` scores the result over the full catalogue.

**Honest training.** The ranker learns from a time split inside the training data: each user's last training event
is the target, and every generator, vector and feature is computed from the events before it. To score (and to
evaluate) it recomputes all of it from the whole training data. Nothing from the test period is seen by either
stage. Items outside the candidates are ranked below them, by popularity, so metrics are over the full catalogue.

**Measured** (ML-100k, leave-last-out, 943 users, 2-core AMD EPYC shared with other jobs): see
``pipelines/jobs/_recommend.py`` and the README's Recommenders section for the table; the sequence generator and the
as-of-time popularity features carry most of the gain over the best single generator.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from featurestore.errors import InvalidTypeError, ValidationError
from featurestore.utils import (
    Constraint,
    DistinctNames,
    Interval,
    SubsetOf,
    progress_enabled,
    rich_progress,
    validate_params,
)
from stackers.evaluate._rank_metrics import as_row, coverage, paired_difference, per_user_metrics, resamples, summarize
from stackers.recommend._evaluation import RankEvaluation, target_ranks
from stackers.recommend._features import check_groups, ranker_features, read_item_vectors, train_ranker
from stackers.recommend._generators import (
    BASELINES,
    BLOCK,
    GENERATORS,
    _positions,
    baseline_scores,
    fit_generators,
    generator_scores,
    lightgbm,
)
from stackers.recommend._interactions import Interactions

__all__ = ["RecommenderStack"]

class _NoSets(Constraint):
    """An empty list: a stack of interaction generators only."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) == 0

    def __str__(self) -> str:
        return "an empty list"


# -- the estimator ------------------------------------------------------------------------------------------------
class RecommenderStack(BaseEstimator):
    """Candidates from feature sets and interaction generators, re-ranked by LightGBM LambdaRank.

    A scikit-learn estimator: ``get_params`` / ``set_params`` / ``clone`` read the constructor's parameters.

    ``sets``: item feature sets (keyed by item id) read from the store given to :meth:`fit`; ``generators``: the
    interaction generators used beside them (see the module docstring). ``candidates_per_set``: how many items each
    generator proposes per user. The rest are the ranker's and the features' knobs.

        model = RecommenderStack(sets=["movies_minilm", "movies_svd"]).fit(train, store=store)
        model.recommend(196, k=10)            # a pyarrow Table: item, score, rank
        model.evaluate(test)                  # RankEvaluation: recall@10, NDCG@10, MRR, coverage with CIs
    """

    _parameter_constraints: dict[str, list] = {
        "sets": [DistinctNames("feature set names"), _NoSets()],
        "generators": [SubsetOf(GENERATORS)],
        "candidates_per_set": [Interval(Integral, 1, None)],
        "svd_dim": [Interval(Integral, 1, None)],
        "half_life": [Interval(Real, 0, None, closed="neither"), None],
        "n_last": [Interval(Integral, 1, None)],
        "seq_window": [Interval(Integral, 1, None)],
        "seq_half_life": [Interval(Real, 0, None, closed="neither")],
        "window_days": [Interval(Real, 0, None, closed="neither")],
        "n_estimators": [Interval(Integral, 1, 100_000)],
        "learning_rate": [Interval(Real, 0, 1, closed="right")],
        "num_leaves": [Interval(Integral, 2, 4096)],
        "n_stages": [Interval(Integral, 1, None)],
        "max_train_users": [Interval(Integral, 1, None), None],
        "n_jobs": [Interval(Integral, 1, None)],
        "random_state": [Interval(Integral, 0, 2**31 - 1)],
    }

    def __init__(self, sets: Sequence[str] = (), *, generators: Sequence[str] = GENERATORS,
                 candidates_per_set: int = 50, svd_dim: int = 64, half_life: float = 20.0, n_last: int = 5,
                 seq_window: int = 3, seq_half_life: float = 1.0, window_days: float = 7.0,
                 n_estimators: int = 300, learning_rate: float = 0.02, num_leaves: int = 15,
                 n_stages: int = 3, max_train_users: int | None = None, n_jobs: int = 1, random_state: int = 0):
        self.sets = sets
        self.generators = generators
        self.candidates_per_set = candidates_per_set
        self.svd_dim = svd_dim
        self.half_life = half_life
        self.n_last = n_last
        self.seq_window = seq_window
        self.seq_half_life = seq_half_life
        self.window_days = window_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.n_stages = n_stages
        self.max_train_users = max_train_users
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _p(self) -> dict[str, Any]:
        return self.get_params(deep=False)

    # -- fitting --------------------------------------------------------------------------------------------------
    def fit(self, train: Interactions, store: Any = None, *, progress: bool | None = None) -> "RecommenderStack":
        """Learn the ranker on a time split of ``train`` (each user's last training event as its target, everything
        else from the events before it), then refit every generator on all of ``train`` for scoring.

        ``store``: the feature store holding ``sets`` (needed when ``sets`` is not empty); their vectors are read
        once, for the catalogue's items, and kept with the model.
        """
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        if not isinstance(train, Interactions):
            raise InvalidTypeError(f"RecommenderStack.fit needs an Interactions table; got {type(train).__name__}.")
        if not self.generators and not self.sets:
            raise ValidationError("RecommenderStack needs at least one generator or feature set to draw candidates from.")
        start = _time.perf_counter()
        self.items_ = train.items
        self.set_vectors_, self.set_sources_ = read_item_vectors(store, list(self.sets), train.items)
        self.gen_names_ = [*self.generators, *self.sets]
        p = self._p()
        rng = np.random.default_rng(self.random_state)
        X, y, groups, hit, asked = [], [], [], 0, 0
        history = train
        stages = []
        for _ in range(self.n_stages):  # stage s: the s-th last training event is the target
            history, targets = history.split("leave_last")
            if len(targets) < 2:
                break
            stages.append((history, targets))
        if not stages:
            raise ValidationError("RecommenderStack needs users with at least 2 training events to learn its ranker; "
                             f"{len(train.users)} user(s) have fewer.")
        total = sum(len(t) for _, t in stages)
        with rich_progress("ranker data", total, enabled=progress_enabled(progress), unit="users") as bar:
            for history, targets in stages:
                users = targets.user
                if self.max_train_users is not None and len(users) > self.max_train_users:
                    users = np.sort(rng.choice(users, self.max_train_users, replace=False))
                    targets = targets.subset(np.isin(targets.user, users))
                fitted = fit_generators(history, users, self.set_vectors_, p)
                target_idx = targets.item_index()
                for lo in range(0, len(users), BLOCK):
                    rows = np.arange(lo, min(lo + BLOCK, len(users)))
                    scores, seen = generator_scores(fitted, rows, p)
                    r_idx, i_idx, F, names = ranker_features(fitted, rows, p, scores, seen, self.gen_names_)
                    label = (i_idx == target_idx[rows][r_idx]).astype(np.float64)
                    sizes = np.bincount(r_idx, minlength=len(rows))
                    pos = np.bincount(r_idx, weights=label, minlength=len(rows)) > 0
                    keep = pos[r_idx]  # groups without the target teach LambdaRank nothing
                    hit, asked = hit + int(pos.sum()), asked + len(rows)
                    X.append(F[keep])
                    y.append(label[keep])
                    groups.append(sizes[pos])
                    bar(asked)
        self.feature_names_ = names
        self.candidate_recall_ = hit / asked
        X, y, groups = np.vstack(X), np.concatenate(y), np.concatenate(groups)
        check_groups(groups, len(y))
        self.ranker_text_ = train_ranker(X, y, groups, p)
        self.n_train_rows_, self.n_train_groups_ = int(len(y)), int(len(groups))
        self.train_ = train
        self._refit()
        self.fit_seconds_ = _time.perf_counter() - start
        return self

    def _refit(self) -> None:
        """Every generator on the whole training data, and the ranker booster from its text (as a loaded model)."""
        lgb = lightgbm()
        self.fitted_ = fit_generators(self.train_, self.train_.users, self.set_vectors_, self._p())
        self.booster_ = lgb.Booster(model_str=self.ranker_text_)

    def save(self, path: Any, *, test: Interactions | None = None, metrics: Any = None,
             extra: dict[str, Any] | None = None) -> Any:
        """Write the fitted model (and the ``test`` interactions it is judged on) to folder ``path``, no pickle."""
        from stackers.recommend._format import save_recommender

        return save_recommender(self, path, test=test, metrics=metrics, extra=extra)

    @classmethod
    def load(cls, path: Any) -> "RecommenderStack":
        """A model written by :meth:`save` (every file checked first); ``test_`` holds the held-out interactions
        saved with it, or None."""
        from stackers.recommend._format import load_recommender

        return load_recommender(path, cls)

    # -- scoring --------------------------------------------------------------------------------------------------
    def _block_scores(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(stack's scores over the full catalogue, each generator's scores, history mask) for user rows."""
        f, p = self.fitted_, self._p()
        scores, seen = generator_scores(f, rows, p)
        r_idx, i_idx, F, _ = ranker_features(f, rows, p, scores, seen, self.gen_names_)
        ranked = np.asarray(self.booster_.predict(F, num_threads=self.n_jobs), dtype=np.float64)
        # items outside the candidates come after them, by popularity (pop / (max + 1) < 1 keeps them apart)
        floor = ranked.min(initial=0.0) - 2.0
        full = np.broadcast_to(floor - 1.0 + f.pop / (f.pop.max() + 1.0), seen.shape).copy()
        full[r_idx, i_idx] = ranked
        full[seen] = -np.inf
        return full, scores, seen

    def _rows_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _positions(self.fitted_.users, np.asarray(users))

    def recommend_many(self, users: Sequence[Any], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores), each (len(users), k): the top ``k`` unseen items per user. Users without training
        events get the most popular items (score NaN)."""
        self._check_fitted()
        validate_params({"k": k}, {"k": [Interval(Integral, 1, None)]}, "RecommenderStack.recommend")
        users = np.asarray(users)
        rows, known = self._rows_of(users)
        k = min(k, len(self.items_))
        items = np.empty((len(users), k), dtype=self.items_.dtype)
        out = np.full((len(users), k), np.nan)
        popular = np.argsort(-self.fitted_.pop, kind="stable")[:k]
        items[~known] = self.items_[popular]
        kr = np.flatnonzero(known)
        for lo in range(0, len(kr), BLOCK):
            sel = kr[lo:lo + BLOCK]
            full, _, _ = self._block_scores(rows[sel])
            top = np.argsort(-full, axis=1, kind="stable")[:, :k]
            items[sel] = self.items_[top]
            out[sel] = np.take_along_axis(full, top, axis=1)
        return items, out

    def recommend(self, user: Any, k: int = 10) -> Any:
        """The top ``k`` items for ``user`` that are not in their training history, as a ``pyarrow.Table``
        (``item``, ``score``, ``rank``)."""
        import pyarrow as pa

        items, scores = self.recommend_many([user], k)
        return pa.table({"item": items[0], "score": scores[0], "rank": np.arange(1, items.shape[1] + 1)})

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ValidationError("This RecommenderStack is not fitted yet: call fit(train, store) first.")

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, test: Interactions, *, k: int = 10, n_boot: int = 1000, random_state: int = 0,
                 progress: bool | None = None) -> "RankEvaluation":
        """Score the stack and every baseline (popularity, ItemKNN, SVD) and single generator (each feature set
        alone, ``recent``, ``seq``) on ``test`` over the full catalogue minus each user's training items.

        Held-out events of users unknown to training, of items outside the catalogue, or of items the user already
        has in training are not scored (their counts are in ``RankEvaluation.skipped``).
        """
        self._check_fitted()
        validate_params({"k": k, "n_boot": n_boot, "random_state": random_state},
                        {"k": [Interval(Integral, 1, None)], "n_boot": [Interval(Integral, 0, None)],
                         "random_state": [Interval(Integral, 0, None)]}, "RecommenderStack.evaluate")
        if not isinstance(test, Interactions):
            raise InvalidTypeError(f"evaluate needs an Interactions table; got {type(test).__name__}.")
        rows_all, known = self._rows_of(test.user)
        in_cat = np.isin(test.item, self.items_)
        skipped = {"unknown_user": int((~known).sum()), "unknown_item": int((known & ~in_cat).sum())}
        ok = known & in_cat
        t_rows, t_items = rows_all[ok], np.searchsorted(self.items_, test.item[ok])
        users = np.unique(t_rows)
        models = ["stack", *dict.fromkeys([*BASELINES, *self.gen_names_])]
        ranks = {m: np.zeros(len(t_rows)) for m in models}
        top = {m: np.full((len(users), k), -1) for m in models}
        repeat = np.zeros(len(t_rows), bool)
        start = _time.perf_counter()
        with rich_progress("evaluating", len(users), enabled=progress_enabled(progress), unit="users") as bar:
            for lo in range(0, len(users), BLOCK):
                block = users[lo:lo + BLOCK]
                full, scores, seen = self._block_scores(block)
                extra = baseline_scores(self.fitted_, block, self._p(), scores)
                sel = np.flatnonzero(np.isin(t_rows, block))
                b_of = np.searchsorted(block, t_rows[sel])
                repeat[sel] = seen[b_of, t_items[sel]]
                for m in models:
                    s = full if m == "stack" else extra.get(m, scores.get(m))
                    s = np.where(seen, -np.inf, s)
                    ranks[m][sel] = target_ranks(s, b_of, t_items[sel])
                    top[m][lo:lo + len(block)] = np.argsort(-s, axis=1, kind="stable")[:, :k]
                bar(lo + len(block))
        seconds = _time.perf_counter() - start
        skipped["in_training"] = int(repeat.sum())
        keep = ~repeat
        owner = np.searchsorted(users, t_rows[keep])
        idx = resamples(len(users), n_boot, random_state)
        per_user = {m: per_user_metrics(ranks[m][keep], owner, len(users), k) for m in models}
        rows = [as_row(m, summarize(per_user[m], idx), coverage(top[m], len(self.items_)), k) for m in models]
        best = max(models[1:], key=lambda m: np.nanmean(per_user[m]["ndcg"]))
        paired = {m: {metric: paired_difference(per_user["stack"][metric], per_user[m][metric], idx)
                      for metric in ("recall", "ndcg")} for m in models[1:]} if idx is not None else {}
        return RankEvaluation(k=k, rows=rows, per_user=per_user, n_users=len(users), n_events=int(keep.sum()),
                              skipped=skipped, best_other=best, paired=paired, seconds=seconds,
                              candidate_recall=getattr(self, "candidate_recall_", float("nan")))

"""A recommender from stored item embeddings: candidates from each feature set and from the interactions, re-ranked
by LightGBM LambdaRank on stacked features.

**Generators.** Each scores every catalogue item for a user (training items masked out):

- one per feature set: cosine between the item's vector and the user's vector (the recency-weighted mean of the
  vectors of the items in the user's history, ``user_vectors``);
- ``pop``: training counts; ``recent``: counts in the ``window_days`` before the user's own last event;
- ``itemknn``: the sum of item-item cosines (binary user-item matrix) to the items of the history;
- ``svd``: a rank-``svd_dim`` truncated SVD of the binary user-item matrix, users folded in (``x_u V V^T``);
- ``seq``: item-to-item transitions (how often item j follows item i within ``seq_window`` events in other users'
  histories, weighted 1/gap) from the user's last ``n_last`` items. Sequence matters when the target is the last
  event: on ML-100k leave-last-out it is the strongest single signal.

**Candidates and features.** The union of each generator's top ``candidates_per_set``; for each (user, candidate):
every generator's score and rank, per feature set the similarity to the user's last 1 / mean of last 3 / max of last
5 items, popularity overall and in the last 1 / 7 / 30 days before the user's last event, days since the item's
first and last event, its mean rating, and user statistics (history length, mean rating, mean popularity of the
history, days active). Time-windowed counts are taken as of the user's own last event (``searchsorted`` on
(item, time) keys), so no count includes anything later.

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
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

from featurestore.utils._optional import import_optional
from featurestore.utils._progress import progress_enabled, rich_progress
from featurestore.utils._validation import Constraint, DistinctNames, Interval, SubsetOf, validate_params

from stackers.recommend._interactions import Interactions, user_vectors
from stackers.evaluate._rank_metrics import as_row, coverage, paired_difference, per_user_metrics, resamples, summarize
from featurestore.errors import InvalidTypeError, ValidationError

__all__ = ["RecommenderStack", "RankEvaluation", "collaborative_vectors", "GENERATORS", "BASELINES"]

GENERATORS = ("pop", "recent", "itemknn", "svd", "seq")
BASELINES = ("pop", "itemknn", "svd")  # the classic baselines, always evaluated beside the stack
DAY = 86_400.0
_BLOCK = 256  # users scored at once: (256 x n_items) float64 per generator


def _lightgbm():
    return import_optional("lightgbm", extra="stack", what="RecommenderStack's ranker")


# -- what one history gives ---------------------------------------------------------------------------------------
def _binary_matrix(history: Interactions, users: np.ndarray):
    """(users x items) 0/1 CSR matrix of who has an event with what (users in ``users`` order)."""
    from scipy import sparse

    pos, known = _positions(users, history.user)
    X = sparse.csr_matrix((np.ones(int(known.sum())), (pos[known], history.item_index()[known])),
                          shape=(len(users), history.n_items))
    X.data[:] = 1.0  # repeated events count once
    return X


def _positions(users: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position in ``users`` of each of ``values`` and whether it is there at all."""
    order = np.argsort(users, kind="stable")
    srt = users[order]
    pos = np.searchsorted(srt, values)
    pos_c = np.minimum(pos, max(len(users) - 1, 0))
    known = (pos < len(users)) & (srt[pos_c] == values) if len(users) else np.zeros(len(values), bool)
    return order[pos_c], known


def collaborative_vectors(history: Interactions, dim: int = 64, *, random_state: int = 0) -> np.ndarray:
    """(n_items, dim') item factors ``V * sqrt(s)`` of a truncated SVD of the binary user-item matrix (dim' =
    ``min(dim, users - 1, items - 1)``), rows in catalogue order: the collaborative feature set."""
    from sklearn.utils.extmath import randomized_svd

    X = _binary_matrix(history, history.users)
    r = max(1, min(dim, X.shape[0] - 1, X.shape[1] - 1))
    _, s, vt = randomized_svd(X, n_components=r, random_state=random_state, n_iter=7)
    return (vt.T * np.sqrt(s)).astype(np.float64)


@dataclass
class _Fitted:
    """The generators fitted on one history, and the per-item and per-user counts the features need."""

    history: Interactions
    users: np.ndarray            # the users scored (rows of every block), sorted
    now: np.ndarray              # each user's "now": the time of their last history event
    pop: np.ndarray              # (n_items,) training counts
    mean_rating: np.ndarray      # (n_items,) NaN when unrated or implicit
    knn: np.ndarray              # (n_items, n_items) item-item cosine, zero diagonal
    svd_v: np.ndarray            # (n_items, r) right singular vectors
    trans: Any                   # sparse (n_items, n_items) transitions i -> j
    sets: dict[str, np.ndarray]  # name -> unit item vectors (n_items, d), catalogue order
    set_users: dict[str, np.ndarray] = field(default_factory=dict)  # name -> unit user vectors
    keys: np.ndarray = field(default=None)  # item*span + time, sorted: counts in windows by searchsorted
    span: int = 0
    t0: float = 0.0


def _fit_generators(history: Interactions, users: np.ndarray, sets: dict[str, np.ndarray], p: dict[str, Any]
                    ) -> _Fitted:
    from scipy import sparse

    n_items = history.n_items
    idx = history.item_index()
    pop = np.bincount(idx, minlength=n_items).astype(np.float64)
    if history.rating is not None:
        sums = np.bincount(idx, weights=history.rating, minlength=n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_rating = sums / pop
    else:
        mean_rating = np.full(n_items, np.nan)
    X = _binary_matrix(history, history.users)
    norms = np.sqrt(np.asarray(X.sum(axis=0)).ravel())
    Xn = X @ sparse.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    knn = np.asarray((Xn.T @ Xn).todense())
    np.fill_diagonal(knn, 0.0)
    r = max(1, min(p["svd_dim"], X.shape[0] - 1, X.shape[1] - 1))
    from sklearn.utils.extmath import randomized_svd

    _, _, vt = randomized_svd(X, n_components=r, random_state=p["random_state"], n_iter=7)
    # transitions: event a -> each of the next seq_window events of the same user, weight 1/gap
    rows, cols, vals = [], [], []
    same = history.user
    for gap in range(1, p["seq_window"] + 1):
        ok = same[gap:] == same[:-gap]
        rows.append(idx[:-gap][ok])
        cols.append(idx[gap:][ok])
        vals.append(np.full(int(ok.sum()), 1.0 / gap))
    trans = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n_items, n_items)) if len(history) > 1 else sparse.csr_matrix((n_items, n_items))
    start, stop = history.user_rows(users)
    now = np.where(stop > start, history.time[np.maximum(stop - 1, 0)], -np.inf)
    t0 = float(history.time.min()) if len(history) else 0.0
    tint = np.floor(history.time - t0).astype(np.int64)
    span = int(tint.max() + 2) if len(history) else 2
    keys = np.sort(idx.astype(np.int64) * span + tint)
    fitted = _Fitted(history, users, now, pop, mean_rating, knn, vt.T.copy(), trans, sets, keys=keys, span=span,
                     t0=t0)
    fitted.set_users = {name: user_vectors(history, users, vecs, half_life=p["half_life"])
                        for name, vecs in sets.items()}
    return fitted


def _count_before(f: _Fitted, items: np.ndarray, t: np.ndarray, days: float | None) -> np.ndarray:
    """Events of ``items`` at times in [t - days, t] (all before or at t when ``days`` is None), per pair."""
    base = items.astype(np.int64) * f.span
    hi = base + np.clip(np.floor(t - f.t0), -1, f.span - 1).astype(np.int64)
    upper = np.searchsorted(f.keys, hi, side="right")
    if days is None:
        lower = np.searchsorted(f.keys, base, side="left")
    else:
        lo = base + np.clip(np.floor(t - days * DAY - f.t0), 0, f.span - 1).astype(np.int64)
        lower = np.searchsorted(f.keys, lo, side="left")
    return np.maximum(upper - lower, 0).astype(np.float64)


def _edge_times(f: _Fitted, items: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(days since the item's first event, days since its last event) as of ``t``; NaN when none before."""
    base = items.astype(np.int64) * f.span
    first = np.searchsorted(f.keys, base, side="left")
    upper = np.searchsorted(f.keys, base + np.clip(np.floor(t - f.t0), -1, f.span - 1).astype(np.int64),
                            side="right")
    has = upper > first
    safe_first = np.minimum(first, len(f.keys) - 1)
    safe_last = np.clip(upper - 1, 0, len(f.keys) - 1)
    tf = (f.keys[safe_first] - base) + f.t0
    tl = (f.keys[safe_last] - base) + f.t0
    return np.where(has, (t - tf) / DAY, np.nan), np.where(has, (t - tl) / DAY, np.nan)


def _history_matrix(f: _Fitted, rows: np.ndarray, *, last: int | None = None, half_life: float | None = None):
    """(len(rows) x items) sparse weights of the histories of users ``f.users[rows]``: 1 per event, or recency
    weights over the last ``last`` events."""
    from scipy import sparse

    h = f.history
    start, stop = h.user_rows(f.users[rows])
    if last is not None:
        start = np.maximum(start, stop - last)
    n = stop - start
    owner = np.repeat(np.arange(len(rows)), n)
    ev = np.repeat(stop, n) - (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) - 1  # newest first
    from_end = np.repeat(stop, n) - 1 - ev
    w = np.ones(len(ev)) if half_life is None else 0.5 ** (from_end / half_life)
    M = sparse.csr_matrix((w, (owner, h.item_index()[ev])), shape=(len(rows), h.n_items))
    return M, owner, ev, from_end


def _scores(f: _Fitted, rows: np.ndarray, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each generator's (block x items) scores for users ``f.users[rows]`` and the mask of their history items."""
    X, _, _, _ = _history_matrix(f, rows)
    seen = X.toarray() > 0
    R, _, _, _ = _history_matrix(f, rows, last=p["n_last"], half_life=p["seq_half_life"])
    b = len(rows)
    out = {"pop": np.broadcast_to(f.pop, (b, len(f.pop))).copy()}
    items = np.arange(len(f.pop))
    now = f.now[rows]
    out["recent"] = _count_before(f, np.tile(items, b), np.repeat(now, len(items)),
                                  p["window_days"]).reshape(b, -1) + f.pop / (f.pop.max() + 1.0)
    out["itemknn"] = np.asarray(X @ f.knn)
    out["svd"] = (X @ f.svd_v) @ f.svd_v.T
    out["seq"] = np.asarray((R @ f.trans).todense())
    for name, vecs in f.sets.items():
        out[name] = f.set_users[name][rows] @ vecs.T
    return out, seen


def _ranks(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """1-based rank of every item per row among the unseen ones (ties: lower item index first); seen items get
    n_items + 1."""
    s = np.where(seen, -np.inf, scores)
    order = np.argsort(-s, axis=1, kind="stable")  # stable: equal scores keep item order
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :].repeat(s.shape[0], 0), axis=1)
    return np.where(seen, s.shape[1] + 1, ranks)


def _features(f: _Fitted, rows: np.ndarray, p: dict[str, Any], scores: dict[str, np.ndarray], seen: np.ndarray,
              gen_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Candidates (block row, item) and their feature matrix. Rows come grouped by user, in block order."""
    ranks = {g: _ranks(scores[g], seen) for g in gen_names}
    cand = np.zeros(seen.shape, bool)
    for g in gen_names:
        cand |= ranks[g] <= p["candidates_per_set"]
    cand &= ~seen
    r_idx, i_idx = np.nonzero(cand)  # row-major: grouped by user
    cols, names = [], []
    for g in gen_names:
        cols += [scores[g][r_idx, i_idx], np.log1p(ranks[g][r_idx, i_idx].astype(np.float64))]
        names += [f"{g}_score", f"{g}_logrank"]
    # similarity to the user's last items, per feature set (the last items themselves are the same for every set)
    _, owner, ev, from_end = _history_matrix(f, rows, last=5)
    last_idx = np.full((len(rows), 5), -1)
    last_idx[owner, from_end] = f.history.item_index()[ev]
    valid = last_idx[r_idx] >= 0
    for name, vecs in f.sets.items():
        lv = np.where((last_idx >= 0)[..., None], vecs[np.maximum(last_idx, 0)], 0.0)  # (b, 5, d)
        cand_vecs = vecs[i_idx]                                   # (n, d)
        s = np.einsum("nld,nd->nl", lv[r_idx], cand_vecs)          # (n, 5)
        s = np.where(valid, s, np.nan)
        with np.errstate(invalid="ignore"), _quiet_nan():
            cols += [s[:, 0], np.nanmean(s[:, :3], axis=1), np.nanmax(s, axis=1)]
        names += [f"{name}_last1", f"{name}_last3_mean", f"{name}_last5_max"]
    now = f.now[rows][r_idx]
    cols.append(np.log1p(f.pop[i_idx]))
    names.append("pop_log")
    for days in (1, 7, 30):
        cols.append(np.log1p(_count_before(f, i_idx, now, days)))
        names.append(f"pop_{days}d_log")
    first, last = _edge_times(f, i_idx, now)
    cols += [first, last, f.mean_rating[i_idx]]
    names += ["item_days_since_first", "item_days_since_last", "item_mean_rating"]
    h = f.history
    start, stop = h.user_rows(f.users[rows])
    n_hist = (stop - start).astype(np.float64)
    idx = h.item_index()
    csum = np.r_[0.0, np.cumsum(np.log1p(f.pop[idx]))]
    user_pop = np.divide(csum[stop] - csum[start], n_hist, out=np.full(len(rows), np.nan), where=n_hist > 0)
    if h.rating is not None:
        rsum = np.r_[0.0, np.cumsum(h.rating)]
        user_rating = np.divide(rsum[stop] - rsum[start], n_hist, out=np.full(len(rows), np.nan), where=n_hist > 0)
    else:
        user_rating = np.full(len(rows), np.nan)
    first_t = np.where(n_hist > 0, h.time[np.minimum(start, max(len(h) - 1, 0))], np.nan)
    user_days = (f.now[rows] - first_t) / DAY
    cols += [np.log1p(n_hist)[r_idx], user_rating[r_idx], user_pop[r_idx], user_days[r_idx]]
    names += ["user_n_log", "user_mean_rating", "user_mean_pop_log", "user_days_active"]
    return r_idx, i_idx, np.column_stack(cols).astype(np.float64), names


class _quiet_nan:
    """np.nanmean/nanmax on all-NaN rows warn; those rows are users without history (the NaN is the answer)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


class _NoSets(Constraint):
    """An empty list: a stack of interaction generators only."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) == 0

    def __str__(self) -> str:
        return "an empty list"


# -- the estimator ------------------------------------------------------------------------------------------------
class RecommenderStack:
    """Candidates from feature sets and interaction generators, re-ranked by LightGBM LambdaRank.

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

    _PARAMS = ("sets", "generators", "candidates_per_set", "svd_dim", "half_life", "n_last", "seq_window",
               "seq_half_life", "window_days", "n_estimators", "learning_rate", "num_leaves", "n_stages",
               "max_train_users", "n_jobs", "random_state")

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._PARAMS}

    def __repr__(self) -> str:
        return f"RecommenderStack(sets={list(self.sets)!r}, generators={list(self.generators)!r})"

    def _p(self) -> dict[str, Any]:
        return self.get_params()

    # -- fitting --------------------------------------------------------------------------------------------------
    def fit(self, train: Interactions, store: Any = None, *, progress: bool | None = None) -> "RecommenderStack":
        """Learn the ranker on a time split of ``train`` (each user's last training event as its target, everything
        else from the events before it), then refit every generator on all of ``train`` for scoring.

        ``store``: the feature store holding ``sets`` (needed when ``sets`` is not empty); their vectors are read
        once, for the catalogue's items, and kept with the model.
        """
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
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
                fitted = _fit_generators(history, users, self.set_vectors_, p)
                target_idx = targets.item_index()
                for lo in range(0, len(users), _BLOCK):
                    rows = np.arange(lo, min(lo + _BLOCK, len(users)))
                    scores, seen = _scores(fitted, rows, p)
                    r_idx, i_idx, F, names = _features(fitted, rows, p, scores, seen, self.gen_names_)
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
        self.ranker_text_ = _train_ranker(X, y, groups, p)
        self.n_train_rows_, self.n_train_groups_ = int(len(y)), int(len(groups))
        self.train_ = train
        self._refit()
        self.fit_seconds_ = _time.perf_counter() - start
        return self

    def _refit(self) -> None:
        """Every generator on the whole training data, and the ranker booster from its text (as a loaded model)."""
        lgb = _lightgbm()
        self.fitted_ = _fit_generators(self.train_, self.train_.users, self.set_vectors_, self._p())
        self.booster_ = lgb.Booster(model_str=self.ranker_text_)

    def save(self, path: Any, *, test: Interactions | None = None, metrics: Any = None,
             extra: dict[str, Any] | None = None) -> Any:
        """Write the fitted model (and the ``test`` interactions it is judged on) to folder ``path``, no pickle."""
        from stackers.recommend._format import save_recommender

        return save_recommender(self, path, test=test, metrics=metrics, extra=extra)

    @classmethod
    def load(cls, path: Any) -> "RecommenderStack":
        """A model written by :meth:`save` (every file checked first)."""
        from stackers.recommend._format import load_recommender

        return load_recommender(path)[0]

    # -- scoring --------------------------------------------------------------------------------------------------
    def _block_scores(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(stack's scores over the full catalogue, each generator's scores, history mask) for user rows."""
        f, p = self.fitted_, self._p()
        scores, seen = _scores(f, rows, p)
        r_idx, i_idx, F, _ = _features(f, rows, p, scores, seen, self.gen_names_)
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
        for lo in range(0, len(kr), _BLOCK):
            sel = kr[lo:lo + _BLOCK]
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
            for lo in range(0, len(users), _BLOCK):
                block = users[lo:lo + _BLOCK]
                full, scores, seen = self._block_scores(block)
                extra = _baseline_scores(self.fitted_, block, self._p(), scores)
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


def _baseline_scores(f: _Fitted, rows: np.ndarray, p: dict[str, Any], scores: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Baselines that are not among this model's generators, computed the same way."""
    missing = [b for b in BASELINES if b not in scores]
    if not missing:
        return {}
    X, _, _, _ = _history_matrix(f, rows)
    out = {}
    if "pop" in missing:
        out["pop"] = np.broadcast_to(f.pop, (len(rows), len(f.pop))).copy()
    if "itemknn" in missing:
        out["itemknn"] = np.asarray(X @ f.knn)
    if "svd" in missing:
        out["svd"] = (X @ f.svd_v) @ f.svd_v.T
    return out


def target_ranks(scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based rank of item ``items[i]`` in row ``rows[i]`` of ``scores``: items with a higher score, or an equal
    score and a lower index, come first (the order ``np.argsort(-s, kind="stable")`` gives)."""
    out = np.empty(len(rows))
    n = scores.shape[1]
    for lo in range(0, len(rows), 4096):
        r, it = rows[lo:lo + 4096], items[lo:lo + 4096]
        s = scores[r]
        st = s[np.arange(len(r)), it][:, None]
        before = (s > st) | ((s == st) & (np.arange(n)[None, :] < it[:, None]))
        out[lo:lo + 4096] = before.sum(axis=1) + 1
    return out


def check_groups(groups: np.ndarray, n_rows: int) -> None:
    """LambdaRank's query groups must tile the rows exactly: positive sizes that add up to the row count."""
    if groups.ndim != 1 or (groups <= 0).any() or int(groups.sum()) != n_rows:
        raise ValidationError(f"ranker groups must be positive sizes adding up to {n_rows} rows; got {len(groups)} "
                         f"groups adding up to {int(groups.sum())}.")


def _train_ranker(X: np.ndarray, y: np.ndarray, groups: np.ndarray, p: dict[str, Any]) -> str:
    """LambdaRank trees on (rows grouped by user, contiguous) -> the model's text (what is saved and loaded)."""
    lgb = _lightgbm()
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "lambdarank_truncation_level": 20,
        "learning_rate": p["learning_rate"],
        "num_leaves": p["num_leaves"],
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "seed": int(p["random_state"]),
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": int(p["n_jobs"]),
        "verbose": -1,
    }
    data = lgb.Dataset(X, label=y, group=groups, params={"verbose": -1}, free_raw_data=True)
    booster = lgb.train(params, data, num_boost_round=p["n_estimators"])
    return booster.model_to_string()


def read_item_vectors(store: Any, names: list[str], items: np.ndarray
                      ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Unit vectors of each feature set for the catalogue ``items`` (zeros where a set lacks an item), through the
    store's search matrix (the cached, memory-mapped float32 rows exact search scores), and where each came from."""
    if not names:
        return {}, {}
    if store is None:
        raise ValidationError(f"RecommenderStack.fit needs the store that holds the feature sets {names}.")
    from featurestore.search._search import load_matrix

    vectors, sources = {}, {}
    for name in names:
        fs = store.get(name)
        if str(fs.manifest.spec.get("encoder", "")).startswith("svd:"):
            raise ValidationError(
                f"Feature set {name!r} holds collaborative vectors learned from interactions "
                f"({fs.manifest.spec['encoder']}); as a fixed input it would tell the ranker's training stage about "
                "its own targets.\n  Help: leave it out of sets; the 'svd' generator is refitted on each stage's "
                "history.")
        if len(fs.manifest.key) != 1:
            raise ValidationError(f"Feature set {name!r} has a compound key {fs.manifest.key}; item sets need one key.")
        m = load_matrix(fs, unit=True)
        keys = m.keys.column(0).to_numpy(zero_copy_only=False)
        try:
            keys = keys.astype(items.dtype) if keys.dtype != items.dtype else keys
        except (TypeError, ValueError):
            raise ValidationError(f"Feature set {name!r} has {keys.dtype} keys; the interactions' items are "
                             f"{items.dtype}.") from None
        pos = np.searchsorted(items, keys)
        pos_c = np.minimum(pos, len(items) - 1)
        hit = (pos < len(items)) & (items[pos_c] == keys)
        if not hit.any():
            raise ValidationError(f"Feature set {name!r} holds none of the {len(items)} catalogue items (its keys look "
                             f"like {keys[:3].tolist()}; the items like {items[:3].tolist()}).")
        out = np.zeros((len(items), m.vectors.shape[1]))
        out[pos[hit]] = np.asarray(m.vectors[hit], dtype=np.float64)
        vectors[name] = out
        sources[name] = {"version": fs.version, "spec": fs.manifest.spec, "items_found": int(hit.sum()),
                         "items_missing": int(len(items) - hit.sum())}
    return vectors, sources


@dataclass
class RankEvaluation:
    """Full-catalogue ranking metrics of the stack and its baselines on the same users, with bootstrap intervals."""

    k: int
    rows: list[dict[str, Any]]
    per_user: dict[str, dict[str, np.ndarray]]
    n_users: int
    n_events: int
    skipped: dict[str, int]
    best_other: str
    paired: dict[str, dict[str, float]]
    seconds: float = 0.0
    candidate_recall: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "users": self.n_users, "events": self.n_events, "skipped": self.skipped,
                "models": self.rows, "best_other": self.best_other,
                "stack_minus": self.paired, "seconds": self.seconds,
                "ranker_candidate_recall": self.candidate_recall}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RankEvaluation":
        """The evaluation ``to_dict`` saved (per-user scores are not kept: enough to print and compare)."""
        return cls(k=int(d["k"]), rows=list(d["models"]), per_user={}, n_users=int(d["users"]),
                   n_events=int(d["events"]), skipped=dict(d.get("skipped") or {}), best_other=d.get("best_other", ""),
                   paired=dict(d.get("stack_minus") or {}), seconds=float(d.get("seconds") or 0.0),
                   candidate_recall=float(d.get("ranker_candidate_recall", float("nan"))))

    def beats_all(self) -> bool:
        """Whether the stack's paired interval against every other model lies above zero, for recall and NDCG."""
        return bool(self.paired) and all(d["low"] > 0 for diffs in self.paired.values() for d in diffs.values())

    def to_text(self) -> str:
        k = self.k
        head = f"{'model':<22}{'recall@' + str(k):>24}{'NDCG@' + str(k):>24}{'MRR':>10}{'coverage':>10}"
        lines = [head]
        for r in self.rows:
            def cell(label: str) -> str:
                lo, hi = r.get(f"{label}_low"), r.get(f"{label}_high")
                return f"{r[label]:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
            lines.append(f"{r['model']:<22}{cell(f'recall@{k}'):>24}{cell(f'ndcg@{k}'):>24}{r['mrr']:>10.4f}"
                         f"{r[f'coverage@{k}']:>10.3f}")
        for model, diffs in self.paired.items():
            lines.append(f"stack - {model:<15}" + "".join(
                f"  {metric}@{k} {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" for metric, d in diffs.items()))
        lines.append(f"{self.n_users} users, {self.n_events} held-out events; skipped {self.skipped}")
        return "\n".join(lines)

    def plot(self, path: Any) -> Any:
        """Recall@k and NDCG@k of every model with their intervals, as a PNG."""
        from pathlib import Path

        from stackers.evaluate._report import _figure

        fig = _figure(9, 0.35 * len(self.rows) + 1.6)
        axes = fig.subplots(1, 2, sharey=True)
        names = [r["model"] for r in self.rows]
        y = np.arange(len(names))
        for ax, metric in zip(axes, (f"recall@{self.k}", f"ndcg@{self.k}")):
            v = np.array([r[metric] for r in self.rows])
            lo = np.array([r.get(f"{metric}_low", np.nan) for r in self.rows])
            hi = np.array([r.get(f"{metric}_high", np.nan) for r in self.rows])
            colors = ["#fc8d62" if n == "stack" else "#8da0cb" if n in BASELINES else "#c6c6c6" for n in names]
            ax.barh(y, v, color=colors)
            if np.isfinite(lo).all():
                ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.set_title(metric)
            ax.set_yticks(y, names)
        axes[0].invert_yaxis()  # the axes share y: inverting both would undo it
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path


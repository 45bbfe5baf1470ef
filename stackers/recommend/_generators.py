"""Candidate generators of the recommender: each scores every catalogue item for a user (training items masked).

- one per feature set: cosine between the item's vector and the user's vector (the recency-weighted mean of the
  vectors of the items in the user's history, ``user_vectors``);
- ``pop``: training counts; ``recent``: counts in the ``window_days`` before the user's own last event;
- ``itemknn``: the sum of item-item cosines (binary user-item matrix) to the items of the history;
- ``svd``: a rank-``svd_dim`` truncated SVD of the binary user-item matrix, users folded in (``x_u V V^T``);
- ``seq``: item-to-item transitions (how often item j follows item i within ``seq_window`` events in other users'
  histories, weighted 1/gap) from the user's last ``n_last`` items. Sequence matters when the target is the last
  event: on ML-100k leave-last-out it is the strongest single signal.

Everything is fitted from one history (``fit_generators``), so the ranker's training stages and the final model
compute their generators the same way from different events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featurestore.utils import import_optional
from stackers.recommend._interactions import Interactions, user_vectors

GENERATORS = ("pop", "recent", "itemknn", "svd", "seq")
BASELINES = ("pop", "itemknn", "svd")  # the classic baselines, always evaluated beside the stack
DAY = 86_400.0
BLOCK = 256  # users scored at once: (256 x n_items) float64 per generator


def lightgbm():
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
class Fitted:
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


def fit_generators(history: Interactions, users: np.ndarray, sets: dict[str, np.ndarray], p: dict[str, Any]
                    ) -> Fitted:
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
    fitted = Fitted(history, users, now, pop, mean_rating, knn, vt.T.copy(), trans, sets, keys=keys, span=span,
                     t0=t0)
    fitted.set_users = {name: user_vectors(history, users, vecs, half_life=p["half_life"])
                        for name, vecs in sets.items()}
    return fitted


def _count_before(f: Fitted, items: np.ndarray, t: np.ndarray, days: float | None) -> np.ndarray:
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


def _edge_times(f: Fitted, items: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def history_matrix(f: Fitted, rows: np.ndarray, *, last: int | None = None, half_life: float | None = None):
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


def generator_scores(f: Fitted, rows: np.ndarray, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each generator's (block x items) scores for users ``f.users[rows]`` and the mask of their history items."""
    X, _, _, _ = history_matrix(f, rows)
    seen = X.toarray() > 0
    R, _, _, _ = history_matrix(f, rows, last=p["n_last"], half_life=p["seq_half_life"])
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


def score_ranks(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """1-based rank of every item per row among the unseen ones (ties: lower item index first); seen items get
    n_items + 1."""
    s = np.where(seen, -np.inf, scores)
    order = np.argsort(-s, axis=1, kind="stable")  # stable: equal scores keep item order
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :].repeat(s.shape[0], 0), axis=1)
    return np.where(seen, s.shape[1] + 1, ranks)


def baseline_scores(f: Fitted, rows: np.ndarray, p: dict[str, Any], scores: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Baselines that are not among this model's generators, computed the same way."""
    missing = [b for b in BASELINES if b not in scores]
    if not missing:
        return {}
    X, _, _, _ = history_matrix(f, rows)
    out = {}
    if "pop" in missing:
        out["pop"] = np.broadcast_to(f.pop, (len(rows), len(f.pop))).copy()
    if "itemknn" in missing:
        out["itemknn"] = np.asarray(X @ f.knn)
    if "svd" in missing:
        out["svd"] = (X @ f.svd_v) @ f.svd_v.T
    return out

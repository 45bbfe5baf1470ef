"""What the ranker learns from: per (user, candidate) features, and the LambdaRank booster trained on them.

**Candidates and features.** The union of each generator's top ``candidates_per_set``; for each (user, candidate):
every generator's score and rank, per feature set the similarity to the user's last 1 / mean of last 3 / max of last
5 items, popularity overall and in the last 1 / 7 / 30 days before the user's last event, days since the item's
first and last event, its mean rating, and user statistics (history length, mean rating, mean popularity of the
history, days active). Time-windowed counts are taken as of the user's own last event (``searchsorted`` on
(item, time) keys), so no count includes anything later.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featurestore.errors import ValidationError
from stackers.recommend._generators import (
    DAY,
    Fitted,
    _count_before,
    _edge_times,
    history_matrix,
    lightgbm,
    score_ranks,
)


def ranker_features(f: Fitted, rows: np.ndarray, p: dict[str, Any], scores: dict[str, np.ndarray], seen: np.ndarray,
              gen_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Candidates (block row, item) and their feature matrix. Rows come grouped by user, in block order."""
    ranks = {g: score_ranks(scores[g], seen) for g in gen_names}
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
    _, owner, ev, from_end = history_matrix(f, rows, last=5)
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


def check_groups(groups: np.ndarray, n_rows: int) -> None:
    """LambdaRank's query groups must tile the rows exactly: positive sizes that add up to the row count."""
    if groups.ndim != 1 or (groups <= 0).any() or int(groups.sum()) != n_rows:
        raise ValidationError(f"ranker groups must be positive sizes adding up to {n_rows} rows; got {len(groups)} "
                         f"groups adding up to {int(groups.sum())}.")


def train_ranker(X: np.ndarray, y: np.ndarray, groups: np.ndarray, p: dict[str, Any]) -> str:
    """LambdaRank trees on (rows grouped by user, contiguous) -> the model's text (what is saved and loaded)."""
    lgb = lightgbm()
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
        m = fs.matrix(unit=True)
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

"""RecommenderStack on a sample of MovieLens-100k: ranker groups, no training items, honest evaluation, saving."""

from __future__ import annotations

import numpy as np
import pytest

import featurestore
from stackers import Interactions, InvalidParameterError, RecommenderStack
from stackers.recommend._features import check_groups
from stackers.recommend._features import ranker_features as _features
from stackers.recommend._generators import fit_generators as _fit_generators
from stackers.recommend._generators import generator_scores as _scores

FAST = dict(n_estimators=40, n_stages=2, candidates_per_set=30, svd_dim=16)


@pytest.fixture(scope="module")
def ml_sample():
    from pipelines.sources._datasets import movielens_100k

    ratings, movies, _ = movielens_100k()
    users = np.sort(ratings.user_id.unique())[:150]
    ratings = ratings[ratings.user_id.isin(users)]
    it = Interactions.from_frame(ratings, user="user_id", item="movie_id", time="timestamp", rating="rating",
                                 items=movies.movie_id.to_numpy())
    return it.split()


@pytest.fixture(scope="module")
def fitted(ml_sample, tmp_path_factory):
    train, _ = ml_sample
    store = featurestore.open(tmp_path_factory.mktemp("rec") / "store")
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((train.n_items, 8)).astype(np.float32)
    store.write("genre_vecs", {"item": train.items, "embedding": vecs}, key="item",
                spec={"encoder": "external:random", "metric": "cosine"})
    return RecommenderStack(sets=["genre_vecs"], **FAST).fit(train, store), store


def test_ranker_groups_are_contiguous_and_sized_by_candidates(ml_sample):
    train, _ = ml_sample
    history, targets = train.split()
    p = RecommenderStack(**FAST).get_params()
    f = _fit_generators(history, targets.user[:40], {}, p)
    rows = np.arange(40)
    scores, seen = _scores(f, rows, p)
    r_idx, i_idx, F, names = _features(f, rows, p, scores, seen, ["pop", "seq"])
    assert (np.diff(r_idx) >= 0).all()  # each user's rows in one run
    sizes = np.bincount(r_idx, minlength=40)
    cand = np.zeros(seen.shape, bool)
    for g in ("pop", "seq"):
        order = np.argsort(-np.where(seen, -np.inf, scores[g]), axis=1, kind="stable")[:, :30]
        np.put_along_axis(cand, order, True, axis=1)
    np.testing.assert_array_equal(sizes, (cand & ~seen).sum(axis=1))
    assert F.shape == (sizes.sum(), len(names))
    check_groups(sizes, int(sizes.sum()))
    with pytest.raises(ValueError, match="adding up to"):
        check_groups(sizes[:-1], int(sizes.sum()))


def test_recommendations_never_include_training_items(fitted, ml_sample):
    model, _ = fitted
    train, _ = ml_sample
    users = train.users
    items, _ = model.recommend_many(users, k=100)
    for u, recs in zip(users, items):
        assert not set(recs.tolist()) & set(train.item[train.user == u].tolist())


def test_evaluation_scores_what_recommend_returns(fitted, ml_sample):
    model, _ = fitted
    _, test = ml_sample
    ev = model.evaluate(test, n_boot=50)
    rows = {r["model"]: r for r in ev.rows}
    assert set(rows) >= {"stack", "pop", "itemknn", "svd", "seq", "genre_vecs"}
    assert ev.n_users == len(test.users) and ev.n_events == len(test)
    top, _ = model.recommend_many(test.user, k=10)
    hits = (top == test.item[:, None]).any(axis=1)
    assert rows["stack"]["recall@10"] == pytest.approx(hits.mean())
    assert rows["stack"]["recall@10_low"] <= rows["stack"]["recall@10"] <= rows["stack"]["recall@10_high"]


def test_save_and_load_recommend_the_same_and_a_tampered_ranker_is_refused(fitted, tmp_path):
    model, _ = fitted
    path = model.save(tmp_path / "m")
    loaded = RecommenderStack.load(path)
    users = model.train_.users[:20]
    np.testing.assert_array_equal(model.recommend_many(users, 10)[0], loaded.recommend_many(users, 10)[0])
    text = (path / "ranker.txt").read_text()
    (path / "ranker.txt").write_text(text.replace("objective=lambdarank", "objective=regression"))
    with pytest.raises(ValueError, match="not a LambdaRank model"):
        RecommenderStack.load(path)


def test_collaborative_sets_are_refused_as_fixed_inputs(fitted, ml_sample):
    _, store = fitted
    train, _ = ml_sample
    store.write("cf", {"item": train.items, "embedding": np.ones((train.n_items, 4), np.float32)}, key="item",
                spec={"encoder": "svd:cf", "metric": "cosine"})
    with pytest.raises(ValueError, match="tell the ranker's training stage about its own targets"):
        RecommenderStack(sets=["cf"], **FAST).fit(train, store)


@pytest.mark.parametrize("params, match", [
    ({"candidates_per_set": 0}, "'candidates_per_set' parameter of RecommenderStack must be an int >= 1"),
    ({"generators": ["pop", "magic"]}, "'generators' parameter"),
    ({"sets": "movies"}, "'sets' parameter"),
])
def test_bad_parameters_name_the_parameter(params, match, ml_sample):
    with pytest.raises(InvalidParameterError, match=match):
        RecommenderStack(**params).fit(ml_sample[0])


def test_recommender_stack_is_a_scikit_learn_estimator():
    """get_params / set_params / clone read the constructor, as for every scikit-learn estimator."""
    from sklearn.base import clone

    model = RecommenderStack(sets=["a"], svd_dim=8)
    assert model.get_params()["svd_dim"] == 8 and set(model.get_params()) >= {"sets", "generators", "random_state"}
    assert model.set_params(n_last=3) is model and model.n_last == 3
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        model.set_params(nope=1)


def test_stackers_load_reads_either_model_kind(fitted, ml_sample, tmp_path):
    """One load shape: stackers.load returns the model whatever its kind; the held-out events come back as test_."""
    import stackers

    model, _ = fitted
    _, test = ml_sample
    loaded = stackers.load(model.save(tmp_path / "m", test=test))
    assert isinstance(loaded, RecommenderStack) and len(loaded.test_) == len(test)
    assert stackers.read_manifest(tmp_path / "m")["format"] == "stackers.RecommenderStack"
    assert RecommenderStack.load(model.save(tmp_path / "n")).test_ is None

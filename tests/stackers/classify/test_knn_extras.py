"""kNN votes as an extra base learner, and extras kept only where the inner CV says they help."""

from __future__ import annotations

import json

import numpy as np
import pytest

import stackers
from stackers import StackingClassifier
from stackers.classify._probes import KNeighborsVotes


def _xor_task(n: int = 900, seed: int = 0):
    """Block "xor": two clusters per class on the diagonals (no line separates them; neighbours do); block "weak":
    a faint linear signal; block "noise": nothing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    side = rng.choice([-1.0, 1.0], n)
    xy = np.column_stack([side, side * np.where(y == 1, -1.0, 1.0)]) * 2.0
    xor = np.hstack([xy + rng.normal(0, 0.5, (n, 2)), rng.normal(0, 0.5, (n, 4))])
    weak = y[:, None] * 0.15 + rng.normal(size=(n, 10))
    noise = rng.normal(size=(n, 12))
    return {"xor": xor, "weak": weak, "noise": noise}, y


def test_knn_votes_equal_a_brute_force_count():
    rng = np.random.default_rng(0)
    X, y, Q = rng.normal(size=(300, 8)), rng.integers(0, 3, 300), rng.normal(size=(50, 8))
    votes = KNeighborsVotes(n_neighbors=7).fit(X, y).transform(Q)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(-(unit(Q) @ unit(X).T), axis=1)[:, :7]
    expected = np.stack([np.bincount(y[i], minlength=3) / 7 for i in nearest])
    np.testing.assert_allclose(votes, expected, atol=1e-12)


def test_extras_are_kept_only_where_the_inner_cv_says_they_help():
    blocks, y = _xor_task()
    train, test = np.arange(len(y)) < 600, np.arange(len(y)) >= 600
    model = StackingClassifier(extras=("centroid", "knn"), cv=4).fit({b: X[train] for b, X in blocks.items()},
                                                                       y[train])
    assert "knn" in model.base_estimators_["xor"]  # the one learner that sees the XOR
    assert {"noise:knn", "noise:centroid"} <= set(model.pruned_)
    assert list(model.base_estimators_["noise"]) == ["logistic"]
    kept = [f"{b}:{kind}" for b, ests in model.base_estimators_.items() for kind in ests]
    assert not set(kept) & set(model.pruned_)
    assert all(name.rsplit(":", 1)[0] in kept for name in model.get_feature_names_out())
    plain = StackingClassifier(cv=4).fit({b: X[train] for b, X in blocks.items()}, y[train])
    Xt = {b: X[test] for b, X in blocks.items()}
    assert model.score(Xt, y[test]) > plain.score(Xt, y[test]) + 0.15


def test_kept_knn_saves_and_loads(tmp_path):
    blocks, y = _xor_task(n=500, seed=1)
    model = StackingClassifier(extras=("knn",), cv=3).fit(blocks, y)
    assert "knn" in model.base_estimators_["xor"]
    path = model.save(tmp_path / "m")
    loaded = stackers.load(path)
    assert loaded.pruned_ == model.pruned_
    assert {b: list(e) for b, e in loaded.base_estimators_.items()} == {b: list(e) for b, e in
                                                                        model.base_estimators_.items()}
    np.testing.assert_array_equal(loaded.predict_proba(blocks), model.predict_proba(blocks))
    # A manifest that lists the learners out of order, or lacks the probe, is refused.
    manifest = json.loads((path / "manifest.json").read_text())
    ests = manifest["blocks"][0]["estimators"]
    manifest["blocks"][0]["estimators"] = dict(reversed(list(ests.items())))
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="must hold 'logistic' and some of"):
        stackers.load(path)

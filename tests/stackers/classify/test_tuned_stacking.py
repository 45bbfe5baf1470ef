"""Tuned probes, the meta learner's choices (passthrough, threshold, any estimator) and the transformer contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, log_loss
from sklearn.pipeline import make_pipeline

import stackers
from stackers import LogisticProbe, LogisticProbeCV, StackingClassifier
from stackers.classify._tuning import DEFAULT_GRID, best_threshold, tune_logistic


def _digits_split(digits_blocks, n_train: int = 600):
    blocks, y = digits_blocks
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:n_train], order[n_train:]
    return blocks, y, train, test


# -- tuned probes ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tuned_probe_beats_a_fixed_c_on_real_embeddings():
    # The finding: on MiniLM embeddings of reviews, a standardized probe at C=1 overfits 384 dims and its
    # held-out log loss is near a uniform guess; the tuned probe is calibrated.
    from featurestore.encoders import get_encoder
    from pipelines.sources._datasets import clothing_reviews

    df = clothing_reviews()
    df = df[df["Review Text"].notna() & df["Class Name"].notna()]
    df = df[df["Class Name"].isin(df["Class Name"].value_counts().index[:6])].head(900)
    with get_encoder("sentence-transformers:all-MiniLM-L6-v2") as encoder:
        X = encoder.encode(df["Review Text"].tolist()).astype(np.float64)
    y = df["Class Name"].to_numpy()
    train, test = np.arange(600), np.arange(600, 900)
    fixed = LogisticProbe(C=1.0).fit(X[train], y[train])
    tuned = LogisticProbeCV().fit(X[train], y[train])
    ll_fixed = log_loss(y[test], fixed.predict_proba(X[test]), labels=tuned.classes_)
    ll_tuned = log_loss(y[test], tuned.predict_proba(X[test]), labels=tuned.classes_)
    assert ll_tuned < 0.8 * ll_fixed
    assert ll_tuned < 0.75 * np.log(6)  # well below a uniform guess over 6 classes
    # Both scalings were tried on the first fold; the settings scored on every fold are the chosen scaling's path.
    tried = {(s["standardize"], s["C"]) for s in tuned.cv_results_}
    assert tried <= {(p["standardize"], p["C"]) for p in DEFAULT_GRID}
    assert {std for std, _ in tried} == {tuned.standardize_} and (tuned.standardize_, tuned.C_) in tried


def test_tune_logistic_oof_equals_refits_per_fold(digits_blocks):
    # The warm-started path must give what a cold fit of the chosen setting gives on each fold.
    blocks, y, train, _ = _digits_split(digits_blocks, 400)
    X = blocks["top"][train].astype(np.float64)
    yy = y[train]
    folds = np.arange(len(yy)) % 3
    tuned = tune_logistic(X, yy, folds, n_classes=10)
    cold = np.zeros_like(tuned.oof)
    for f in range(3):
        probe = LogisticProbe(C=tuned.params["C"], standardize=tuned.params["standardize"], max_iter=1000)
        cold[folds == f] = probe.fit(X[folds != f], yy[folds != f]).predict_proba(X[folds == f])
    # Same optimum up to the solver's tolerance: the same loss and (nearly) the same decisions.
    assert log_loss(yy, tuned.oof) == pytest.approx(log_loss(yy, cold), rel=0.02)
    assert np.mean(tuned.oof.argmax(1) == cold.argmax(1)) > 0.98
    chosen = [s for s in tuned.scores if (s["standardize"], s["C"]) == (tuned.params["standardize"], tuned.params["C"])]
    assert chosen[0]["score"] == max(s["score"] for s in tuned.scores) == pytest.approx(-log_loss(yy, tuned.oof))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_first_fold_selection_scouts_fold_0_then_fits_the_choice_on_every_fold(digits_blocks, dtype):
    # What the stacker runs: every setting's path on fold 0 (loose tolerance), then only the chosen setting on every
    # fold, converged: its out-of-fold probabilities are exactly what cold probes of that setting give.
    blocks, y, train, _ = _digits_split(digits_blocks, 600)
    X, yy = np.hstack([blocks["top"], blocks["bottom"]])[train].astype(dtype), y[train]
    folds = np.arange(len(yy)) % 4
    tuned = tune_logistic(X, yy, folds, n_classes=10, select_on="first_fold")
    assert {s["fold"] for s in tuned.scores} == {0}
    assert {s["standardize"] for s in tuned.scores} == {True, False}  # both scalings scouted
    best = max(tuned.scores, key=lambda s: s["score"])
    assert (best["standardize"], best["C"]) == (tuned.params["standardize"], tuned.params["C"])
    # The scouting losses are fold 0's: a cold probe of each scouted setting scores about the same there.
    for s in tuned.scores:
        probe = LogisticProbe(C=s["C"], standardize=s["standardize"]).fit(X[folds != 0], yy[folds != 0])
        loss = log_loss(yy[folds == 0], probe.predict_proba(X[folds == 0]), labels=range(10))
        assert s["log_loss"] == pytest.approx(loss, rel=0.05)
    cold = np.zeros_like(tuned.oof)
    for f in range(4):
        probe = LogisticProbe(C=tuned.params["C"], standardize=tuned.params["standardize"])
        cold[folds == f] = probe.fit(X[folds != f], yy[folds != f]).predict_proba(X[folds == f])
    np.testing.assert_allclose(tuned.oof, cold, atol=1e-6)
    with pytest.raises(ValueError, match="select_on must be 'all_folds' or 'first_fold'. Got 'fold0'"):
        tune_logistic(X, yy, folds, n_classes=10, select_on="fold0")


def test_probe_cv_class_weight_and_threshold_on_imbalanced_labels(digits_blocks):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    X = blocks["bottom"].astype(np.float64)
    yb = (y == 8).astype(int)  # about 10% positives, and 8 is hard to tell from 3, 5 and 9
    plain = LogisticProbeCV(scoring="macro_f1").fit(X[train], yb[train])
    tuned = LogisticProbeCV(scoring="macro_f1", class_weight="auto", threshold="auto").fit(X[train], yb[train])
    assert plain.threshold_ is None and 0.0 < tuned.threshold_ < 1.0
    f1_plain = f1_score(yb[test], plain.predict(X[test]), average="macro")
    f1_tuned = f1_score(yb[test], tuned.predict(X[test]), average="macro")
    assert f1_tuned >= f1_plain - 0.01
    # predict applies the cut, strictly above it
    p = tuned.predict_proba(X[test])[:, 1]
    np.testing.assert_array_equal(tuned.predict(X[test]), (p > tuned.threshold_).astype(int))


def test_best_threshold_maximises_macro_f1():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.15
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.12, 400), 0, 1)
    cut, best = best_threshold(p, y)
    brute = max(f1_score(y, p > c, average="macro") for c in np.unique(np.r_[0.5, np.percentile(p, range(1, 100))]))
    assert best == pytest.approx(brute)
    assert f1_score(y, p > cut, average="macro") == pytest.approx(best)
    assert best > f1_score(y, p > 0.5, average="macro")


# -- the meta learner ------------------------------------------------------------------------------------------
def test_passthrough_is_chosen_when_the_other_blocks_are_noise(digits_blocks):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    rng = np.random.default_rng(0)
    data = {"digits": np.hstack([blocks["top"], blocks["bottom"]])}
    data.update({f"noise{i}": rng.standard_normal((len(y), 40)).astype(np.float32) for i in range(3)})
    model = StackingClassifier(cv=4).fit({b: X[train] for b, X in data.items()}, y[train])
    assert model.meta_name_ == "best" and model.meta_estimator_.block == "digits"
    alone = LogisticProbeCV(cv=4).fit(data["digits"][train], y[train])  # the same folds, so the same tuned probe
    proba = model.predict_proba({b: X[test] for b, X in data.items()})
    np.testing.assert_allclose(proba, alone.predict_proba(data["digits"][test]), atol=1e-12)
    weights = 1.0 if model.class_weights_ is None else model.class_weights_  # its tuned decision rule
    np.testing.assert_array_equal(model.predict({b: X[test] for b, X in data.items()}),
                                  model.classes_[np.argmax(proba * weights, axis=1)])


def test_passthrough_loses_when_blocks_complement_each_other(synthetic):
    blocks, y = synthetic(n=900, k=4, dims=(12, 20, 16))
    model = StackingClassifier(cv=4).fit(blocks, y)
    assert model.meta_name_ != "best"
    assert max(model.meta_scores_.values()) > model.meta_scores_["best"] + 0.02


def test_threshold_is_tuned_for_binary_and_decision_function_agrees(digits_blocks):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    yb = np.where(y == 8, "eight", "other")
    model = StackingClassifier(cv=4).fit({b: X[train] for b, X in blocks.items()}, yb[train])
    assert model.threshold_ is not None and 0.0 < model.threshold_ < 1.0
    Xt = {b: X[test] for b, X in blocks.items()}
    decision = model.decision_function(Xt)
    np.testing.assert_array_equal(model.predict(Xt), model.classes_[(decision > 0).astype(int)])
    none = StackingClassifier(cv=4, threshold=None).fit({b: X[train] for b, X in blocks.items()}, yb[train])
    assert none.threshold_ is None
    np.testing.assert_array_equal(none.predict(Xt), none.classes_[np.argmax(none.predict_proba(Xt), axis=1)])


def test_multiclass_decision_rule_is_a_tuned_class_prior_correction(synthetic, tmp_path):
    # Imbalanced classes: macro-F1 weighs the rare ones like the common ones, argmax of calibrated probabilities
    # does not; the stack tunes p * prior**-a on its inner out-of-fold predictions.
    blocks, y = synthetic(n=2000, k=4, dims=(12, 20), strength=0.3, seed=3)
    keep = (y < 2) | (np.arange(len(y)) % 10 == 0)  # classes 2 and 3 become rare (about 5% and 3%)
    blocks, y = {b: X[keep] for b, X in blocks.items()}, y[keep]
    train, test = np.arange(len(y)) < 670, np.arange(len(y)) >= 670
    model = StackingClassifier(cv=4).fit({b: X[train] for b, X in blocks.items()}, y[train])
    assert model.threshold_ is None and model.class_weights_ is not None
    prior = np.bincount(y[train]) / train.sum()
    powers = [np.log(w) / -np.log(p) for w, p in zip(model.class_weights_, prior)]
    assert np.allclose(powers, powers[0]) and powers[0] in (0.5, 1.0)
    Xt = {b: X[test] for b, X in blocks.items()}
    np.testing.assert_array_equal(model.predict(Xt), np.argmax(model.predict_proba(Xt) * model.class_weights_, 1))
    np.testing.assert_array_equal(model.predict(Xt), model.classes_[np.argmax(model.decision_function(Xt), 1)])
    loaded = stackers.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.class_weights_, model.class_weights_)
    np.testing.assert_array_equal(loaded.predict(Xt), model.predict(Xt))
    argmax = StackingClassifier(cv=4, threshold=None).fit({b: X[train] for b, X in blocks.items()}, y[train])
    assert argmax.class_weights_ is None
    f1_tuned = f1_score(y[test], model.predict(Xt), average="macro")
    f1_argmax = f1_score(y[test], argmax.predict(Xt), average="macro")
    assert f1_tuned >= f1_argmax - 0.01


def test_any_sklearn_classifier_as_meta(digits_blocks, tmp_path):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    forest = RandomForestClassifier(n_estimators=30, random_state=0)
    model = StackingClassifier(cv=3, meta=forest).fit({b: X[train] for b, X in blocks.items()}, y[train])
    assert model.meta_name_ == "estimator" and model.meta_scores_ == {}
    assert model.meta_estimator_.estimator_ is not forest  # cloned, the given one left unfitted
    acc = model.score({b: X[test] for b, X in blocks.items()}, y[test])
    assert acc > 0.85
    with pytest.raises(ValueError, match="custom estimator .* cannot be saved without pickle"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# -- transformer contract --------------------------------------------------------------------------------------
def test_transform_and_feature_names(digits_blocks):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    model = StackingClassifier(cv=3, extras=("centroid",))
    oof = model.fit_transform({b: X[train] for b, X in blocks.items()}, y[train])
    np.testing.assert_array_equal(oof, model.oof_predictions_)
    names = model.get_feature_names_out()
    assert list(names) == [f"{b}:{kind}:{c}" for b in ("top", "bottom") for kind in ("logistic", "centroid")
                           for c in range(10)]
    Xt = model.transform({b: X[test] for b, X in blocks.items()})
    assert Xt.shape == (len(test), len(names))
    # The logistic scores are each probe's class probabilities.
    np.testing.assert_allclose(Xt[:, :10].sum(axis=1), 1.0)


def test_stacker_composes_in_a_pipeline(digits_blocks):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    X = np.hstack([blocks["top"], blocks["bottom"]])
    pipe = make_pipeline(StackingClassifier(cv=3, meta="logistic"), LogisticRegression(max_iter=2000))
    pipe.fit(X[train], y[train])
    assert pipe.score(X[test], y[test]) > 0.85


# -- persistence -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("meta", ["best", "logistic"])
def test_save_load_keeps_tuning_threshold_and_passthrough(digits_blocks, tmp_path, meta):
    blocks, y, train, test = _digits_split(digits_blocks, 900)
    yb = np.where(y == 8, "eight", "other")
    model = StackingClassifier(cv=3, meta=meta).fit({b: X[train] for b, X in blocks.items()}, yb[train])
    loaded = stackers.load(model.save(tmp_path / "m"))
    assert loaded.threshold_ == model.threshold_ is not None
    assert loaded.probe_params_ == model.probe_params_
    assert loaded.meta_name_ == meta == loaded.meta_estimator_.kind
    for b in blocks:
        probe, again = model.base_estimators_[b]["logistic"], loaded.base_estimators_[b]["logistic"]
        assert (again.C, again.standardize) == (probe.C, probe.standardize)
    Xt = {b: X[test] for b, X in blocks.items()}
    np.testing.assert_array_equal(loaded.predict_proba(Xt), model.predict_proba(Xt))
    np.testing.assert_array_equal(loaded.predict(Xt), model.predict(Xt))


def test_log_loss_tuning_picks_the_scaling_on_the_first_fold_and_c_on_all(digits_blocks):
    blocks, y, train, _ = _digits_split(digits_blocks, 600)
    X, yy = np.hstack([blocks["top"], blocks["bottom"]])[train].astype(np.float64), y[train]
    folds = np.arange(len(yy)) % 4
    quick = tune_logistic(X, yy, folds, n_classes=10)
    full = tune_logistic(X, yy, folds, n_classes=10, scoring="macro_f1")  # macro-F1: every setting on every fold
    assert {s["standardize"] for s in quick.scores} == {quick.params["standardize"]}
    assert {s["standardize"] for s in full.scores} == {True, False}
    # The scaling kept is the one whose path reached the lower loss on fold 0 alone.
    best0 = {}
    for std in (True, False):
        cs = [p["C"] for p in DEFAULT_GRID if p["standardize"] is std]
        losses = []
        for c in cs:
            probe = LogisticProbe(C=c, standardize=std).fit(X[folds != 0], yy[folds != 0])
            losses.append(log_loss(yy[folds == 0], probe.predict_proba(X[folds == 0]), labels=range(10)))
        best0[std] = min(losses)
    assert quick.params["standardize"] == min(best0, key=best0.get)
    # C is chosen on the out-of-fold loss of every fold.
    chosen = max(quick.scores, key=lambda s: s["score"])
    assert chosen["C"] == quick.params["C"] and quick.oof.shape == (len(yy), 10) and (quick.oof.sum(1) > 0.99).all()

"""StackingClassifier: the estimator contract, leak-freedom, grouped folds, meta selection, table columns."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    PredefinedSplit,
    TimeSeriesSplit,
    cross_val_predict,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import featurestore.errors
import stackers
from stackers import StackingClassifier, TrainingSet
from stackers.classify._meta import LogisticMeta

# -- the estimator contract -----------------------------------------------------------------------------------
# Two documented departures, both deliberate (and both named by scikit-learn for its own estimators):
# - a tuned decision threshold means predict is not argmax(predict_proba) on a binary problem (scikit-learn's
#   FixedThresholdClassifier fails check_classifiers_train for the same reason); with threshold=None it holds.
# - fit_transform returns the out-of-fold scores, not transform of the training rows (those come from probes that
#   saw the labels), as scikit-learn's TargetEncoder cross-fits in fit_transform.
_THRESHOLD = "predict uses the tuned threshold_, not argmax(predict_proba), on binary problems"
_OOF = "fit_transform returns out-of-fold scores, which differ from transform of the training rows by design"


def _expected_failures(estimator):
    failures = {"check_transformer_general": _OOF, "check_transformer_data_not_an_array": _OOF}
    if estimator.threshold is not None:
        failures["check_classifiers_train"] = _THRESHOLD
    return failures


@parametrize_with_checks([
    StackingClassifier(),
    StackingClassifier(threshold=None),
    StackingClassifier(meta="lightgbm", extras=("centroid",), cv=3),
], expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_init_stores_params_verbatim():
    cv = KFold(3)
    model = StackingClassifier(cv=cv, extras=["centroid"], C=0.5)
    assert model.cv is cv and model.extras == ["centroid"] and model.C == 0.5
    assert model.get_params()["meta"] == "auto"


@pytest.mark.parametrize("params, match", [
    ({"cv": 1}, "The 'cv' parameter of StackingClassifier must be an int >= 2 or a CV splitter. Got 1 instead."),
    ({"cv": "5"}, "The 'cv' parameter of StackingClassifier must be an int >= 2 or a CV splitter. Got '5' instead."),
    ({"cv": True}, "Got True instead."),
    ({"meta": "xgboost"}, "The 'meta' parameter of StackingClassifier must be one of "
                          "{'auto', 'best', 'lightgbm', 'logistic'} or an object implementing 'fit' and "
                          "'predict_proba'. Got 'xgboost' instead."),
    ({"base": "svm"}, "The 'base' parameter of StackingClassifier must be one of {'logistic'} or an object "
                      "implementing 'fit' and 'predict_proba'. Got 'svm' instead."),
    ({"extras": ("svm",)}, "The 'extras' parameter of StackingClassifier must be a list or tuple of distinct names "
                           "from {'centroid', 'knn'}. Got ('svm',) instead."),
    ({"extras": "centroid"}, "Got 'centroid' instead."),
    ({"C": 0}, "The 'C' parameter of StackingClassifier must be one of {'auto'} or a float > 0. Got 0 instead."),
    ({"C": -1.0}, "Got -1.0 instead."),
    ({"random_state": "seed"}, "The 'random_state' parameter of StackingClassifier must be an int in [0, 2**32), "
                               "a numpy RandomState or None. Got 'seed' instead."),
    ({"n_jobs": 1.5}, "The 'n_jobs' parameter of StackingClassifier must be an int or None. Got 1.5 instead."),
])
def test_rejects_bad_params(params, match, digits_blocks):
    blocks, y = digits_blocks
    with pytest.raises(stackers.InvalidParameterError, match=re.escape(match)):
        StackingClassifier(**params).fit(blocks, y)
    with pytest.raises(ValueError, match=re.escape(match)):  # also a ValueError, as in scikit-learn
        StackingClassifier(**params).fit(blocks, y)


@pytest.mark.parametrize("make_input, err, match", [
    (lambda b, y: (TrainingSet(blocks=b), None), ValueError, "requires y to be passed"),
    (lambda b, y: ({"top": b["top"], "bottom": b["bottom"][:-1]}, y), ValueError, "inconsistent numbers of samples"),
    (lambda b, y: ({}, y), ValueError, "at least one block"),
    (lambda b, y: (b, np.zeros(len(y))), ValueError, "needs at least 2 classes in y; got 1 class"),
    (lambda b, y: (b, y + 0.5), ValueError, "Unknown label type"),
])
def test_rejects_bad_inputs(make_input, err, match, digits_blocks):
    X, y = make_input(*digits_blocks)
    with pytest.raises(err, match=match):
        StackingClassifier(meta="logistic", cv=2).fit(X, y)


def test_predict_checks_blocks(digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(meta="logistic", cv=2).fit(blocks, y)
    with pytest.raises(ValueError, match=r"Missing block\(s\) \['bottom'\]"):
        model.predict({"top": blocks["top"]})
    with pytest.raises(ValueError, match="Block 'bottom' has 31 features, but StackingClassifier is expecting 32"):
        model.predict({"top": blocks["top"], "bottom": blocks["bottom"][:, :31]})
    with pytest.raises(ValueError, match="X has 63 features, but StackingClassifier is expecting 64 features"):
        model.predict(np.hstack([blocks["top"], blocks["bottom"]])[:, :63])


@pytest.fixture(scope="module")
def two_block_and_one_block_models(digits_blocks):
    blocks, y = digits_blocks
    both = np.hstack([blocks["top"], blocks["bottom"]])
    return (StackingClassifier(meta="logistic", cv=2).fit(blocks, y),
            StackingClassifier(meta="logistic", cv=2).fit({"all": both}, y))


@pytest.mark.parametrize("width, head", [
    (64, "A plain array of shape (50, 64) cannot be split safely"),  # the right width: still ambiguous
    (63, "X has 63 features, but StackingClassifier is expecting 64 features as input"),
    (96, "X has 96 features, but StackingClassifier is expecting 64 features as input"),
])
def test_a_plain_array_is_refused_by_a_model_fitted_on_named_blocks(digits_blocks, two_block_and_one_block_models,
                                                                     width, head):
    blocks, _ = digits_blocks
    model, single = two_block_and_one_block_models
    X = np.hstack([blocks["bottom"], blocks["top"], blocks["top"]])[:50, :width]  # e.g. the blocks in another order
    message = (f"{head}: this StackingClassifier was fitted on 2 named blocks {{'top': 32, 'bottom': 32}}, and one "
               "array would be cut into them by column position alone. Pass the blocks by name: a dict "
               "{'top': X_0, 'bottom': X_1} or a TrainingSet (from stackers.join).")
    both = np.hstack([blocks["top"], blocks["bottom"]])[:50]
    for method in ("predict", "predict_proba", "decision_function"):
        with pytest.raises(ValueError, match=re.escape(message)):
            getattr(model, method)(X)
        # Named blocks, and one array for a model fitted on one block (nothing to split), predict as before.
        np.testing.assert_array_equal(getattr(model, method)({"top": both[:, :32], "bottom": both[:, 32:]}),
                                      getattr(model, method)(TrainingSet(blocks={"bottom": both[:, 32:],
                                                                                 "top": both[:, :32]})))
        np.testing.assert_array_equal(getattr(single, method)(both), getattr(single, method)({"all": both}))


def test_a_lightgbm_meta_learner_without_lightgbm_says_which_extra(digits_blocks, monkeypatch):
    blocks, y = digits_blocks
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if LightGBM were not installed
    message = "The LightGBM meta learner needs lightgbm: pip install 'featurestore[stack]'."
    with pytest.raises(featurestore.errors.MissingDependencyError, match=re.escape(message)):
        StackingClassifier(meta="lightgbm", cv=2).fit(blocks, y)


def test_splitter_must_partition_rows(digits_blocks):
    blocks, y = digits_blocks
    with pytest.raises(ValueError, match="never validates .* rows"):
        StackingClassifier(cv=TimeSeriesSplit(3), meta="logistic").fit(blocks, y)


def test_array_dict_and_training_set_inputs_agree(digits_blocks):
    blocks, y = digits_blocks
    X = np.hstack([blocks["top"], blocks["bottom"]])
    by_dict = StackingClassifier(meta="logistic").fit(blocks, y)
    by_ts = StackingClassifier(meta="logistic").fit(TrainingSet(blocks=blocks, y=y))
    np.testing.assert_array_equal(by_dict.predict_proba(blocks), by_ts.predict_proba(TrainingSet(blocks=blocks)))
    # One plain array is not split among named blocks by position: that would go wrong silently (see below).
    with pytest.raises(ValueError, match="fitted on 2 named blocks"):
        by_dict.predict_proba(X)
    assert by_dict.blocks_ == {"top": 32, "bottom": 32} and by_dict.n_features_in_ == 64
    one_block = StackingClassifier(meta="logistic").fit(X, y)
    assert one_block.blocks_ == {"x": 64}
    assert set(by_dict.base_estimators_) == {"top", "bottom"}
    assert by_dict.oof_predictions_.shape == (len(y), 20) and len(by_dict.oof_feature_names_) == 20
    assert by_dict.oof_feature_names_[0] == "top:logistic:0"


def test_binary_drops_the_redundant_probability_column(digits_blocks):
    blocks, y = digits_blocks
    yb = (y >= 5).astype(int)
    model = StackingClassifier(meta="logistic", extras=("centroid",)).fit(blocks, yb)
    # per block: 1 probability column (P(class 1)) + 2 centroid similarities where the inner CV kept them
    expected = [name for b in ("top", "bottom") for kind in model.base_estimators_[b]
                for name in ([f"{b}:logistic:1"] if kind == "logistic" else [f"{b}:centroid:0", f"{b}:centroid:1"])]
    assert model.oof_feature_names_ == expected and model.oof_predictions_.shape == (len(y), len(expected))
    assert model.decision_function(blocks).shape == (len(y),)


# -- leak-freedom -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol", [
    (np.float64, 1e-5),
    # float32 blocks (as stored) are solved in float32, as scikit-learn's lbfgs does: both stop within the solver's
    # tolerance (1e-4) of the optimum, at points up to ~1e-3 apart in probability; wrong folds differ by > 0.1.
    (np.float32, 2e-3),
])
def test_oof_predictions_equal_cross_val_predict_with_the_same_folds(digits_blocks, dtype, atol):
    blocks, y = digits_blocks
    blocks = {name: X.astype(dtype) for name, X in blocks.items()}
    model = StackingClassifier(meta="logistic", cv=4, C=0.3).fit(blocks, y)
    folds = PredefinedSplit(model.fold_ids_)
    k = len(model.classes_)
    for j, name in enumerate(["top", "bottom"]):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000))
        expected = cross_val_predict(pipe, blocks[name], y, cv=folds, method="predict_proba")
        np.testing.assert_allclose(model.oof_predictions_[:, j * k:(j + 1) * k], expected, atol=atol)
    # ... and the meta learner is exactly the one trained on those OOF scores.
    all_probabilities = tuple(range(model.oof_predictions_.shape[1]))
    refit = LogisticMeta(proba_columns=all_probabilities).fit(
        model.oof_predictions_, None, np.searchsorted(model.classes_, y), k
    )
    np.testing.assert_array_equal(refit.predict_proba(model.oof_predictions_, None),
                                  model.meta_estimator_.predict_proba(model.oof_predictions_, None))
    # Base learners for inference are refit on all rows, not any fold's.
    top = blocks["top"]
    full = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(top, y)
    np.testing.assert_allclose(model.base_estimators_["top"]["logistic"].predict_proba(top),
                               full.predict_proba(top), atol=atol)


def test_shuffled_labels_score_at_chance(synthetic):
    # Pure noise blocks with many dims: in-sample probes fit the labels well, out-of-fold ones cannot.
    rng = np.random.default_rng(0)
    n, k = 600, 4
    blocks = {"a": rng.standard_normal((n, 60)), "b": rng.standard_normal((n, 80))}
    y = rng.permutation(np.arange(n) % k)
    train, test = np.arange(400), np.arange(400, n)
    model = StackingClassifier(extras=("centroid",), C=1.0).fit({b: X[train] for b, X in blocks.items()}, y[train])
    in_sample = model.base_estimators_["a"]["logistic"].score(blocks["a"][train], y[train])
    assert in_sample > 0.5  # a probe with a fixed, weak regularisation memorises noise...
    # ...but the meta learner's inner CV, on OOF scores, sees chance, and so does held-out data.
    assert max(model.meta_scores_.values()) < 0.36
    held_out = model.score({b: X[test] for b, X in blocks.items()}, y[test])
    assert abs(held_out - 1 / k) < 0.1
    # A tuned probe sees there is nothing to learn: the strongest regularisation on the grid wins.
    tuned = StackingClassifier(meta="best").fit({b: X[train] for b, X in blocks.items()}, y[train])
    assert all(p["C"] == 1e-3 and p["standardize"] for p in tuned.probe_params_.values())


def test_group_aware_folds_keep_each_group_on_one_side(synthetic):
    blocks, y = synthetic(n=500, k=3)
    groups = np.random.default_rng(3).integers(0, 60, size=len(y))
    model = StackingClassifier(meta="logistic", cv=4).fit(blocks, y, groups=groups)
    assert model.n_splits_ == 4
    for f in range(model.n_splits_):
        val = model.fold_ids_ == f
        assert val.any()
        assert not set(groups[val]) & set(groups[~val])
    # The same through a TrainingSet's groups.
    ts = TrainingSet(blocks=blocks, y=y, groups=groups)
    via_ts = StackingClassifier(meta="logistic", cv=4).fit(ts)
    np.testing.assert_array_equal(via_ts.fold_ids_, model.fold_ids_)


def test_custom_splitter_gets_the_groups(synthetic):
    blocks, y = synthetic(n=300, k=3)
    groups = np.arange(len(y)) // 10
    model = StackingClassifier(meta="logistic", cv=GroupKFold(3)).fit(blocks, y, groups=groups)
    for f in range(3):
        val = model.fold_ids_ == f
        assert not set(groups[val]) & set(groups[~val])


def test_too_few_rows_per_class_reduces_folds_with_a_warning():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 3))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    with pytest.warns(UserWarning, match="cv=5 but only 3 rows in the largest class; using 3 folds"):
        model = StackingClassifier(meta="logistic").fit(X, y)
    assert model.n_splits_ == 3 and model.cv == 5


# -- meta learners ---------------------------------------------------------------------------------------------
def test_meta_auto_picks_by_inner_cv_and_records_scores(digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(meta="auto", cv=3).fit(blocks, y)
    # No table columns: LightGBM is not a candidate (on probe scores alone it only costs time; with columns it is,
    # see test_table_columns_feed_the_meta_learner).
    assert set(model.meta_scores_) == {"logistic", "logistic (balanced)", "best"}
    assert all(0.5 < s <= 1.0 for s in model.meta_scores_.values())
    best = max(model.meta_scores_, key=model.meta_scores_.get)
    assert model.meta_name_ == best.split(" ")[0] and model.meta_estimator_.kind == model.meta_name_
    fixed = StackingClassifier(meta="lightgbm", cv=3).fit(blocks, y)
    assert fixed.meta_scores_ == {} and fixed.meta_name_ == "lightgbm"  # one candidate: no inner CV to run
    # Same folds, same OOF scores whatever the meta learner.
    np.testing.assert_array_equal(fixed.oof_predictions_, model.oof_predictions_)


def _department_task(n: int = 900, seed: int = 0):
    """The label is the block's latent class in some departments and the next class in others: only a meta
    learner that can combine the department with the scores (trees, not an additive logit) can sort it out."""
    rng = np.random.default_rng(seed)
    k = 3
    z = rng.integers(0, k, size=n)
    dept = rng.integers(0, 8, size=n)
    y = np.where(dept < 4, z, (z + 1) % k)
    means = rng.standard_normal((k, 16)) * 2.0
    blocks = {"emb": (means[z] + rng.standard_normal((n, 16))).astype(np.float32)}
    columns = pd.DataFrame({"department": [f"dept{d}" for d in dept], "price": rng.random(n)})
    return TrainingSet(blocks=blocks, y=y, columns=columns)


def test_table_columns_feed_the_meta_learner():
    data = _department_task()
    train, test = data.split(0.3, random_state=0)
    with_cols = StackingClassifier(meta="lightgbm", cv=4).fit(train)
    without = StackingClassifier(meta="lightgbm", cv=4).fit(TrainingSet(blocks=train.blocks, y=train.y))
    f1_with = f1_score(test.y, with_cols.predict(test), average="macro")
    f1_without = f1_score(test.y, without.predict(TrainingSet(blocks=test.blocks)), average="macro")
    assert f1_with > 0.85 and f1_with > f1_without + 0.25
    assert with_cols.columns_ == ["department", "price"]
    # "auto" sees the same in its inner CV and picks LightGBM.
    auto = StackingClassifier(meta="auto", cv=4).fit(train)
    assert set(auto.meta_scores_) == {"logistic", "logistic (balanced)", "lightgbm", "best"}
    assert auto.meta_name_ == "lightgbm" and auto.meta_scores_["lightgbm"] > auto.meta_scores_["logistic"] + 0.1
    # Predicting without the columns the model was trained with is an error, not a silent guess.
    with pytest.raises(ValueError, match=r"trained with table columns \['department', 'price'\]"):
        with_cols.predict(TrainingSet(blocks=test.blocks))


def test_logistic_meta_one_hot_encodes_categoricals():
    data = _department_task(n=400)
    model = StackingClassifier(meta="logistic", cv=3).fit(data)
    probe = model.meta_estimator_.probe_
    # 3 OOF class probabilities + price + 8 one-hot departments
    assert probe.coef_.shape == (3, 3 + 1 + 8)
    # Unseen categories and missing values still predict (encoded as no department / the training mean).
    cols = data.columns.iloc[:5].copy()
    cols.loc[0, "department"] = "dept_new"
    cols.loc[1, "price"] = np.nan
    proba = model.predict_proba(TrainingSet(blocks={b: X[:5] for b, X in data.blocks.items()}, columns=cols))
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1)


# -- model selection utilities -----------------------------------------------------------------------------------
def test_clone_and_cross_val_score(digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(meta="logistic", cv=3, extras=("centroid",))
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "classes_")
    X = np.hstack([blocks["top"], blocks["bottom"]])
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    # A TrainingSet indexes like an array, so model selection works on several blocks too.
    ts = TrainingSet(blocks=blocks, y=y)
    ts_scores = cross_val_score(model, ts, y, cv=3, scoring="f1_macro")
    assert ts_scores.mean() > 0.85


def test_n_jobs_gives_the_same_model(digits_blocks):
    blocks, y = digits_blocks
    serial = StackingClassifier(meta="logistic", cv=3).fit(blocks, y)
    parallel = StackingClassifier(meta="logistic", cv=3, n_jobs=2).fit(blocks, y)
    np.testing.assert_allclose(serial.predict_proba(blocks), parallel.predict_proba(blocks), atol=1e-12)


def test_stack_beats_single_probes_on_complementary_blocks(synthetic):
    blocks, y = synthetic(n=900, k=5, dims=(10, 10, 10), strength=0.8, seed=4)
    idx = np.arange(len(y))
    train, test = idx[:600], idx[600:]
    model = StackingClassifier(meta="logistic").fit({b: X[train] for b, X in blocks.items()}, y[train])
    stack = f1_score(y[test], model.predict({b: X[test] for b, X in blocks.items()}), average="macro")
    singles = [f1_score(y[test], model.base_estimators_[b]["logistic"].predict(X[test]), average="macro")
               for b, X in blocks.items()]
    assert stack > max(singles) + 0.03

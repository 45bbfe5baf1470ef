"""compare: single probes, concatenation and the stack side by side on held-out rows, with intervals."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

import stackers
from stackers import StackingClassifier, TrainingSet
from stackers.evaluate._metrics import METRICS


@pytest.fixture(scope="module")
def comparison():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    data = TrainingSet(blocks={"top": X[:, :32], "bottom": X[:, 32:]}, y=y)
    train, test = data.split(0.3, random_state=0)
    return stackers.compare(train, test, StackingClassifier(meta="logistic"), n_boot=300), train, test


def test_compare_scores_every_model_on_the_same_rows(comparison):
    comp, train, test = comparison
    assert list(comp.results) == ["probe:top", "probe:bottom", "concat", "stack"]
    assert comp.kinds == {"probe:top": "probe", "probe:bottom": "probe", "concat": "concat", "stack": "stack"}
    stack_pred = comp.model.predict(test)
    assert comp.results["stack"]["accuracy"]["value"] == pytest.approx(accuracy_score(test.y, stack_pred))
    assert comp.results["stack"]["macro_f1"]["value"] == pytest.approx(f1_score(test.y, stack_pred, average="macro"))
    for name, metrics in comp.results.items():
        for m in METRICS:
            v = metrics[m]
            assert v["low"] <= v["value"] <= v["high"], (name, m, v)
    # Stacking two half-images beats either half alone.
    assert comp.results["stack"]["macro_f1"]["low"] > comp.results["probe:top"]["macro_f1"]["high"]
    assert comp.best in ("stack", "concat")


def test_comparison_views(comparison):
    comp, _, test = comparison
    table = comp.table()
    assert list(table.index) == list(comp.results)
    assert {"accuracy", "accuracy_low", "accuracy_high", "roc_auc", "log_loss_high"} <= set(table.columns)
    d = comp.to_dict()
    assert d["n_test"] == len(test) and d["best"] == comp.best and d["n_boot"] == 300
    assert d["models"]["stack"]["metrics"]["macro_f1"] == comp.results["stack"]["macro_f1"]
    assert d["stack"]["meta"] == "logistic"
    text = comp.to_text()
    assert text.splitlines()[0].split() == ["model", *METRICS] and f"{comp.best} *" in text


def test_compare_fits_an_unfitted_model_on_train_only(digits_blocks):
    blocks, y = digits_blocks
    data = TrainingSet(blocks=blocks, y=y)
    train, test = data.split(0.5, random_state=2)
    template = StackingClassifier(meta="logistic", cv=3)
    comp = stackers.compare(train, test, template, n_boot=50)
    assert not hasattr(template, "classes_")  # cloned, not fitted in place
    assert comp.model.oof_predictions_.shape[0] == len(train)


def test_compare_rejects_unlabelled_or_mismatched_sets(digits_blocks):
    blocks, y = digits_blocks
    labelled = TrainingSet(blocks=blocks, y=y)
    with pytest.raises(ValueError, match="The test TrainingSet has no labels"):
        stackers.compare(labelled, TrainingSet(blocks=blocks))
    with pytest.raises(ValueError, match="train has blocks"):
        stackers.compare(labelled, TrainingSet(blocks={"top": blocks["top"]}, y=y))


@pytest.mark.parametrize("args, kwargs, match", [
    (lambda ts: (ts.blocks, ts), {}, "The 'train' parameter of compare must be a TrainingSet (from stackers.join). "
                                     "Got {'top': array("),
    (lambda ts: (ts, None), {}, "The 'test' parameter of compare must be a TrainingSet (from stackers.join). "
                                "Got None instead."),
    (lambda ts: (ts, ts, "lightgbm"), {}, "The 'model' parameter of compare must be a StackingClassifier or None. "
                                          "Got 'lightgbm' instead."),
    (lambda ts: (ts, ts), {"n_boot": -1}, "The 'n_boot' parameter of compare must be an int >= 0. Got -1 instead."),
    (lambda ts: (ts, ts), {"random_state": 0.5}, "The 'random_state' parameter of compare must be an int >= 0 or "
                                                 "None. Got 0.5 instead."),
])
def test_compare_rejects_bad_params(digits_ts, args, kwargs, match):
    with pytest.raises(stackers.InvalidParameterError, match=re.escape(match)):
        stackers.compare(*args(digits_ts), **kwargs)


def test_binary_comparison_has_auc_of_the_positive_class(digits_blocks):
    blocks, y = digits_blocks
    data = TrainingSet(blocks=blocks, y=np.where(y == 3, "three", "other"))
    train, test = data.split(0.3, random_state=0)
    comp = stackers.compare(train, test, StackingClassifier(meta="logistic", cv=3), n_boot=100)
    assert 0.9 < comp.results["stack"]["roc_auc"]["value"] <= 1.0


# -- honest baselines, predicted labels, the paired headline ---------------------------------------------------------
@pytest.fixture(scope="module")
def binary_comparison():
    """An imbalanced binary task (digit 3 against the rest) where tuned thresholds move predictions off argmax."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    groups = np.arange(len(y)) // 9
    data = TrainingSet(blocks={"top": X[:, :32], "bottom": X[:, 32:]}, y=np.where(y == 3, "three", "other"),
                       groups=groups)
    train, test = data.split(0.3, random_state=0)
    return stackers.compare(train, test, StackingClassifier(meta="logistic", cv=3), n_boot=200), train, test


def test_baselines_are_tuned_probes_fitted_with_the_training_groups(binary_comparison):
    comp, train, test = binary_comparison
    classes = comp.classes
    y_enc = np.searchsorted(classes, train.y)
    for name in ("probe:top", "concat"):
        X, Xt = ((train.blocks["top"], test.blocks["top"]) if name == "probe:top"
                 else (train.to_numpy(), test.to_numpy()))
        by_hand = stackers.LogisticProbeCV(class_weight="auto", scoring="macro_f1", threshold="auto", cv=3,
                                           random_state=0).fit(X, y_enc, groups=train.groups)
        np.testing.assert_allclose(comp.probas[name], by_hand.predict_proba(Xt), atol=1e-12)
        assert comp.thresholds[name] == by_hand.threshold_
        np.testing.assert_array_equal(comp.preds[name], classes[by_hand.predict(Xt)])
    assert comp.kinds == {"probe:top": "probe", "probe:bottom": "probe", "concat": "concat", "stack": "stack"}


def test_accuracy_and_macro_f1_score_the_predicted_labels_not_the_argmax(binary_comparison):
    comp, _, test = binary_comparison
    moved = [n for n in comp.results if np.any(comp.preds[n] != comp.classes[np.argmax(comp.probas[n], axis=1)])]
    assert moved, "the case must have a model whose threshold moves some predictions off the argmax"
    for name in comp.results:
        pred = comp.preds[name]
        assert comp.results[name]["macro_f1"]["value"] == pytest.approx(f1_score(test.y, pred, average="macro"))
        assert comp.results[name]["accuracy"]["value"] == pytest.approx(accuracy_score(test.y, pred))
    np.testing.assert_array_equal(comp.preds["stack"], comp.model.predict(test))
    for name in moved:
        argmax = comp.classes[np.argmax(comp.probas[name], axis=1)]
        assert comp.results[name]["macro_f1"]["value"] != pytest.approx(f1_score(test.y, argmax, average="macro"))


def test_passing_predictions_changes_only_the_label_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    proba = np.column_stack([1 - (p := np.clip(0.3 * y + rng.random(60) * 0.6, 0, 1)), p])
    pred = (proba[:, 1] >= 0.35).astype(int)
    assert np.any(pred != proba.argmax(axis=1))
    by_argmax = stackers.Comparison.from_probas([0, 1], y, {"m": proba}, {"m": "probe"}, n_boot=0)
    by_pred = stackers.Comparison.from_probas([0, 1], y, {"m": proba}, {"m": "probe"}, preds={"m": pred}, n_boot=0)
    assert by_pred.results["m"]["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert by_pred.results["m"]["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred))
    assert by_pred.results["m"]["macro_f1"]["value"] != by_argmax.results["m"]["macro_f1"]["value"]
    for m in ("log_loss", "roc_auc"):
        assert by_pred.results["m"][m] == by_argmax.results["m"][m]


def test_paired_interval_is_the_interval_of_per_resample_differences():
    from stackers.evaluate._metrics import bootstrap_indices

    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    stack = np.eye(3)[[0, 0, 1, 1, 1, 2, 2, 2, 0, 0]] * 0.8 + 0.2 / 3
    base = np.eye(3)[[0, 1, 1, 1, 0, 2, 2, 0, 0, 2]] * 0.8 + 0.2 / 3
    comp = stackers.Comparison.from_probas([0, 1, 2], y, {"probe:a": base, "stack": stack},
                                           {"probe:a": "probe", "stack": "stack"}, n_boot=40, random_state=3)
    idx = bootstrap_indices(len(y), 40, 3)
    diffs = [f1_score(y[i], stack[i].argmax(1), average="macro") - f1_score(y[i], base[i].argmax(1), average="macro")
             for i in idx]
    low, high = np.percentile(diffs, [2.5, 97.5])
    point = f1_score(y, stack.argmax(1), average="macro") - f1_score(y, base.argmax(1), average="macro")
    assert comp.paired == pytest.approx({"model": "stack", "baseline": "probe:a", "metric": "macro_f1",
                                         "value": point, "low": low, "high": high})
    # Paired, not the difference of the two marginal intervals.
    assert comp.paired["low"] > comp.results["stack"]["macro_f1"]["low"] - comp.results["probe:a"]["macro_f1"]["high"]


def _headline_case(stack_right: int, n: int = 200, seed: int = 0) -> stackers.Comparison:
    """Baselines right on 150 of 200 rows (concat) and 120 (probe:a); the stack right on ``stack_right`` rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)

    def right_on(count: int, offset: int) -> np.ndarray:
        ok = np.zeros(n, dtype=bool)
        ok[(np.arange(count) + offset) % n] = True
        p = np.where(ok, y, 1 - y)
        return np.eye(2)[p] * 0.8 + 0.1

    # The stack's mistakes sit on other rows than the baselines': per-resample differences go both ways.
    probas = {"probe:a": right_on(120, 0), "concat": right_on(150, 0), "stack": right_on(stack_right, 100)}
    kinds = {"probe:a": "probe", "concat": "concat", "stack": "stack"}
    return stackers.Comparison.from_probas([0, 1], y, probas, kinds, n_boot=300, random_state=0)


@pytest.mark.parametrize("stack_right, pattern", [
    (190, r"stack beats best baseline \(concat\) by \+0\.\d{3} macro-F1 \[\+0\.\d{3}, \+0\.\d{3}\]"),
    (100, r"stack is below best baseline \(concat\) by 0\.\d{3} macro-F1 \[0\.\d{3}, 0\.\d{3}\]"),
    (152, r"no significant gain over best baseline \(concat\): \+0\.\d{3} macro-F1 \[-0\.\d{3}, \+0\.\d{3}\]"),
])
def test_headline_wording(stack_right, pattern):
    comp = _headline_case(stack_right)
    assert comp.best_baseline == "concat"
    assert re.fullmatch(pattern, comp.headline), comp.headline
    p = comp.paired
    value = f"{abs(p['value']):.3f}"
    assert value in comp.headline
    if comp.headline.startswith("stack is below"):  # the shortfall and its interval, as positive numbers
        assert f"[{-p['high']:.3f}, {-p['low']:.3f}]" in comp.headline
    else:
        assert f"[{p['low']:+.3f}, {p['high']:+.3f}]" in comp.headline
    assert comp.headline in comp.to_text() and comp.to_dict()["headline"] == comp.headline
    assert comp.to_dict()["paired"]["baseline"] == "concat"


def test_best_baseline_is_the_best_non_stack_row_by_point_macro_f1():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)

    def right(count: int, conf: float) -> np.ndarray:  # right on the first ``count`` rows, with confidence ``conf``
        return np.eye(2)[np.where(np.arange(200) < count, y, 1 - y)] * (2 * conf - 1) + (1 - conf)

    # concat: more rows right, but overconfident (worse log loss); probe:a: fewer right, softly (better log loss).
    probas = {"probe:a": right(150, 0.6), "concat": right(160, 0.999), "stack": right(100, 0.9)}
    kinds = {"probe:a": "probe", "concat": "concat", "stack": "stack"}
    comp = stackers.Comparison.from_probas([0, 1], y, probas, kinds, n_boot=50)
    res = comp.results
    assert res["probe:a"]["log_loss"]["value"] < res["concat"]["log_loss"]["value"]
    # The stack is the worst row, yet the baseline is chosen among the others, by macro-F1.
    assert comp.best == "concat" and comp.best_baseline == "concat"
    assert comp.paired["value"] == pytest.approx(res["stack"]["macro_f1"]["value"] - res["concat"]["macro_f1"]["value"])


def test_the_stack_is_scored_by_what_its_predict_returns(binary_comparison):
    import copy

    comp, _, test = binary_comparison
    model = copy.deepcopy(comp.model)
    model.threshold_ = 0.05  # a cut far from 0.5: predict now differs from the argmax on some rows
    pred = model.predict(test)
    assert np.any(pred != model.classes_[np.argmax(model.predict_proba(test), axis=1)])
    got = stackers.Comparison.from_model(model, test, n_boot=0)
    np.testing.assert_array_equal(got.preds["stack"], pred)
    assert got.results["stack"]["macro_f1"]["value"] == pytest.approx(f1_score(test.y, pred, average="macro"))
    assert got.thresholds["stack"] == 0.05 and got.to_dict()["stack"]["threshold"] == 0.05


def test_from_model_with_and_without_the_training_rows(binary_comparison):
    comp, train, test = binary_comparison
    with_train = stackers.Comparison.from_model(comp.model, test, train=train, n_boot=200)
    assert with_train.results == comp.results and with_train.notes == []
    without = stackers.Comparison.from_model(comp.model, test, n_boot=200)
    assert list(without.results) == ["base:top", "base:bottom", "stack"]
    assert set(without.kinds.values()) == {"base", "stack"}
    assert without.results["stack"] == comp.results["stack"]  # the same rows and resamples
    assert without.notes and without.notes[0].startswith("Baselines missing")
    assert without.notes[0] in without.to_text() and without.to_dict()["notes"] == without.notes
    assert "its best own base learner" in without.headline

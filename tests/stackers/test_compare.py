"""compare: single probes, concatenation and the stack side by side on held-out rows, with intervals."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

import stackers
from stackers import StackingClassifier, TrainingSet
from stackers._metrics import METRICS


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

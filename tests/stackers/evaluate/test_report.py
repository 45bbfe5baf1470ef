"""report: metrics.json holds the comparison's numbers; readable PNG plots and a text table are written."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

import stackers
from stackers import StackingClassifier, TrainingSet


@pytest.fixture(scope="module")
def split(digits_blocks_module):
    blocks, y = digits_blocks_module
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    data = TrainingSet(blocks=blocks, y=names[y])
    return data.split(0.3, random_state=0)


@pytest.fixture(scope="module")
def digits_blocks_module():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return {"top": X[:, :32], "bottom": X[:, 32:]}, y


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_report_of_a_comparison(split, tmp_path, capsys):
    train, test = split
    comp = stackers.compare(train, test, StackingClassifier(meta="logistic", cv=3), n_boot=200)
    paths = stackers.report(comp, out=tmp_path / "reports", print_table=True)
    assert set(paths) == {"metrics", "table", "comparison", "confusion_matrix", "calibration"}
    for key in ("comparison", "confusion_matrix", "calibration"):
        assert _is_png(paths[key]), key
    written = json.loads(paths["metrics"].read_text())
    assert written["models"] == comp.to_dict()["models"]  # the very same numbers
    assert written["best"] == comp.best and written["classes"] == sorted(written["classes"])
    assert paths["table"].read_text().strip() == comp.to_text() == paths.text
    assert comp.to_text() in capsys.readouterr().out


def test_report_of_a_model_and_test_set(split, tmp_path):
    train, test = split
    model = StackingClassifier(meta="logistic", cv=3).fit(train)
    paths = stackers.report(model, test, out=tmp_path / "r", n_boot=100)
    written = json.loads(paths["metrics"].read_text())
    # Without the training rows: the stack against its own base learners, and the report says baselines are missing.
    assert set(written["models"]) == {"base:top", "base:bottom", "stack"}
    assert written["notes"][0].startswith("Baselines missing") and written["notes"][0] in paths.text
    stack_acc = float(np.mean(model.predict(test) == test.y))
    assert written["models"]["stack"]["metrics"]["accuracy"]["value"] == pytest.approx(stack_acc)
    with pytest.raises(ValueError, match="needs data_test"):
        stackers.report(model, out=tmp_path / "r2")
    full = stackers.report(model, test, out=tmp_path / "r3", data_train=train, n_boot=100)
    written = json.loads(full["metrics"].read_text())
    assert set(written["models"]) == {"probe:top", "probe:bottom", "concat", "stack"} and written["notes"] == []
    assert written["headline"] and written["headline"] in full.text


@pytest.mark.parametrize("args, kwargs, match", [
    ((None,), {}, "The 'comparison_or_model' parameter of report must be a Comparison or a fitted "
                  "StackingClassifier. Got None instead."),
    (("model", "test"), {"n_boot": 1.5}, "The 'n_boot' parameter of report must be an int >= 0. Got 1.5 instead."),
    (("model", "test"), {"print_table": "yes"}, "The 'print_table' parameter of report must be a bool."),
    (("model", "train.blocks"), {}, "The 'data_test' parameter of report must be a labelled TrainingSet or None."),
])
def test_report_rejects_bad_params(split, tmp_path, args, kwargs, match):
    train, test = split
    model = StackingClassifier(meta="logistic", cv=2)
    values = {"model": model, "test": test, "train.blocks": train.blocks}
    with pytest.raises(stackers.InvalidParameterError, match=re.escape(match)):
        stackers.report(*(values.get(a, a) for a in args), out=tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()


def test_a_report_without_matplotlib_says_which_extra_and_writes_nothing(split, tmp_path, monkeypatch):
    train, test = split
    model = StackingClassifier(meta="logistic", cv=2).fit(train)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match=re.escape("Report plots needs matplotlib: pip install 'featurestore[stack]'")):
        stackers.report(model, test, out=tmp_path / "r", n_boot=20)
    assert not (tmp_path / "r").exists()


def test_report_leaves_pyplot_alone(split, tmp_path):
    train, test = split
    model = StackingClassifier(meta="logistic", cv=2).fit(train)
    had_pyplot = "matplotlib.pyplot" in sys.modules
    stackers.report(model, test, out=tmp_path / "r", n_boot=20)
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot

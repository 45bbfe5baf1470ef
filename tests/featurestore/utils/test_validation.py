"""The parameter-constraint helper: messages read like scikit-learn's and name the caller."""

from __future__ import annotations

import re
from numbers import Integral, Real

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from featurestore.utils._validation import (
    CVSplitter,
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    SubsetOf,
    validate_params,
)

CONSTRAINTS = {
    "cv": [Interval(Integral, 2, None, closed="left"), CVSplitter()],
    "alpha": [Interval(Real, 0, 1, closed="right")],
    "mode": [StrOptions({"a", "b"}), None],
    "flag": ["boolean"],
    "seed": ["random_state"],
    "est": [HasMethods(["fit", "predict"])],
    "extras": [SubsetOf({"x", "y"})],
}


@pytest.mark.parametrize("name, value", [
    ("cv", 2), ("cv", np.int64(10)), ("cv", KFold(3)), ("alpha", 1.0), ("alpha", 0.5), ("mode", None),
    ("mode", "a"), ("flag", False), ("seed", None), ("seed", 7), ("seed", np.random.RandomState(0)),
    ("est", LogisticRegression()), ("extras", ()), ("extras", ["y", "x"]),
])
def test_accepts(name, value):
    validate_params({name: value}, CONSTRAINTS, "Thing")


@pytest.mark.parametrize("name, value, message", [
    ("cv", 1, "The 'cv' parameter of Thing must be an int >= 2 or a CV splitter. Got 1 instead."),
    ("cv", 2.0, "Got 2.0 instead."),
    ("alpha", 0, "The 'alpha' parameter of Thing must be a float in (0, 1]. Got 0 instead."),
    ("alpha", float("nan"), "Got nan instead."),
    ("mode", "c", "The 'mode' parameter of Thing must be one of {'a', 'b'} or None. Got 'c' instead."),
    ("flag", 1, "The 'flag' parameter of Thing must be a bool. Got 1 instead."),
    ("seed", -1, "Got -1 instead."),
    ("est", "model", "must be an object implementing 'fit' and 'predict'. Got 'model' instead."),
    ("est", LogisticRegression, "Got <class 'sklearn.linear_model._logistic.LogisticRegression'> instead."),
    ("extras", ["x", "x"], "a list or tuple of distinct names from {'x', 'y'}. Got ['x', 'x'] instead."),
])
def test_rejects_with_one_message_shape(name, value, message):
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        validate_params({name: value}, CONSTRAINTS, "Thing")


def test_unconstrained_params_are_not_checked():
    validate_params({"anything": object()}, CONSTRAINTS, "Thing")

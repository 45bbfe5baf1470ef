"""Base learners: the logistic probe equals scikit-learn's scaler + logistic pipeline; centroids are cosines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from stackers import CentroidSimilarity, LogisticProbe


@parametrize_with_checks([LogisticProbe(), CentroidSimilarity()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_logistic_probe_matches_the_sklearn_pipeline(digits_blocks, n_classes):
    blocks, y = digits_blocks
    keep = y < n_classes
    X, yk = blocks["top"][keep].astype(np.float64), y[keep]
    probe = LogisticProbe(C=0.5).fit(X, yk)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000)).fit(X, yk)
    np.testing.assert_allclose(probe.predict_proba(X), pipe.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(probe.decision_function(X), pipe.decision_function(X), atol=1e-4)
    np.testing.assert_array_equal(probe.predict(X), pipe.predict(X))


def test_logistic_probe_with_one_class_predicts_it():
    probe = LogisticProbe().fit(np.random.default_rng(0).standard_normal((5, 3)), ["a"] * 5)
    np.testing.assert_array_equal(probe.predict_proba(np.zeros((2, 3))), np.ones((2, 1)))
    assert list(probe.predict(np.zeros((2, 3)))) == ["a", "a"]


def test_centroid_similarity_is_cosine_to_class_means():
    X = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    y = np.array([0, 0, 1, 1])
    sims = CentroidSimilarity().fit(X, y).transform(np.array([[1.0, 1.0], [5.0, 0.0]]))
    np.testing.assert_allclose(sims, [[np.sqrt(0.5), np.sqrt(0.5)], [1.0, 0.0]], atol=1e-12)


def test_expand_to_classes_puts_each_column_under_its_class():
    from stackers.classify._probes import expand_to_classes

    scores = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    full = expand_to_classes(scores, np.array([1, 3]), 4)  # a fold that never saw classes 0 and 2
    np.testing.assert_array_equal(full, [[0, 0.25, 0, 0.75], [0, 0.5, 0, 0.5]])
    assert full.dtype == np.float64
    every = expand_to_classes(scores, np.array([0, 1]), 2)
    np.testing.assert_array_equal(every, scores)
    assert every.dtype == np.float64
    probe = LogisticProbe().fit(np.eye(3), [2, 2, 0])  # classes 0 and 2 of 3
    np.testing.assert_array_equal(expand_to_classes(probe.predict_proba(np.eye(3)), probe.classes_, 3)[:, 1], 0)

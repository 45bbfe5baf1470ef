"""Vectorised metrics agree with scikit-learn's; bootstrap resamples are shared and bracket the point estimate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from stackers.evaluate._metrics import bootstrap_indices, bootstrap_scores, score


def _random_case(n: int, k: int, seed: int, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.standard_normal((n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if ties:  # coarse probabilities: many tied scores, which ROC-AUC must rank on average
        proba = np.round(proba, 1) + 1e-3
        proba /= proba.sum(axis=1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("ties", [False, True])
def test_point_metrics_match_sklearn(k, ties):
    y, proba = _random_case(300, k, seed=k, ties=ties)
    got = score(y, proba)
    pred = proba.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(y, proba, labels=np.arange(k)), abs=1e-12)
    expected_auc = roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr")
    assert got["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)


def test_macro_f1_averages_over_labels_present_like_sklearn():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.eye(4)[[0, 1, 1, 1, 0]]  # classes 2 and 3 never appear
    assert score(y, proba)["macro_f1"] == pytest.approx(f1_score(y, proba.argmax(1), average="macro"))


def test_bootstrap_matches_metrics_on_each_resample():
    y, proba = _random_case(120, 4, seed=1)
    idx = bootstrap_indices(len(y), 25, random_state=0)
    boot = bootstrap_scores(y, proba, idx)
    for b in (0, 7, 24):
        one = score(y[idx[b]], proba[idx[b]])
        for metric, values in boot.items():
            assert values[b] == pytest.approx(one[metric], abs=1e-12), metric
    np.testing.assert_array_equal(idx, bootstrap_indices(len(y), 25, random_state=0))  # reproducible

"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stackers.evaluate._metrics import bootstrap_indices
from stackers.evaluate._rank_metrics import coverage, paired_difference, per_user_metrics, summarize
from stackers.recommend._evaluation import target_ranks


def test_one_target_per_user():
    m = per_user_metrics(np.array([1, 3, 11]), np.array([0, 1, 2]), 3, k=10)
    np.testing.assert_allclose(m["recall"], [1, 1, 0])
    np.testing.assert_allclose(m["ndcg"], [1, 1 / math.log2(4), 0])
    np.testing.assert_allclose(m["mrr"], [1, 1 / 3, 1 / 11])


def test_several_targets_of_one_user():
    m = per_user_metrics(np.array([2, 5, 12]), np.array([0, 0, 0]), 1, k=10)
    assert m["recall"][0] == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / ideal)
    assert m["mrr"][0] == pytest.approx(1 / 2)


def test_cut_off_is_inclusive():
    assert per_user_metrics(np.array([10]), np.array([0]), 1, k=10)["recall"][0] == 1
    assert per_user_metrics(np.array([11]), np.array([0]), 1, k=10)["recall"][0] == 0


def test_coverage_and_ranks_with_ties_by_item_order():
    assert coverage(np.array([[0, 1], [1, 2], [-1, 2]]), 10) == pytest.approx(0.3)
    scores = np.array([[0.5, 0.9, 0.5, -np.inf]])
    # item 2 ties with item 0 and comes after it; item 1 is first
    np.testing.assert_array_equal(target_ranks(scores, np.array([0, 0, 0]), np.array([1, 0, 2])), [1, 2, 3])


def test_intervals_contain_the_mean_and_paired_differences_are_tighter():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    better = base + 0.05 + 0.01 * rng.standard_normal(400)
    idx = bootstrap_indices(400, 300, 0)
    s = summarize({"recall": base}, idx)["recall"]
    assert s["low"] <= s["value"] <= s["high"]
    d = paired_difference(better, base, idx)
    assert d["low"] > 0 and (d["high"] - d["low"]) < (s["high"] - s["low"])

"""The time split: one documented tie-break, and nothing at or after a user's test event reaches training."""

from __future__ import annotations

import numpy as np
import pytest

from stackers import Interactions, InvalidParameterError
from stackers.recommend._interactions import user_vectors


def _table(rows, items=None):
    user, item, time = zip(*rows)
    return Interactions(np.array(user), np.array(item), np.array(time, dtype=float), items=items)


def test_leave_last_holds_out_the_latest_event_and_breaks_ties_by_item_id():
    it = _table([(1, 5, 1), (1, 7, 2), (1, 6, 3),       # latest by time: item 6, though 7 has the larger id
                 (2, 3, 1), (2, 9, 4), (2, 4, 4),       # tie at t=4: the larger item id (9) is last
                 (3, 8, 1)])                             # a single event: no test for user 3
    train, test = it.split()
    assert dict(zip(test.user.tolist(), test.item.tolist())) == {1: 6, 2: 9}
    assert sorted(zip(train.user.tolist(), train.item.tolist())) == [(1, 5), (1, 7), (2, 3), (2, 4), (3, 8)]


def test_the_tie_break_does_not_depend_on_row_order():
    rows = [(1, 9, 4), (1, 4, 4), (1, 3, 1)]
    a = _table(rows).split()[1]
    b = _table(rows[::-1]).split()[1]
    assert a.item.tolist() == b.item.tolist() == [9]


def test_time_cut_keeps_everything_at_or_after_the_cut_out_of_training():
    it = _table([(1, 1, 1), (1, 2, 5), (2, 3, 6), (2, 1, 2), (3, 2, 9)])
    train, test = it.split("time", cut=5)
    assert train.time.max() < 5 and test.time.min() >= 5
    assert set(test.user.tolist()) == {1, 2}  # user 3 has nothing before the cut: not scored


def test_a_future_popular_item_never_reaches_the_popularity_of_training():
    # item 99 is rated by everyone, but only after the cut: a leaky split would make it the most popular item.
    rows = [(u, 1 + u % 3, 1.0 + u) for u in range(30)] + [(u, 99, 100.0 + u) for u in range(30)]
    it = _table(rows)
    train, _ = it.split("time", cut=100)
    assert 99 not in train.item
    train_l, test_l = it.split()
    assert set(test_l.item.tolist()) == {99} and 99 not in train_l.item


def test_unknown_items_and_bad_times_are_refused_with_the_row():
    with pytest.raises(ValueError, match=r"item 42 \(row 1\) is not in the item catalogue"):
        _table([(1, 1, 1), (1, 42, 2)], items=np.array([1, 2]))
    with pytest.raises(ValueError, match="time at row 0"):
        Interactions(np.array([1]), np.array([1]), np.array([np.nan]))
    with pytest.raises(InvalidParameterError, match="'how' parameter"):
        _table([(1, 1, 1)]).split("random")


def test_user_vectors_weigh_recent_items_more_and_use_training_only():
    it = _table([(1, 0, 1), (1, 1, 2)], items=np.array([0, 1]))
    vecs = np.eye(2)
    v = user_vectors(it, np.array([1, 2]), vecs, half_life=1.0)
    assert v[0, 1] > v[0, 0] > 0  # the newer item weighs twice the older one
    np.testing.assert_allclose(np.linalg.norm(v[0]), 1.0)
    assert not v[1].any()  # no history, no vector

"""Point-in-time joins: each labels row sees, per set, only the newest embedding at or before its label time."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

import featurestore
import stackers

SPEC = {"encoder": "external:asof-test"}
T0 = datetime(2026, 1, 1, 12, 0, 0)


def _write_at(store, name: str, ids, times, vectors, **kw) -> None:
    store.write(name, {"id": np.asarray(ids, np.int64), "embedding": np.asarray(vectors, np.float32),
                       "event_time": pa.array(times, pa.timestamp("us"))}, spec=SPEC, **kw)


@pytest.fixture
def history_store(store):
    """Key 1 embedded at t1 < t2 < t3 (three commits); key 2 only at t2."""
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    vecs = {t: np.full(4, float(i + 1), np.float32) for i, t in enumerate((t1, t2, t3))}
    _write_at(store, "feat", [1], [t1], [vecs[t1]])
    _write_at(store, "feat", [1, 2], [t2, t2], [vecs[t2], vecs[t2] * 10])
    _write_at(store, "feat", [1], [t3], [vecs[t3]])
    return store, (t1, t2, t3), vecs


def test_each_label_row_gets_the_vector_committed_at_or_before_its_time(history_store):
    store, (t1, t2, t3), vecs = history_store
    second = timedelta(seconds=1)
    label_times = [t1 - second, t1, t1 + second, t2 - second, t2, t3 - second, t3, t3 + timedelta(days=9)]
    want = [None, t1, t1, t1, t2, t2, t3, t3]
    labels = pa.table({"id": pa.array([1] * len(label_times), pa.int64()), "label": list(range(len(label_times))),
                       "label_time": pa.array(label_times, pa.timestamp("us"))})
    with pytest.warns(stackers.MissingKeysWarning, match="1 of 8 label keys .* at or before their 'label_time'"):
        ts = stackers.join(store, ["feat"], labels, key="id", as_of="label_time")
    expected = np.stack([vecs[w] for w in want if w is not None])
    np.testing.assert_array_equal(ts.blocks["feat"], expected)  # equality at t1/t2/t3 takes that row (>=, not >)
    assert ts.y.tolist() == [1, 2, 3, 4, 5, 6, 7]  # the label before t1 got none and was dropped
    assert ts.missing["feat"]["count"] == 1 and ts.sources["feat"]["as_of"] == "label_time"
    with pytest.raises(stackers.MissingKeysError, match="at or before"):
        stackers.join(store, ["feat"], labels, key="id", as_of="label_time", how="error")


def test_no_future_row_leaks_on_random_histories(store):
    """Many keys, many commits at random times, labels at random times: checked against a brute-force answer."""
    rng = np.random.default_rng(7)
    n_keys, dim = 40, 6
    events: list[tuple[int, datetime, np.ndarray]] = []
    for _ in range(4):
        ids = rng.choice(n_keys, size=25, replace=False)
        times = [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 600, size=len(ids))]
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        _write_at(store, "feat", ids, times, vectors)
        events += [(int(i), t, v) for i, t, v in zip(ids, times, vectors)]
    label_ids = rng.integers(0, n_keys, size=300)
    label_times = [T0 + timedelta(minutes=int(m)) for m in rng.integers(-30, 660, size=300)]
    # The brute force: per (key, time) the latest commit wins; then the latest time <= the label's.
    latest: dict[tuple[int, datetime], np.ndarray] = {}
    for i, t, v in events:
        latest[(i, t)] = v
    expected, found = [], []
    for i, lt in zip(label_ids, label_times):
        past = [(t, v) for (k, t), v in latest.items() if k == i and t <= lt]
        found.append(bool(past))
        if past:
            expected.append(max(past, key=lambda tv: tv[0])[1])
    labels = pa.table({"id": pa.array(label_ids, pa.int64()), "label": np.arange(300),
                       "t": pa.array(label_times, pa.timestamp("us"))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stackers.MissingKeysWarning)
        ts = stackers.join(store, ["feat"], labels, key="id", as_of="t")
    assert ts.y.tolist() == np.flatnonzero(found).tolist()
    np.testing.assert_array_equal(ts.blocks["feat"], np.stack(expected))
    assert 0 < ts.missing["feat"]["count"] == 300 - sum(found)


def test_zoned_and_text_label_times_mean_the_same_instant(history_store):
    store, (t1, t2, t3), vecs = history_store
    paris = timezone(timedelta(hours=1))
    at_t2 = t2.replace(tzinfo=timezone.utc).astimezone(paris)  # the same instant, written in another zone
    zoned = pa.table({"id": [1], "t": pa.array([at_t2], pa.timestamp("us", tz="+01:00"))})
    text = pa.table({"id": [1], "t": [at_t2.isoformat()]})
    for labels in (zoned, text):
        ts = stackers.join(store, ["feat"], labels, key="id", label=None, as_of="t")
        np.testing.assert_array_equal(ts.blocks["feat"], vecs[t2][None, :])


def test_as_of_refusals(history_store):
    store, *_ = history_store
    labels = pa.table({"id": [1], "t": pa.array([T0], pa.timestamp("us"))})
    with pytest.raises(ValueError, match="'when', which is not a column"):
        stackers.join(store, ["feat"], labels, key="id", as_of="when")
    with pytest.raises(TypeError, match="must hold timestamps"):
        stackers.join(store, ["feat"], pa.table({"id": [1], "t": [1.5]}), key="id", as_of="t")
    with pytest.raises(ValueError, match="1 nulls"):
        stackers.join(store, ["feat"], pa.table({"id": [1], "t": pa.array([None], pa.timestamp("us"))}), key="id",
                      as_of="t")
    store.write("plain", {"id": np.array([1]), "embedding": np.ones((1, 4), np.float32)}, spec=SPEC)
    with pytest.raises(featurestore.ValidationError, match="no 'event_time' column"):
        stackers.join(store, ["plain"], labels, key="id", as_of="t")


def test_a_rewrite_for_the_same_event_time_wins_and_null_times_are_counted(history_store):
    store, (t1, t2, t3), vecs = history_store
    fixed = np.full(4, 9.0, np.float32)
    _write_at(store, "feat", [1], [t2], [fixed])  # a correction of key 1's t2 embedding, committed last
    labels = pa.table({"id": [1, 1], "t": pa.array([t2, t3 - timedelta(seconds=1)], pa.timestamp("us"))})
    ts = stackers.join(store, ["feat"], labels, key="id", label=None, as_of="t")
    np.testing.assert_array_equal(ts.blocks["feat"], np.stack([fixed, fixed]))
    _write_at(store, "feat", [3], [None], [fixed])
    with pytest.warns(UserWarning, match="1 of 6 rows of 'feat' v1 have no event_time"):
        stackers.join(store, ["feat"], labels, key="id", label=None, as_of="t")

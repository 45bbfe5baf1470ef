"""Time travel: ``store.get(name, as_of=T)``, ``store.sql(..., as_of=T)`` and ``"name@<time>"`` views return exactly
what a reader saw at T."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

import featurestore
from featurestore.query._time_travel import parse_as_of, parse_ref

SPEC = {"encoder": "external:tt"}


def _rows(ids, salt: int, dim: int = 8) -> dict:
    ids = np.asarray(list(ids), np.int64)
    return {"id": ids, "embedding": np.stack([np.random.default_rng([salt, int(i)]).standard_normal(dim)
                                              for i in ids]).astype(np.float32)}


def _moment() -> datetime:
    """Now, with a gap on both sides: created_at has millisecond precision."""
    time.sleep(0.01)
    t = datetime.now(timezone.utc)
    time.sleep(0.01)
    return t


def _by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id").select(["id", "content_hash", "embedding"])


@pytest.fixture
def history(store):
    """v1 written twice (the second write updates 10 keys and adds 20), then a v2; the table seen after each."""
    before = _moment()
    store.write("tt", _rows(range(50), 0), spec=SPEC)
    seen1, t1 = _by_id(store.get("tt").to_arrow()), _moment()
    store.write("tt", _rows(range(40, 70), 1), spec=SPEC)
    seen2, t2 = _by_id(store.get("tt").to_arrow()), _moment()
    store.write("tt", _rows(range(10), 2, dim=4), spec={**SPEC, "model": "b"}, version="new")
    seen3, t3 = _by_id(store.get("tt").to_arrow()), _moment()
    return store, before, [(t1, seen1, 1), (t2, seen2, 1), (t3, seen3, 2)]


def test_get_as_of_returns_exactly_the_committed_snapshot(history):
    store, _, moments = history
    for t, seen, version in moments:
        fs = store.get("tt", as_of=t)
        assert fs.version == version and fs.count() == seen.num_rows
        assert _by_id(fs.to_arrow()).equals(seen)
        order = np.argsort(fs.keys().column("id").to_numpy())
        np.testing.assert_array_equal(fs.to_numpy()[order], featurestore.storage._format.to_matrix(seen.column("embedding"), fs.dim))
    assert moments[1][1].num_rows == 70 and store.get("tt", as_of=moments[0][0]).count() == 50
    # An older version at a later time: all of it; the same version before its second write: its first write.
    assert _by_id(store.get("tt", 1, as_of=moments[2][0]).to_arrow()).equals(moments[1][1])


def test_sql_as_of_and_time_views_read_the_same_snapshot(history):
    store, _, moments = history
    for t, seen, version in moments:
        iso = t.isoformat()
        via_param = store.sql("select id, content_hash, embedding from tt", as_of=t).arrow()
        via_view = store.sql(f'select id, content_hash, embedding from "tt@{iso}"').arrow()
        for got in (via_param, via_view):
            assert got.sort_by("id").column("content_hash").equals(seen.column("content_hash"))
        meta = store.sql("select version, latest from feature_sets order by version", as_of=t).fetchall()
        assert meta == [(v, v == version) for v in range(1, version + 1)]
    fs = store.get("tt", as_of=moments[0][0])  # its view name reads it back
    assert store.sql(f"select count(*) from {fs.view}").fetchone() == (50,)


def test_a_partition_is_visible_at_exactly_its_created_at(store):
    store.write("tt", _rows(range(5), 0), spec=SPEC)
    store.write("tt", _rows(range(5, 8), 0), spec=SPEC)
    second = store.get("tt").manifest.partitions[1].created_at
    assert store.get("tt", as_of=second).count() == 8
    just_before = parse_as_of(second) - timedelta(milliseconds=1)
    assert store.get("tt", as_of=just_before).count() == 5


def test_before_the_set_existed_is_a_clear_error(history):
    store, before, _ = history
    with pytest.raises(featurestore.FeatureSetNotFoundError, match="did not exist at .* first commit was at"):
        store.get("tt", as_of=before)
    with pytest.raises(featurestore.FeatureSetNotFoundError, match="did not exist"):
        store.sql(f'select * from "tt@{before.isoformat()}"').fetchall()
    with pytest.raises(featurestore.FeatureSetNotFoundError, match="No feature set named 'nope'"):
        store.sql(f'select * from "nope@{before.isoformat()}"')
    # Text that only looks like a time view (inside a string) is not resolved unless read.
    assert store.sql("""select '"tt@2001-01-01"' as s, count(*) from tt""").fetchone() == ('"tt@2001-01-01"', 10)
    with pytest.raises(featurestore.FeatureSetNotFoundError, match="no version 9"):
        store.get("tt", 9, as_of=before)


def test_times_naive_means_utc_and_bad_ones_are_refused():
    aware = parse_as_of("2026-11-29T10:00:00+02:00")
    assert parse_as_of("2026-11-29T08:00:00") == aware == parse_as_of("2026-11-29T08:00:00Z")
    assert parse_as_of(datetime(2026, 11, 29, 8)) == aware
    assert parse_as_of("2026-11-29") == parse_as_of("2026-11-29T00:00")
    for bad in ("yesterday", "2026-13-01", 12):
        with pytest.raises(featurestore.ValidationError, match="as_of must be"):
            parse_as_of(bad)
    assert parse_ref("a_b@v12") == ("a_b", 12, None)
    assert parse_ref("a@2026-11-29T08:00Z") == ("a", None, aware)
    assert parse_ref("a") == ("a", None, None)

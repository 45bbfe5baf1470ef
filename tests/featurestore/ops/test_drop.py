"""Dropping a feature set or a version: under the lock, catalog and runs consistent, doctor clean, models protected."""

from __future__ import annotations

import numpy as np
import pytest

import featurestore

SPEC = {"encoder": "external:drop-test"}


def _rows(ids, salt: int = 0, dim: int = 8) -> dict:
    ids = np.asarray(list(ids), np.int64)
    return {"id": ids, "embedding": np.random.default_rng(salt).standard_normal((len(ids), dim)).astype(np.float32)}


@pytest.fixture
def three_versions(store):
    for v in range(3):
        store.write("vecs", _rows(range(10 * (v + 1)), salt=v), spec={**SPEC, "v": v}, version="new")
    store.write("other", _rows(range(5)), spec=SPEC)
    return store


def _catalog_state(store) -> tuple[list, list]:
    sets = store.sql("select name, version, latest from feature_sets order by name, version").fetchall()
    runs = store.sql("select distinct name, version from runs order by name, version").fetchall()
    return sets, runs


def _assert_doctor_clean(store) -> None:
    report = store.doctor()
    assert report.findings == [] and report.ok, report.to_dict()


def test_dropping_the_latest_version_makes_the_previous_one_latest(three_versions):
    store = three_versions
    out = store.drop("vecs", 3)
    assert out == {"name": "vecs", "versions": [3], "rows": 30, "bytes": out["bytes"], "latest": 2, "models": {}}
    assert out["bytes"] > 0 and store.versions("vecs") == [1, 2]
    assert store.get("vecs").version == 2 and store.sql("select count(*) from vecs").fetchone() == (20,)
    sets, runs = _catalog_state(store)
    assert sets == [("other", 1, True), ("vecs", 1, False), ("vecs", 2, True)]
    assert runs == [("other", 1), ("vecs", 1), ("vecs", 2)]  # the dropped version's runs went with it
    _assert_doctor_clean(store)  # also checks catalog.duckdb's views against the manifests
    assert not list((store.root / "sets" / "vecs").glob(".tmp-*"))


def test_dropping_a_middle_version_and_a_whole_set(three_versions):
    store = three_versions
    assert store.drop("vecs", 2)["latest"] == 3
    assert store.versions("vecs") == [1, 3]
    with pytest.raises(Exception, match="vecs@v2"):
        store.sql('select * from "vecs@v2"').fetchall()
    out = store.drop("vecs")
    assert out["versions"] == [1, 3] and out["rows"] == 40 and out["latest"] is None
    assert store.names() == ["other"] and "vecs" not in store
    assert _catalog_state(store) == ([("other", 1, True)], [("other", 1)])
    _assert_doctor_clean(store)
    with pytest.raises(featurestore.FeatureSetNotFoundError):
        store.get("vecs")
    store.write("vecs", _rows(range(3)), spec=SPEC)  # the name is free again, from v1
    assert store.versions("vecs") == [1] and store.get("vecs").count() == 3
    _assert_doctor_clean(store)


@pytest.mark.parametrize("name, version, match", [
    ("nope", None, "No feature set named 'nope'"),
    ("vecs", 7, r"has no version 7. Versions: \[1, 2, 3\]"),
])
def test_refuses_what_does_not_exist_and_changes_nothing(three_versions, name, version, match):
    store = three_versions
    before = _catalog_state(store)
    with pytest.raises(featurestore.FeatureSetNotFoundError, match=match):
        store.drop(name, version)
    assert _catalog_state(store) == before


@pytest.mark.parametrize("kwargs, match", [
    ({"version": 0}, "'version' parameter of Store.drop must be an int >= 1 or None. Got 0"),
    ({"version": "2"}, "Got '2'"),
    ({"force": "yes"}, "'force' parameter"),
    ({"lock_timeout": -1}, "'lock_timeout' parameter"),
])
def test_bad_parameters_are_named(three_versions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        three_versions.drop("vecs", **kwargs)
    assert three_versions.versions("vecs") == [1, 2, 3]


def test_a_held_lock_times_out_and_nothing_is_removed(three_versions):
    store = three_versions
    with store.writer("vecs", spec={**SPEC, "v": 2}):
        with pytest.raises(featurestore.LockTimeoutError, match="feature set 'vecs'"):
            store.drop("vecs", lock_timeout=0.2)
    assert store.versions("vecs") == [1, 2, 3]
    _assert_doctor_clean(store)


def test_saved_models_block_the_drop_of_what_they_use_unless_forced(three_versions):
    pytest.importorskip("sklearn")
    import stackers

    store = three_versions
    rng = np.random.default_rng(0)
    labels = {"id": np.arange(20), "label": rng.integers(0, 2, 20)}
    data = stackers.join(store, ["vecs"], labels, key="id", versions={"vecs": 2})
    stackers.StackingClassifier(meta="logistic", cv=2).fit(data).save(store.models_dir / "clf")
    with pytest.raises(featurestore.FeatureStoreError, match=r"(?s)saved model\(s\) clf \(v2\) use it.*--force"):
        store.drop("vecs", 2)
    with pytest.raises(featurestore.FeatureStoreError, match="clf"):
        store.drop("vecs")
    assert store.versions("vecs") == [1, 2, 3]
    assert store.drop("vecs", 3)["models"] == {}  # a version no model uses goes without force
    out = store.drop("vecs", 2, force=True)
    assert out["models"] == {"clf": 2} and store.versions("vecs") == [1]
    _assert_doctor_clean(store)


def test_a_dropped_folder_left_by_a_kill_is_a_leftover_doctor_cleans(three_versions):
    """What a kill between the rename and the delete leaves (the real kill is in tests/test_crash_points.py)."""
    from featurestore.storage import _leftovers

    store = three_versions
    vdir = store.root / "sets" / "vecs" / "v3"
    vdir.rename(vdir.with_name(_leftovers.dropped_name(3, "abc123")))
    store.rebuild_catalog()
    assert store.versions("vecs") == [1, 2] and store.get("vecs").count() == 20
    report = store.doctor()
    assert [f.kind for f in report.findings] == ["leftover"] and not report.ok
    assert store.doctor(clean=True).ok
    _assert_doctor_clean(store)
    assert not (store.root / "sets" / "vecs" / ".tmp-drop-v3-abc123").exists()

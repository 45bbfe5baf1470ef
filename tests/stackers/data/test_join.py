"""stackers.join against a real store: key alignment, missing keys, label sources, versions; TrainingSet helpers."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featurestore
import stackers


def _id_vectors(ids: np.ndarray, dim: int, salt: float) -> np.ndarray:
    """Vectors that spell out their own key, so alignment can be checked row by row."""
    return np.column_stack([ids.astype(np.float32), np.full(len(ids), salt, np.float32),
                            np.ones((len(ids), dim - 2), np.float32)])


def test_join_aligns_sets_written_in_different_orders(store, write_set):
    ids = np.arange(50) * 3
    rng = np.random.default_rng(0)
    a_order, b_order, label_order = rng.permutation(50), rng.permutation(50), rng.permutation(50)
    write_set(store, "set_a", ids[a_order], _id_vectors(ids[a_order], 4, 1.0))
    write_set(store, "set_b", ids[b_order], _id_vectors(ids[b_order], 6, 2.0))
    labels = pa.table({"id": ids[label_order], "label": (ids[label_order] % 2).astype(np.int64)})

    ts = stackers.join(store, ["set_a", "set_b"], labels=labels, key="id")

    keys = ts.keys.column("id").to_numpy()
    np.testing.assert_array_equal(keys, ids[label_order])  # the labels' row order is kept
    np.testing.assert_array_equal(ts.blocks["set_a"][:, 0], keys)
    np.testing.assert_array_equal(ts.blocks["set_b"][:, 0], keys)
    np.testing.assert_array_equal(ts.y, keys % 2)
    assert ts.blocks["set_a"].dtype == np.float32 and ts.blocks["set_b"].shape == (50, 6)
    assert ts.missing == {"set_a": {"count": 0, "examples": []}, "set_b": {"count": 0, "examples": []}}
    assert ts.sources["set_a"]["version"] == 1 and ts.sources["set_b"]["dim"] == 6
    assert ts.sources["set_a"]["spec"]["encoder"] == "external:set_a"


def test_join_digits_matches_the_original_rows(digits_store, digits_blocks):
    store, labels = digits_store
    blocks, y = digits_blocks
    ts = stackers.join(store, ["top", "bottom"], labels=labels, key="id", groups="writer", columns=["parity"])
    rows = (ts.keys.column("id").to_numpy() - 7) // 10
    np.testing.assert_array_equal(ts.blocks["top"], blocks["top"][rows])
    np.testing.assert_array_equal(ts.blocks["bottom"], blocks["bottom"][rows])
    np.testing.assert_array_equal(ts.y, np.array([f"digit{d}" for d in y[rows]]))
    np.testing.assert_array_equal(ts.groups, labels["writer"].to_numpy())
    assert list(ts.columns.columns) == ["parity"] and len(ts.columns) == len(y)


def test_join_reports_missing_keys_and_drops_them_with_inner(store, write_set):
    ids = np.arange(20)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    present = np.setdiff1d(ids, [3, 7, 11, 12, 15, 18, 19])
    write_set(store, "set_b", present[::-1], _id_vectors(present[::-1], 4, 2.0))
    labels = pd.DataFrame({"id": ids, "label": ids % 3})

    with pytest.warns(stackers.MissingKeysWarning, match=r"7 of 20 label keys are missing from feature set 'set_b'"):
        ts = stackers.join(store, ["set_a", "set_b"], labels=labels)

    assert ts.missing["set_b"] == {"count": 7, "examples": [3, 7, 11, 12, 15]}  # up to 5 examples
    assert ts.missing["set_a"]["count"] == 0
    assert len(ts) == 13
    np.testing.assert_array_equal(ts.keys.column("id").to_numpy(), present)
    np.testing.assert_array_equal(ts.blocks["set_b"][:, 0], present)
    np.testing.assert_array_equal(ts.y, present % 3)


def test_join_how_error_raises_with_count_and_examples(store, write_set):
    ids = np.arange(10)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    write_set(store, "set_b", ids[:8], _id_vectors(ids[:8], 4, 2.0))
    message = r"2 of 10 label keys are missing from feature set 'set_b' \(v1\), e\.g\. 8, 9"
    with pytest.raises(stackers.MissingKeysError, match=message):
        stackers.join(store, ["set_a", "set_b"], labels=pd.DataFrame({"id": ids, "label": ids % 2}), how="error")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_join_reads_labels_from_files(store, tmp_path, suffix, write_set):
    ids = np.arange(30)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    labels = pa.table({"id": ids[::-1], "label": pa.array([f"c{i % 3}" for i in ids[::-1]]),
                       "price": (ids[::-1] * 1.5)})
    path = tmp_path / f"labels{suffix}"
    if suffix == ".parquet":
        pq.write_table(labels, path)
    else:
        labels.to_pandas().to_csv(path, index=False)
    ts = stackers.join(store, ["set_a"], labels=path, columns=["price"])
    np.testing.assert_array_equal(ts.blocks["set_a"][:, 0], ids[::-1])
    np.testing.assert_array_equal(ts.columns["price"].to_numpy(), ids[::-1] * 1.5)
    assert list(ts.y[:3]) == ["c2", "c1", "c0"]


def test_join_takes_labels_as_any_table_featurestore_writes_from(store, write_set):
    ids = np.arange(8)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    as_dict = stackers.join(store, ["set_a"], labels={"id": [6, 2, 4], "label": ["x", "y", "x"]})
    as_batch = stackers.join(store, "set_a", labels=pa.record_batch({"id": [6, 2, 4], "label": ["x", "y", "x"]}))
    for ts in (as_dict, as_batch):
        np.testing.assert_array_equal(ts.blocks["set_a"][:, 0], [6, 2, 4])
        assert list(ts.y) == ["x", "y", "x"]


@pytest.mark.parametrize("kwargs, match", [
    ({"test_size": 1.5}, "The 'test_size' parameter of TrainingSet.split must be a float in (0, 1). Got 1.5 instead."),
    ({"test_size": 0}, "The 'test_size' parameter of TrainingSet.split must be a float in (0, 1). Got 0 instead."),
    ({"stratify": "yes"}, "The 'stratify' parameter of TrainingSet.split must be a bool. Got 'yes' instead."),
    ({"random_state": -1}, "The 'random_state' parameter of TrainingSet.split must be an int in [0, 2**32)"),
])
def test_split_rejects_bad_params(digits_ts, kwargs, match):
    with pytest.raises(stackers.InvalidParameterError, match=re.escape(match)):
        digits_ts.split(**kwargs)


def test_join_without_label_column_is_a_prediction_join(store, write_set):
    ids = np.arange(12)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    ts = stackers.join(store, ["set_a"], labels=pa.table({"id": [5, 1, 9]}))
    assert ts.y is None
    np.testing.assert_array_equal(ts.blocks["set_a"][:, 0], [5, 1, 9])
    everything = stackers.join(store, ["set_a"])  # labels=None: every key of the first set
    assert len(everything) == 12 and everything.y is None


def test_join_casts_label_keys_to_the_store_key_type(store, write_set):
    ids = np.arange(6)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    labels = pa.table({"id": pa.array(["4", "0", "2"]), "label": [1, 0, 1]})
    ts = stackers.join(store, ["set_a"], labels=labels)
    np.testing.assert_array_equal(ts.blocks["set_a"][:, 0], [4, 0, 2])


def test_join_pins_versions_and_records_them(store, write_set):
    ids = np.arange(10)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    write_set(store, "set_a", ids, _id_vectors(ids, 8, 3.0), spec={"encoder": "external:bigger", "metric": "cosine"},
              version="new")
    labels = pd.DataFrame({"id": ids, "label": ids % 2})
    latest = stackers.join(store, ["set_a"], labels=labels)
    pinned = stackers.join(store, ["set_a"], labels=labels, versions={"set_a": 1})
    assert latest.sources["set_a"]["version"] == 2 and latest.blocks["set_a"].shape[1] == 8
    assert pinned.sources["set_a"]["version"] == 1 and pinned.blocks["set_a"].shape[1] == 4


@pytest.mark.parametrize("kwargs, err, match", [
    ({"names": ["nope"]}, featurestore.FeatureSetNotFoundError, "No feature set named 'nope'"),
    ({"how": "left"}, ValueError,
     re.escape("The 'how' parameter of join must be one of {'error', 'inner'}. Got 'left' instead.")),
    ({"key": "sku"}, ValueError, "keyed by \\['id'\\], not \\['sku'\\]"),
    ({"groups": "team"}, ValueError, "groups column 'team' is not in the labels"),
    ({"columns": ["price"]}, ValueError, "columns column 'price' is not in the labels"),
    ({"names": ["set_a", "set_a"]}, ValueError, "must be distinct"),
    ({"names": []}, ValueError, re.escape("The 'names' parameter of join must be distinct feature set names (a "
                                          "non-empty list of strings). Got [] instead.")),
    ({"labels": 42}, TypeError, "labels must be a pyarrow Table"),
    ({"labels": pd.DataFrame({"id": [1, 1], "label": [0, 1]})}, ValueError, "1 duplicate keys"),
    ({"labels": pd.DataFrame({"key": [1], "label": [0]})}, ValueError, "Labels have no key column 'id'"),
])
def test_join_rejects_bad_input(store, kwargs, err, match, write_set):
    ids = np.arange(5)
    write_set(store, "set_a", ids, _id_vectors(ids, 4, 1.0))
    args = {"names": ["set_a"], "labels": pd.DataFrame({"id": ids, "label": ids % 2}), **kwargs}
    with pytest.raises(err, match=match):
        stackers.join(store, args.pop("names"), **args)


def test_training_set_subset_and_groupwise_split(digits_store):
    store, labels = digits_store
    ts = stackers.join(store, ["top", "bottom"], labels=labels, groups="writer", columns=["parity"])
    sub = ts.subset(np.arange(10, 20))
    assert len(sub) == 10 and sub.keys.num_rows == 10 and len(sub.columns) == 10
    np.testing.assert_array_equal(sub.blocks["top"], ts.blocks["top"][10:20])
    train, test = ts.split(test_size=0.25, random_state=0)
    assert len(train) + len(test) == len(ts)
    assert not set(train.groups) & set(test.groups)  # no writer on both sides
    assert 0.15 < len(test) / len(ts) < 0.35
    assert set(test.y) == set(ts.y)  # stratified: every class held out
    ungrouped = stackers.TrainingSet(blocks=ts.blocks, y=ts.y)
    a, b = ungrouped.split(0.2, random_state=1)
    assert len(b) == round(0.2 * len(ts)) or abs(len(b) - 0.2 * len(ts)) <= 1


def test_training_set_validates_shapes():
    with pytest.raises(ValueError, match="Block 'b' has 3 rows but the first block has 4"):
        stackers.TrainingSet(blocks={"a": np.zeros((4, 2)), "b": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="TrainingSet.y has 2 rows but the blocks have 4"):
        stackers.TrainingSet(blocks={"a": np.zeros((4, 2))}, y=[0, 1])
    with pytest.raises(ValueError, match="at least one block"):
        stackers.TrainingSet(blocks={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "rows=4" in repr(stackers.TrainingSet(blocks={"a": np.zeros((4, 2))}, y=[0, 1, 0, 1]))


def test_join_quotes_key_names_that_hold_quotes(store):
    """Key names come from manifests and label files: a quote in one must not change the join's SQL."""
    key = 'we"ird'
    ids = np.arange(20)
    store.write("q", {key: ids, "embedding": _id_vectors(ids, 4, 1.0)}, key=key, spec={"encoder": "external:x"})
    labels = pa.table({key: ids[::-1].copy(), "label": (ids[::-1] % 2).astype(np.int64)})
    ts = stackers.join(store, ["q"], labels=labels, key=key)
    np.testing.assert_array_equal(ts.blocks["q"][:, 0], ids[::-1])

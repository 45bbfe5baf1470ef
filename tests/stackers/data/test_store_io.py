"""A fitted stack and the store: OOF scores written back as a feature set, predictions from stored sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

import stackers
from stackers import StackingClassifier


@pytest.fixture
def fitted(digits_store):
    store, labels = digits_store
    data = stackers.join(store, ["top", "bottom"], labels=labels)
    model = StackingClassifier(meta="logistic", cv=3).fit(data)
    return store, labels, data, model


def test_write_oof_stores_scores_and_folds_keyed_like_the_rows(fitted):
    store, _, data, model = fitted
    fs = stackers.write_oof(model, store, data, "digits_oof")
    assert fs.dim == model.oof_predictions_.shape[1] == 20 and fs.count() == len(data)
    assert fs.spec["encoder"] == "stacker-oof:top+bottom" and fs.spec["metric"] == "dot"
    assert fs.spec["sources"] == {"top": 1, "bottom": 1}
    table = fs.to_arrow()
    by_key = dict(zip(table.column("id").to_pylist(), range(table.num_rows)))
    rows = np.array([by_key[k] for k in data.keys.column("id").to_pylist()])
    np.testing.assert_array_equal(fs.to_numpy()[rows], model.oof_predictions_.astype(np.float32))
    np.testing.assert_array_equal(table.column("fold").to_numpy()[rows], model.fold_ids_)
    # Queryable with SQL like any feature set.
    folds = store.sql("select fold, count(*) as n from digits_oof group by fold order by fold").df()
    assert folds["n"].sum() == len(data) and list(folds["fold"]) == [0, 1, 2]


def test_write_oof_versions_follow_the_spec(fitted):
    store, _, data, model = fitted
    first = stackers.write_oof(model, store, data, "oof")
    again = stackers.write_oof(clone(model).set_params(random_state=1).fit(data), store, data, "oof")
    assert again.version == first.version == 1  # same spec: the refit's rows replace the old ones
    assert again.count() == len(data)
    richer = StackingClassifier(meta="logistic", cv=3, extras=("centroid",)).fit(data)
    third = stackers.write_oof(richer, store, data, "oof")
    # Centroid scores the inner CV keeps (10 per block kept) widen the stored rows: a new spec, a new version.
    assert third.version == 2 and third.dim == len(richer.get_feature_names_out()) > first.dim


def test_write_oof_needs_the_training_rows(fitted):
    store, _, data, model = fitted
    with pytest.raises(ValueError, match="fit the model on this TrainingSet first"):
        stackers.write_oof(model, store, data.subset(np.arange(10)), "bad")
    with pytest.raises(ValueError, match="has no keys"):
        stackers.write_oof(model, store, stackers.TrainingSet(blocks=data.blocks, y=data.y), "bad")


def test_predict_from_store_for_all_or_some_keys(fitted, tmp_path):
    store, labels, data, model = fitted
    everything = stackers.predict_from_store(model, store)
    assert everything.num_rows == len(data)
    assert everything.column_names[:2] == ["id", "prediction"]
    assert everything.column_names[2:] == [f"proba_digit{d}" for d in range(10)]
    some_ids = labels["id"].to_numpy()[:25]
    some = stackers.predict_from_store(stackers.load(model.save(tmp_path / "m")), store, keys=some_ids)
    np.testing.assert_array_equal(some.column("id").to_numpy(), some_ids)
    rows = data.subset(np.arange(25))
    np.testing.assert_array_equal(some.column("prediction").to_numpy(zero_copy_only=False), model.predict(rows))
    proba = np.column_stack([some.column(f"proba_digit{d}").to_numpy() for d in range(10)])
    np.testing.assert_allclose(proba, model.predict_proba(rows), atol=0)


def test_predict_from_store_uses_recorded_versions(fitted, write_set):
    store, labels, data, model = fitted
    ids = labels["id"].to_numpy()
    # A newer, incompatible version of "top" does not disturb a model trained on v1.
    write_set(store, "top", ids, np.zeros((len(ids), 5)), spec={"encoder": "external:other", "metric": "cosine"},
              version="new")
    out = stackers.predict_from_store(model, store, keys=ids[:5])
    assert out.num_rows == 5
    # If the recorded version is gone, the latest is used with a warning, and a dim change is an error.
    model.sources_ = {**model.sources_, "top": {**model.sources_["top"], "version": 9}}
    with pytest.warns(stackers.StaleFeatureSetWarning, match="'top': the model was trained on v9"):
        with pytest.raises(ValueError, match="'top' v2 has dim=5, but the model expects 32"):
            stackers.predict_from_store(model, store, keys=ids[:5])


def test_predict_from_store_passes_table_columns(digits_store):
    store, labels = digits_store
    data = stackers.join(store, ["top", "bottom"], labels=labels, columns=["parity"])
    model = StackingClassifier(meta="lightgbm", cv=3).fit(data)
    with pytest.raises(ValueError, match=r"trained with table columns \['parity'\]; pass keys as a table holding"):
        stackers.predict_from_store(model, store, keys=labels["id"].to_numpy()[:5])
    out = stackers.predict_from_store(model, store, keys=labels[["id", "parity"]].iloc[:5])
    np.testing.assert_array_equal(out.column("prediction").to_numpy(zero_copy_only=False),
                                  model.predict(data.subset(np.arange(5))))


def test_predict_from_store_needs_provenance(store, digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(meta="logistic", cv=2).fit(blocks, y)
    with pytest.raises(ValueError, match="no recorded feature sets"):
        stackers.predict_from_store(model, store)


def test_predict_from_store_reads_keys_from_any_table_or_file(fitted, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store, labels, _, model = fitted
    ids = labels["id"].to_numpy()[:7]
    expected = stackers.predict_from_store(model, store, keys=ids)
    path = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"id": ids}), path)
    for keys in ({"id": ids}, pa.record_batch({"id": ids}), labels[["id"]].iloc[:7], path, str(path), list(ids)):
        assert stackers.predict_from_store(model, store, keys=keys).equals(expected), type(keys)
    with pytest.raises(FileNotFoundError, match="Keys file .* does not exist"):
        stackers.predict_from_store(model, store, keys=tmp_path / "none.parquet")


def test_store_functions_reject_bad_params(fitted):
    store, _, data, model = fitted
    with pytest.raises(stackers.InvalidParameterError,
                       match=r"The 'how' parameter of predict_from_store must be one of \{'error', 'inner'\}"):
        stackers.predict_from_store(model, store, how="outer")
    with pytest.raises(stackers.InvalidParameterError,
                       match=r"The 'training_set' parameter of write_oof must be a TrainingSet. Got \{'top'"):
        stackers.write_oof(model, store, data.blocks, "bad")


def test_write_oof_takes_the_model_first_and_says_so(fitted):
    """One argument order for every call between a model and the store: (model, store, ...)."""
    store, _, data, model = fitted
    with pytest.raises(TypeError, match=r"write_oof\(model, store, \.\.\.\) takes the model first"):
        stackers.write_oof(store, model, data, "oof")

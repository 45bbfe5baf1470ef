"""save/load: identical predictions, a readable manifest, and no pickle anywhere."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import stackers
from featurestore.utils._optional import library_version
from stackers import StackingClassifier, TrainingSet


def _mixed_data(n: int = 300, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    means = rng.standard_normal((3, 8))
    blocks = {
        "a": (means[y] + rng.standard_normal((n, 8))).astype(np.float32),
        "b": (means[y][:, ::-1] + 1.5 * rng.standard_normal((n, 8))).astype(np.float32),
    }
    columns = pd.DataFrame({"store": rng.choice(["north", "south", "east"], size=n), "price": rng.random(n)})
    labels = np.array(["cat", "dog", "eel"], dtype=object)[y]
    return TrainingSet(blocks=blocks, y=labels, columns=columns)


def _assert_no_pickle(path):
    names = sorted(p.name for p in path.iterdir())
    assert set(names) <= {"manifest.json", "arrays.npz", "meta_lightgbm.txt"}
    for file in path.iterdir():
        assert not file.read_bytes().startswith(b"\x80"), f"{file.name} looks like a pickle"
    with zipfile.ZipFile(path / "arrays.npz") as zf:
        for member in zf.namelist():
            assert member.endswith(".npy")
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype != object


@pytest.mark.parametrize("meta, extras", [("logistic", ()), ("lightgbm", ("centroid",))])
def test_save_load_gives_identical_predictions(tmp_path, meta, extras):
    data = _mixed_data()
    train, test = data.split(0.3, random_state=0)
    model = StackingClassifier(meta=meta, extras=extras, cv=3).fit(train)
    path = model.save(tmp_path / "model", metrics={"macro_f1": 0.5})
    loaded = stackers.load(path)

    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    np.testing.assert_array_equal(loaded.decision_function(test), model.decision_function(test))
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    assert loaded.predict(test).dtype == model.predict(test).dtype
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.oof_predictions_, model.oof_predictions_)
    assert loaded.meta_name_ == meta and loaded.blocks_ == model.blocks_ and loaded.columns_ == ["store", "price"]
    _assert_no_pickle(path)
    assert (path / "meta_lightgbm.txt").exists() == (meta == "lightgbm")


def test_manifest_records_what_the_model_was_trained_on(tmp_path, digits_store):
    store, labels = digits_store
    data = stackers.join(store, ["top", "bottom"], labels=labels, columns=["parity"])
    model = StackingClassifier(meta="auto", cv=3).fit(data)
    path = model.save(tmp_path / "digits", metrics={"accuracy": 0.97})
    manifest = json.loads((path / "manifest.json").read_text())

    assert manifest["class"] == "StackingClassifier" and manifest["format"] == "stackers.StackingClassifier"
    assert manifest["params"] == {"base": "logistic", "meta": "auto", "cv": 3, "extras": [], "C": "auto",
                                  "threshold": "auto", "random_state": 0, "n_jobs": None}
    # Each block's tuned probe setting is kept with its arrays, and the loaded probes use it.
    for block in manifest["blocks"]:
        chosen = model.probe_params_[block["name"]]
        assert block["estimators"]["logistic"]["params"] == {"C": chosen["C"], "standardize": chosen["standardize"]}
    assert manifest["probe_params"] == json.loads(json.dumps(model.probe_params_))
    assert manifest["threshold"] is None  # ten classes: no binary threshold
    assert manifest["classes"]["values"] == [f"digit{d}" for d in range(10)]
    assert [(b["name"], b["dim"]) for b in manifest["blocks"]] == [("top", 32), ("bottom", 32)]
    assert manifest["sources"]["top"]["version"] == 1
    assert manifest["sources"]["bottom"]["spec"]["encoder"] == "external:bottom"
    assert manifest["key"] == ["id"] and manifest["columns"] == ["parity"]
    assert manifest["metrics"] == {"accuracy": 0.97}
    assert set(manifest["meta"]["scores"]) == {"logistic", "logistic (balanced)", "lightgbm", "best"}
    assert {"python", "numpy", "scikit-learn", "lightgbm"} <= set(manifest["versions"])
    assert manifest["versions"]["scikit-learn"] == library_version("scikit-learn") is not None
    assert stackers.read_manifest(path) == manifest
    loaded = stackers.load(path)
    assert loaded.sources_ == model.sources_ and loaded.key_ == ["id"]
    np.testing.assert_array_equal(loaded.predict_proba(data), model.predict_proba(data))


def test_save_replaces_a_saved_model_but_nothing_else(tmp_path, digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(meta="logistic", cv=2).fit(blocks, y)
    path = tmp_path / "m"
    model.save(path)
    model.save(path)  # a saved model is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a saved model"):
        model.save(other)
    assert (other / "todo.txt").read_text() == "keep me"


def test_save_refuses_what_it_cannot_store_without_pickle(tmp_path, digits_blocks):
    blocks, y = digits_blocks
    model = StackingClassifier(base=LogisticRegression(max_iter=200), meta="logistic", cv=2).fit(blocks, y)
    with pytest.raises(ValueError, match="Only models with base='logistic' can be saved without pickle"):
        model.save(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        stackers.load(tmp_path / "nothing")

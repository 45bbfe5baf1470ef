"""A fitted stacker and the store: write OOF scores back as a feature set, predict from stored feature sets.

Both keep provenance honest: OOF scores are keyed like the training rows and their spec names the sets they came
from; predictions join the exact feature set versions the model was trained on, and say so when they cannot.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import InvalidTypeError, ValidationError
from featurestore.storage import fixed_size_list
from featurestore.utils import InstanceOf, StrOptions, validate_params
from stackers.data._join import TrainingSet, join, read_labels

__all__ = ["write_oof", "predict_from_store", "StaleFeatureSetWarning"]


class StaleFeatureSetWarning(UserWarning):
    """The feature set version a model was trained on is gone or changed; the latest version is used instead."""


def write_oof(model, store, training_set: TrainingSet, name: str, *, version: Any = "auto"):
    """Store ``model.oof_predictions_`` as feature set ``name``: the OOF scores as the embedding, plus ``fold``.

    ``model`` must have been fitted on ``training_set`` (same rows, same order). The spec records the encoder as
    ``stacker-oof:<blocks>``, metric ``dot``, the classes, score names and source set versions. ``version`` is
    passed to ``store.write``: the default "auto" appends to the version with the same spec (a refit replaces
    its rows) or starts a new one (different blocks, classes or extras). Returns the written FeatureSet.
    """
    validate_params({"training_set": training_set}, {"training_set": [InstanceOf(TrainingSet)]}, "write_oof")
    if not hasattr(store, "write"):  # the order was (store, model) before 0.2: say so rather than fail obscurely
        raise InvalidTypeError(f"write_oof(model, store, ...) takes the model first, as predict_from_store does; got "
                               f"a {type(model).__name__} and a {type(store).__name__}.")
    check_is_fitted(model)
    if training_set.keys is None:
        raise ValidationError("The TrainingSet has no keys; OOF scores can only be stored keyed (build it with join).")
    if len(training_set) != model.oof_predictions_.shape[0]:
        raise ValidationError(
            f"The model's OOF predictions have {model.oof_predictions_.shape[0]} rows but the TrainingSet has "
            f"{len(training_set)}; fit the model on this TrainingSet first."
        )
    if model.key_ and model.key_ != training_set.key:
        raise ValidationError(f"The model was fitted on rows keyed by {model.key_}, not {training_set.key}.")
    oof = model.oof_predictions_
    table = training_set.keys
    table = table.append_column("embedding", fixed_size_list(np.asarray(oof, dtype=np.float32)))
    table = table.append_column("fold", pa.array(model.fold_ids_.astype(np.int32)))
    spec = {
        "encoder": "stacker-oof:" + "+".join(model.blocks_),
        "metric": "dot",
        "dim": int(oof.shape[1]),
        "dtype": "float32",
        "classes": [str(c) for c in model.classes_],
        "features": [str(n) for n in model.get_feature_names_out()],
        "base": model.base if isinstance(model.base, str) else type(model.base).__name__,
        "extras": list(model.extras),
        "n_splits": int(model.n_splits_),
        "sources": {n: s.get("version") for n, s in model.sources_.items()},
    }
    key = training_set.key
    written = store.write(name, table, key=key[0] if len(key) == 1 else key, spec=spec, version=version)
    return store.get(name, version=written.get("version"))


def _resolve_versions(model, store) -> dict[str, int]:
    """The recorded version of each training feature set, or the latest one (with a warning) when it changed."""
    versions = {}
    for name, recorded in model.sources_.items():
        want = recorded.get("version")
        fs, why = None, None
        try:
            fs = store.get(name, version=want)
        except LookupError as exc:  # FeatureSetNotFoundError and friends
            why = f"v{want} is no longer in the store ({exc})"
        if fs is not None and recorded.get("spec") is not None and dict(fs.spec) != recorded["spec"]:
            why, fs = f"v{want} now has a different spec than at training time", None
        if fs is None:
            latest = store.get(name)
            same = "the same as" if dict(latest.spec) == recorded.get("spec") else "different from"
            warnings.warn(
                f"Feature set {name!r}: the model was trained on {why}; predicting from the latest version "
                f"v{latest.version} instead, whose spec is {same} the recorded one.",
                StaleFeatureSetWarning,
                stacklevel=3,
            )
            fs = latest
        if int(fs.dim) != model.blocks_[name]:
            raise ValidationError(
                f"Feature set {name!r} v{fs.version} has dim={fs.dim}, but the model expects {model.blocks_[name]}."
            )
        versions[name] = int(fs.version)
    return versions


def _keys_table(keys: Any, key: list[str]) -> pa.Table:
    """The keys to predict for as a table: a path or a table is read as one; anything else is a sequence of values
    of a single-column key."""
    if isinstance(keys, (str, os.PathLike, pa.Table, pa.RecordBatch, Mapping)) or hasattr(keys, "columns"):
        return read_labels(keys, what="keys")  # pandas and polars frames have columns; their Series do not
    if len(key) != 1:
        raise ValidationError(f"The model is keyed by {key}; pass keys as a table with those columns.")
    values = keys if isinstance(keys, (np.ndarray, pa.Array, pa.ChunkedArray)) else list(keys)
    return pa.table({key[0]: pa.array(values)})


def predict_from_store(model, store, keys: Any = None, *, how: str = "inner") -> pa.Table:
    """Predict for ``keys`` (all keys when None) from the feature sets and versions ``model`` was trained on.

    ``keys`` is None, a sequence of key values (single-column keys), a .parquet/.csv path, or a table (pyarrow,
    pandas, polars, a dict of columns) with the key column(s) and, when the model was trained with table columns,
    those columns too. Returns a pyarrow Table of the key column(s), ``prediction`` and one ``proba_<class>`` column
    per class, in the keys' order.
    """
    validate_params({"how": how}, {"how": [StrOptions({"inner", "error"})]}, "predict_from_store")
    check_is_fitted(model)
    if not model.sources_:
        raise ValidationError(
            "This model has no recorded feature sets: fit it on a TrainingSet from stackers.join "
            "to predict from a store."
        )
    key = list(model.key_)
    if keys is not None:
        keys = _keys_table(keys, key)
    if model.columns_:
        given = [] if keys is None else keys.column_names
        absent = [c for c in model.columns_ if c not in given]
        if absent:
            raise ValidationError(
                f"The model was trained with table columns {model.columns_}; pass keys as a table holding "
                f"{key + model.columns_} (missing: {absent})."
            )
    versions = _resolve_versions(model, store)
    names = list(model.blocks_)
    data = join(store, names, keys, key=key, label=None, columns=model.columns_ or None, how=how,
                versions=versions)
    proba = model.predict_proba(data)
    pred = model.classes_[np.argmax(proba, axis=1)]
    out = data.keys
    out = out.append_column("prediction", pa.array(pred.tolist() if pred.dtype == object else pred))
    for j, c in enumerate(model.classes_):
        out = out.append_column(f"proba_{c}", pa.array(proba[:, j]))
    return out

"""Save and load a fitted StackingClassifier as plain files: JSON, ``.npz`` arrays and LightGBM model text.

No pickle anywhere: loading a model must not run code from the file. The directory holds

    manifest.json        class, params, classes, blocks and dims, feature sets + versions + specs, metrics, versions
    arrays.npz           probe coefficients, scaler means/scales, centroids, OOF predictions (allow_pickle=False)
    meta_lightgbm.txt    the LightGBM meta booster, when that is the meta learner

A loaded model predicts bit for bit what the saved one did.
"""

from __future__ import annotations

import json
import platform
import shutil
import uuid
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._meta import LightGBMMeta, LogisticMeta
from ._probes import CentroidSimilarity, LogisticProbe

__all__ = ["save", "load", "read_manifest", "FORMAT"]

FORMAT = "stackers.StackingClassifier"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
LGBM_FILE = "meta_lightgbm.txt"


def json_default(value: Any) -> Any:
    """numpy scalars and arrays, sets and paths as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot write {type(value).__name__} as JSON: {value!r}")


def _library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("featurestore", "numpy", "scikit-learn", "lightgbm", "pandas", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _params_for_manifest(model) -> dict[str, Any]:
    params = model.get_params(deep=False)
    if not isinstance(params["base"], str):
        raise ValueError(
            f"Only models with base='logistic' can be saved without pickle; this one has base={params['base']!r}."
        )
    if not isinstance(params["cv"], Integral):
        params["cv_splitter"] = repr(params["cv"])
        params["cv"] = int(model.n_splits_)
    if params["random_state"] is not None and not isinstance(params["random_state"], Integral):
        params["random_state_repr"] = repr(params["random_state"])
        params["random_state"] = None
    params["extras"] = list(params["extras"])
    return params


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    return {"values": classes.tolist(), "dtype": classes.dtype.str if classes.dtype != object else "object"}


def _decode_classes(spec: dict[str, Any]) -> np.ndarray:
    if spec["dtype"] == "object":
        return np.array(spec["values"], dtype=object)
    return np.array(spec["values"], dtype=np.dtype(spec["dtype"]))


def save(model, path, *, metrics: Any = None) -> Path:
    """Write fitted ``model`` to directory ``path`` (replaced if it holds a saved model); returns the path."""
    check_is_fitted(model)
    params = _params_for_manifest(model)
    if metrics is not None and hasattr(metrics, "to_dict"):
        metrics = metrics.to_dict()

    arrays: dict[str, np.ndarray] = {}
    blocks = []
    for i, (name, dim) in enumerate(model.blocks_.items()):
        estimators = {}
        for kind, est in model.base_estimators_[name].items():
            prefix = f"base{i}.{kind}."
            if isinstance(est, LogisticProbe):
                fields = {"mean": est.mean_, "scale": est.scale_, "coef": est.coef_, "intercept": est.intercept_}
            elif isinstance(est, CentroidSimilarity):
                fields = {"centroids": est.centroids_}
            else:  # pragma: no cover - guarded by _params_for_manifest
                raise ValueError(f"Cannot save base learner {est!r} without pickle.")
            fields["classes"] = np.asarray(est.classes_)
            arrays.update({prefix + k: np.asarray(v) for k, v in fields.items()})
            estimators[kind] = {"class": type(est).__name__, "prefix": prefix}
        blocks.append({"name": name, "dim": int(dim), "estimators": estimators})

    meta_state, meta_arrays = model.meta_estimator_.state()
    arrays.update({f"meta.{k}": np.asarray(v) for k, v in meta_arrays.items()})
    arrays["oof_predictions"] = model.oof_predictions_
    arrays["fold_ids"] = model.fold_ids_
    for key, value in arrays.items():
        if value.dtype == object:
            raise ValueError(f"Array {key!r} has object dtype and cannot be saved without pickle.")

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "classes": _encode_classes(model.classes_),
        "blocks": blocks,
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if not hasattr(model, "feature_names_in_") else list(model.feature_names_in_),
        "columns": list(model.columns_),
        "key": list(model.key_),
        "sources": model.sources_,
        "n_splits": int(model.n_splits_),
        "oof_feature_names": list(model.oof_feature_names_),
        "meta": {"name": model.meta_name_, "scores": model.meta_scores_, "state": meta_state},
        "metrics": metrics,
        "arrays": ARRAYS,
        "versions": _library_versions(),
    }
    text = json.dumps(manifest, indent=2, default=json_default, allow_nan=False)

    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST).exists())):
        raise FileExistsError(f"{str(path)!r} exists and is not a saved model; refusing to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        np.savez(tmp / ARRAYS, **arrays)
        if isinstance(model.meta_estimator_, LightGBMMeta):
            (tmp / LGBM_FILE).write_text(model.meta_estimator_.model_text_)
        (tmp / MANIFEST).write_text(text)
        # Swap in the finished directory: a crash leaves the old model or the new one, not half of each.
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path) -> dict[str, Any]:
    """The manifest of a saved model, checked to be one."""
    path = Path(path)
    file = path / MANIFEST
    if not file.exists():
        raise FileNotFoundError(f"No saved model at {str(path)!r}: {MANIFEST} is missing.")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{str(file)!r} is not a stackers model manifest (format={manifest.get('format')!r}).")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was saved by a newer stackers (format {manifest['format_version']}); upgrade to load it."
        )
    return manifest


def load(path):
    """Load a model written by ``StackingClassifier.save``; arrays are read with ``allow_pickle=False``."""
    from ._stacking import StackingClassifier

    path = Path(path)
    manifest = read_manifest(path)
    params = {k: v for k, v in manifest["params"].items() if k in StackingClassifier._get_param_names()}
    params["extras"] = tuple(params["extras"])
    model = StackingClassifier(**params)
    with np.load(path / manifest["arrays"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    model.classes_ = _decode_classes(manifest["classes"])
    model.blocks_ = {b["name"]: int(b["dim"]) for b in manifest["blocks"]}
    model.n_features_in_ = int(manifest["n_features_in"])
    if manifest.get("feature_names_in") is not None:
        model.feature_names_in_ = np.asarray(manifest["feature_names_in"], dtype=object)
    model.base_estimators_ = {}
    for b in manifest["blocks"]:
        ests = {}
        for kind, ref in b["estimators"].items():
            get = lambda field, p=ref["prefix"]: arrays[p + field]  # noqa: E731
            if ref["class"] == "LogisticProbe":
                est = LogisticProbe(C=model.C)
                est.mean_, est.scale_ = get("mean"), get("scale")
                est.coef_, est.intercept_ = get("coef"), get("intercept")
                est.n_features_in_ = int(b["dim"])
            elif ref["class"] == "CentroidSimilarity":
                est = CentroidSimilarity()
                est.centroids_ = get("centroids")
                est.n_features_in_ = int(b["dim"])
            else:
                raise ValueError(f"Unknown base learner class {ref['class']!r} in {str(path)!r}.")
            est.classes_ = get("classes")
            ests[kind] = est
        model.base_estimators_[b["name"]] = ests

    meta = manifest["meta"]
    meta_arrays = {k[len("meta."):]: v for k, v in arrays.items() if k.startswith("meta.")}
    if meta["name"] == "logistic":
        model.meta_estimator_ = LogisticMeta.from_state(meta["state"], meta_arrays)
    elif meta["name"] == "lightgbm":
        model.meta_estimator_ = LightGBMMeta.from_state(
            meta["state"], meta_arrays, model_text=(path / LGBM_FILE).read_text()
        )
    else:
        raise ValueError(f"Unknown meta learner {meta['name']!r} in {str(path)!r}.")
    model.meta_name_ = meta["name"]
    model.meta_scores_ = dict(meta["scores"])
    model.oof_predictions_ = arrays["oof_predictions"]
    model.fold_ids_ = arrays["fold_ids"]
    model.oof_feature_names_ = list(manifest["oof_feature_names"])
    model.n_splits_ = int(manifest["n_splits"])
    model.columns_ = list(manifest["columns"])
    model.key_ = list(manifest["key"])
    model.sources_ = dict(manifest["sources"])
    return model

"""The StackingClassifier's saved format: JSON, ``.npz`` arrays and LightGBM model text, no pickle anywhere.

    manifest.json        class, params, classes, blocks and dims, feature sets + versions + specs, metrics, versions
    arrays.npz           probe coefficients, scaler means/scales, centroids, OOF predictions (allow_pickle=False)
    meta_lightgbm.txt    the LightGBM meta booster, when that is the meta learner

A model fitted with ``align`` also keeps each block's aligner (``Whitening``: mean, matrix; ``CORAL``: mean_source,
mean_target, matrix) under ``align<i>.`` in arrays.npz, described by the block's ``align`` entry in the manifest.

A loaded model predicts bit for bit what the saved one did. Loading trusts none of the folder: every array's name,
dtype and shape is derived from the manifest (:func:`_layout`) and checked in the ``.npz`` headers before a byte of
data is read (``stackers.persist``), and the LightGBM text is checked in Python before LightGBM, whose parser
crashes on bad input, sees it. The folder itself (atomic install, recovery after a kill) is ``stackers.persist``'s.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import ValidationError
from featurestore.utils import validate_params
from stackers.classify._align import ALIGNERS
from stackers.classify._meta import LightGBMMeta, LogisticMeta, PassthroughMeta
from stackers.classify._probes import CentroidSimilarity, KNeighborsVotes, LogisticProbe
from stackers.errors import CorruptModelError
from stackers.persist import (
    ARRAYS,
    FLOAT,
    INT,
    MANIFEST,
    MAX_LEAVES,
    STACKER_FORMAT,
    read_manifest,
    read_model_text,
    read_npz,
    save_folder,
)

__all__ = ["FORMAT", "load_stacker", "save_stacker"]

FORMAT = STACKER_FORMAT
FORMAT_VERSION = 3  # 2: tuned probes per block, a decision threshold, the "best" passthrough meta learner
# 3: per-block alignment (align="whiten" / "coral"); a model without alignment is still written as format 2, so
# older stackers keep loading it, while one that needs its aligners to predict is refused by them.
_ALIGN_FIELDS = {"Whitening": ("mean", "matrix"), "CORAL": ("mean_source", "mean_target", "matrix")}
_ALIGN_FITTED = {"Whitening": ("shrinkage_",), "CORAL": ("shrinkage_source_", "shrinkage_target_")}
LGBM_FILE = "meta_lightgbm.txt"
MAX_TREES = 10**6
_ESTIMATOR_CLASS = {"logistic": "LogisticProbe", "centroid": "CentroidSimilarity", "knn": "KNeighborsVotes"}
_FLOAT, _INT = FLOAT, INT


def _params_for_manifest(model) -> dict[str, Any]:
    params = model.get_params(deep=False)
    if not isinstance(params["base"], str):
        raise ValidationError(
            f"Only models with base='logistic' can be saved without pickle; this one has base={params['base']!r}."
        )
    if not isinstance(params["meta"], str):
        raise ValidationError(
            f"This model's meta learner is a custom estimator ({params['meta']!r}); it cannot be saved without "
            "pickle. Use meta='auto', 'logistic', 'lightgbm' or 'best' for a model you want to save."
        )
    if not isinstance(params["cv"], Integral):
        params["cv_splitter"] = repr(params["cv"])
        params["cv"] = int(model.n_splits_)
    if params["random_state"] is not None and not isinstance(params["random_state"], Integral):
        params["random_state_repr"] = repr(params["random_state"])
        params["random_state"] = None
    params["extras"] = list(params["extras"])
    if params.get("align") is None:
        params.pop("align", None)  # an unaligned model's manifest stays exactly format 2
    return params


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    return {"values": classes.tolist(), "dtype": classes.dtype.str if classes.dtype != object else "object"}


def _decode_classes(spec: dict[str, Any]) -> np.ndarray:
    if spec["dtype"] == "object":
        return np.array(spec["values"], dtype=object)
    dtype = np.dtype(spec["dtype"])
    if dtype.kind not in "biufUS" or dtype.itemsize > 4096:
        raise ValidationError(f"classes dtype {spec['dtype']!r} is not a number or string dtype")
    return np.array(spec["values"], dtype=dtype)


# -- save ----------------------------------------------------------------------------------------------------------
def save_stacker(model: Any, path: str | os.PathLike[str], *, metrics: Any = None) -> Path:
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
            elif isinstance(est, KNeighborsVotes):
                fields = {"X": est.X_, "y": est.y_}
            else:  # pragma: no cover - guarded by _params_for_manifest
                raise ValidationError(f"Cannot save base learner {est!r} without pickle.")
            fields["classes"] = np.asarray(est.classes_)
            arrays.update({prefix + k: np.asarray(v) for k, v in fields.items()})
            estimators[kind] = {"class": type(est).__name__, "prefix": prefix}
            if isinstance(est, LogisticProbe):
                estimators[kind]["params"] = {"C": float(est.C), "standardize": bool(est.standardize)}
            if isinstance(est, KNeighborsVotes):
                estimators[kind]["params"] = {"n_neighbors": int(est.n_neighbors)}
        blocks.append({"name": name, "dim": int(dim), "estimators": estimators})
        aligner = (getattr(model, "aligners_", None) or {}).get(name)
        if aligner is not None:
            cls = type(aligner).__name__
            arrays.update({f"align{i}.{f}": np.asarray(getattr(aligner, f + "_"), dtype=np.float64)
                           for f in _ALIGN_FIELDS[cls]})
            blocks[-1]["align"] = {"class": cls, "prefix": f"align{i}.", "params": aligner.get_params(),
                                   "fitted": {f: float(getattr(aligner, f)) for f in _ALIGN_FITTED[cls]}}

    meta_state, meta_arrays = model.meta_estimator_.state()
    arrays.update({f"meta.{k}": np.asarray(v) for k, v in meta_arrays.items()})
    arrays["oof_predictions"] = model.oof_predictions_
    arrays["fold_ids"] = model.fold_ids_
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if getattr(model, "aligners_", None) else 2,
        "class": type(model).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "classes": _encode_classes(model.classes_),
        "blocks": blocks,
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if not hasattr(model, "feature_names_in_") else list(model.feature_names_in_),
        "columns": list(model.columns_),
        "key": list(model.key_),
        "n_splits": int(model.n_splits_),
        "oof_feature_names": list(model.oof_feature_names_),
        "meta": {"name": model.meta_name_, "scores": model.meta_scores_, "state": meta_state},
        "threshold": model.threshold_,
        "class_weights": None if model.class_weights_ is None else [float(w) for w in model.class_weights_],
        "probe_params": model.probe_params_,
        "pruned": list(getattr(model, "pruned_", [])),
        "metrics": metrics,
        "arrays": ARRAYS,  # always this name: kept for readers of older versions, checked (never followed) by load
    }
    texts = {LGBM_FILE: model.meta_estimator_.model_text_} if isinstance(model.meta_estimator_, LightGBMMeta) else {}
    return save_folder(path, manifest, sources=model.sources_, arrays=arrays, texts=texts)


# -- load ----------------------------------------------------------------------------------------------------------
def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise CorruptModelError(f"{what} must be an integer in [{low}, {high}]. Got {value!r} instead")
    return int(value)


def _layout(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the manifest says the arrays are: name -> (dtype kinds, shape), ``None`` standing for the row count."""
    classes = manifest["classes"]["values"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise CorruptModelError(f"classes must list at least 2 classes. Got {classes!r:.80} instead")
    k = len(classes)
    n_out = 1 if k == 2 else k
    params = manifest["params"]
    if params.get("base") != "logistic":
        raise CorruptModelError(f"params.base must be 'logistic'. Got {params.get('base')!r} instead")
    extras = params.get("extras")
    if not isinstance(extras, list) or not set(extras) <= {"centroid", "knn"} or len(set(extras)) != len(extras):
        raise CorruptModelError(f"params.extras must list distinct names from ['centroid', 'knn']. Got {extras!r} instead")
    kinds = ["logistic", *extras]
    width = {"logistic": n_out, "centroid": k, "knn": k}
    n_oof = 0
    align = params.get("align")
    if align is not None and align not in ALIGNERS:
        raise CorruptModelError(f"params.align must be null or one of {sorted(ALIGNERS)}. Got {align!r} instead")

    layout: dict[str, tuple[str, tuple]] = {}
    blocks = manifest["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise CorruptModelError("blocks must be a non-empty list")
    for i, b in enumerate(blocks):
        if not isinstance(b.get("name"), str):
            raise CorruptModelError(f"blocks[{i}].name must be a string")
        d = _int(b.get("dim"), f"blocks[{i}].dim", 1, 1 << 24)
        ests = b.get("estimators")
        # The extras the inner CV kept for this block (pruned ones are absent), in the order of `kinds`.
        if not isinstance(ests, dict) or "logistic" not in ests or list(ests) != [x for x in kinds if x in ests]:
            raise CorruptModelError(f"blocks[{i}].estimators must hold 'logistic' and some of {kinds[1:]}, in that order")
        n_oof += sum(width[kind] for kind in ests)
        for kind in ests:
            ref = ests[kind]
            if ref.get("class") != _ESTIMATOR_CLASS[kind] or ref.get("prefix") != f"base{i}.{kind}.":
                raise CorruptModelError(f"blocks[{i}].estimators.{kind} must be class {_ESTIMATOR_CLASS[kind]!r} with "
                                 f"prefix 'base{i}.{kind}.'")
            p = f"base{i}.{kind}."
            layout[p + "classes"] = (_INT, (k,))
            if kind == "logistic":
                layout.update({p + "mean": (_FLOAT, (d,)), p + "scale": (_FLOAT, (d,)),
                               p + "coef": (_FLOAT, (n_out, d)), p + "intercept": (_FLOAT, (n_out,))})
            elif kind == "centroid":
                layout[p + "centroids"] = (_FLOAT, (k, d))
            else:
                layout.update({p + "X": (_FLOAT, ("n_rows", d)), p + "y": (_INT, ("n_rows",))})
                _int((ref.get("params") or {}).get("n_neighbors"), f"blocks[{i}].estimators.knn.params.n_neighbors",
                     1, 1 << 31)
        layout.update(_align_layout(b.get("align"), align, i, d))
    names = manifest["oof_feature_names"]
    if not isinstance(names, list) or len(names) != n_oof:
        raise CorruptModelError(f"oof_feature_names must list {n_oof} names ({len(blocks)} blocks x {kinds}, {k} classes)")
    layout["oof_predictions"] = (_FLOAT, ("n_rows", n_oof))
    layout["fold_ids"] = (_INT, ("n_rows",))

    meta = manifest["meta"]
    state = meta["state"]
    if _int(state.get("n_classes"), "meta.state.n_classes", 2, 1 << 31) != k:
        raise CorruptModelError(f"meta.state.n_classes is {state['n_classes']} but the manifest lists {k} classes")
    columns = state["columns"]
    if not isinstance(columns, list) or [c.get("name") for c in columns] != manifest["columns"]:
        raise CorruptModelError(f"meta.state.columns must describe the columns {manifest['columns']!r}")
    width_cols = 0
    for c in columns:
        if c.get("kind") not in ("numeric", "categorical") or not isinstance(c.get("categories"), list):
            raise CorruptModelError(f"meta.state.columns entry {c!r:.80} is not a numeric or categorical column")
        width_cols += 1 if c["kind"] == "numeric" else len(c["categories"])
    out = {"layout": layout, "k": k, "n_oof": n_oof}
    if meta.get("name") == "logistic":
        p = n_oof + width_cols
        if any(not isinstance(j, int) or not 0 <= j < n_oof for j in state["proba_columns"]):
            raise CorruptModelError(f"meta.state.proba_columns must index the {n_oof} score columns")
        layout.update({"meta.mean": (_FLOAT, (p,)), "meta.scale": (_FLOAT, (p,)), "meta.coef": (_FLOAT, (n_out, p)),
                       "meta.intercept": (_FLOAT, (n_out,)), "meta.classes": (_INT, (k,))})
        if state.get("class_weight") not in (None, "balanced"):
            raise CorruptModelError(f"meta.state.class_weight must be null or 'balanced'. Got {state.get('class_weight')!r}")
    elif meta.get("name") == "best":
        cols = state.get("proba_columns")
        if (not isinstance(cols, list) or len(cols) != n_out
                or any(not isinstance(j, int) or not 0 <= j < n_oof for j in cols)):
            raise CorruptModelError(f"meta.state.proba_columns must list {n_out} of the {n_oof} score columns")
    elif meta.get("name") == "lightgbm":
        n_est = _int(state.get("n_estimators"), "meta.state.n_estimators", 1, MAX_TREES)
        leaves = _int(state.get("num_leaves"), "meta.state.num_leaves", 2, MAX_LEAVES)
        out.update(n_features=n_oof + len(columns), max_trees=min(n_est * n_out, MAX_TREES), max_leaves=leaves)
    else:
        raise CorruptModelError(f"Unknown meta learner {meta.get('name')!r}")
    return out


def _align_layout(ref: Any, align: str | None, i: int, d: int) -> dict[str, tuple[str, tuple]]:
    """The arrays of block ``i``'s aligner: present exactly when ``params.align`` is set, of its class."""
    if align is None:
        if ref is not None:
            raise CorruptModelError(f"blocks[{i}].align is set but params.align is null")
        return {}
    cls = ALIGNERS[align].__name__
    if not isinstance(ref, dict) or ref.get("class") != cls or ref.get("prefix") != f"align{i}.":
        raise CorruptModelError(f"blocks[{i}].align must be class {cls!r} with prefix 'align{i}.' (params.align={align!r})")
    params, fitted = ref.get("params"), ref.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict) or sorted(fitted) != sorted(_ALIGN_FITTED[cls]):
        raise CorruptModelError(f"blocks[{i}].align must hold params and the fitted {list(_ALIGN_FITTED[cls])}")
    aligner = ALIGNERS[align]
    if not set(params) <= set(aligner._get_param_names()):
        raise CorruptModelError(f"blocks[{i}].align.params {params!r:.80} are not {cls} parameters")
    validate_params(params, aligner._parameter_constraints, cls)
    for name, value in fitted.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise CorruptModelError(f"blocks[{i}].align.fitted.{name} must be a number in [0, 1]. Got {value!r} instead")
    shapes = {"mean": (d,), "mean_source": (d,), "mean_target": (d,), "matrix": (d, d)}
    return {f"align{i}.{f}": (_FLOAT, shapes[f]) for f in _ALIGN_FIELDS[cls]}


def _check_arrays(file: Path, arrays: dict[str, np.ndarray], *, n_splits: int, k: int) -> dict[str, np.ndarray]:
    """What the headers cannot say: class and fold indices in range."""
    where = repr(str(file))
    for key, a in arrays.items():
        if key.endswith(".knn.y") and a.size and (a.min() < 0 or a.max() >= k):
            raise CorruptModelError(f"{where} array {key!r} must hold class indices in [0, {k - 1}].")
        if key.endswith("classes") and not np.array_equal(a, np.arange(k)):
            raise CorruptModelError(f"{where} array {key!r} must be the class indices 0..{k - 1}.")
    folds = arrays["fold_ids"]
    if folds.size and (folds.min() < 0 or folds.max() >= n_splits):
        raise CorruptModelError(f"{where} array 'fold_ids' must hold fold numbers in [0, {n_splits - 1}].")
    return arrays


def load_stacker(path: str | os.PathLike[str], cls: type) -> Any:
    """A ``cls`` (``StackingClassifier``) from a folder written by :func:`save_stacker`, arrays read with
    ``allow_pickle=False``.

    Everything is checked against the manifest first; a folder that does not hold a consistent saved model raises
    ``CorruptModelError`` (a ``ValueError``) naming the file and what is wrong.
    """
    path = Path(path)
    manifest = read_manifest(path, formats=(FORMAT,), versions={FORMAT: FORMAT_VERSION})
    mfile = repr(str(path / MANIFEST))
    if manifest.get("arrays", ARRAYS) != ARRAYS:
        raise CorruptModelError(f"{mfile} names arrays file {manifest['arrays']!r}; a saved model keeps its arrays in "
                         f"{ARRAYS!r} inside its own folder.")
    try:
        shape = _layout(manifest)
        n_splits = _int(manifest["n_splits"], "n_splits", 1, 1 << 31)
        classes = _decode_classes(manifest["classes"])
    except ValueError as exc:
        raise CorruptModelError(f"{mfile} does not describe a model this stackers can load: {exc}.") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise CorruptModelError(f"{mfile} is malformed: {type(exc).__name__} {exc}.") from None
    arrays = _check_arrays(path / ARRAYS, read_npz(path / ARRAYS, shape["layout"])[0], n_splits=n_splits, k=shape["k"])
    model_text = None
    if manifest["meta"]["name"] == "lightgbm":
        model_text = read_model_text(path / LGBM_FILE, n_features=shape["n_features"], n_classes=shape["k"],
                                     max_trees=shape["max_trees"], max_leaves=shape["max_leaves"])
    try:
        return _build(cls, manifest, classes, arrays, model_text)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CorruptModelError(f"{mfile} is malformed: {type(exc).__name__} {exc}.") from None


def _build(cls, manifest: dict[str, Any], classes: np.ndarray, arrays: dict[str, np.ndarray],
           model_text: str | None):
    params = {k: v for k, v in manifest["params"].items() if k in cls._get_param_names()}
    params["extras"] = tuple(params["extras"])
    if manifest.get("format_version", 1) < 2:
        params["threshold"] = None  # format 1 models predict by argmax
    model = cls(**params)
    model.classes_ = classes
    model.blocks_ = {b["name"]: int(b["dim"]) for b in manifest["blocks"]}
    model.n_features_in_ = int(manifest["n_features_in"])
    if manifest.get("feature_names_in") is not None:
        model.feature_names_in_ = np.asarray(manifest["feature_names_in"], dtype=object)
    threshold = manifest.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0 or len(model.classes_) != 2):
        raise CorruptModelError(f"threshold must be null or, for a binary model, a number in [0, 1]. Got {threshold!r}")
    model.threshold_ = None if threshold is None else float(threshold)
    weights = manifest.get("class_weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(model.classes_) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf for w in weights)):
        raise CorruptModelError(f"class_weights must be null or one positive number per class. Got {weights!r:.80}")
    model.class_weights_ = None if weights is None else np.asarray(weights, dtype=np.float64)
    model.probe_params_ = dict(manifest.get("probe_params") or {})
    model.pruned_ = [str(g) for g in manifest.get("pruned") or []]
    model.base_estimators_ = {}
    for b in manifest["blocks"]:
        ests = {}
        for kind, ref in b["estimators"].items():
            get = lambda field, p=ref["prefix"]: arrays[p + field]  # noqa: E731
            if ref["class"] == "LogisticProbe":
                p = ref.get("params") or {"C": model.C, "standardize": True}  # format 1: one C for every block
                est = LogisticProbe(C=float(p["C"]), standardize=bool(p["standardize"]))
                est.mean_, est.scale_ = get("mean"), get("scale")
                est.coef_, est.intercept_ = get("coef"), get("intercept")
            elif ref["class"] == "CentroidSimilarity":
                est = CentroidSimilarity()
                est.centroids_ = get("centroids")
            else:
                est = KNeighborsVotes(n_neighbors=int(ref["params"]["n_neighbors"]))
                est.X_, est.y_ = get("X"), get("y")
            est.n_features_in_ = int(b["dim"])
            est.classes_ = get("classes")
            ests[kind] = est
        model.base_estimators_[b["name"]] = ests
    model.aligners_ = {}
    for b in manifest["blocks"]:
        ref = b.get("align")
        if ref is None:
            continue
        aligner = ALIGNERS[model.align](**ref["params"])
        for field in _ALIGN_FIELDS[ref["class"]]:
            setattr(aligner, field + "_", arrays[ref["prefix"] + field])
        for name, value in ref["fitted"].items():
            setattr(aligner, name, float(value))
        aligner.n_features_in_ = int(b["dim"])
        model.aligners_[b["name"]] = aligner

    meta = manifest["meta"]
    meta_arrays = {k[len("meta."):]: v for k, v in arrays.items() if k.startswith("meta.")}
    if meta["name"] == "logistic":
        model.meta_estimator_ = LogisticMeta.from_state(meta["state"], meta_arrays)
    elif meta["name"] == "best":
        model.meta_estimator_ = PassthroughMeta.from_state(meta["state"], meta_arrays)
    else:
        model.meta_estimator_ = LightGBMMeta.from_state(meta["state"], meta_arrays, model_text=model_text)
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

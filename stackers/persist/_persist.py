"""Save and load a fitted StackingClassifier as plain files: JSON, ``.npz`` arrays and LightGBM model text.

No pickle anywhere: loading a model must not run code from the file. The directory holds

    manifest.json        class, params, classes, blocks and dims, feature sets + versions + specs, metrics, versions
    arrays.npz           probe coefficients, scaler means/scales, centroids, OOF predictions (allow_pickle=False)
    meta_lightgbm.txt    the LightGBM meta booster, when that is the meta learner

A model fitted with ``align`` also keeps each block's aligner (``Whitening``: mean, matrix; ``CORAL``: mean_source,
mean_target, matrix) under ``align<i>.`` in arrays.npz, described by the block's ``align`` entry in the manifest.

A loaded model predicts bit for bit what the saved one did.

A model folder is input like any other, so ``load`` trusts none of it: the file names are fixed (the manifest's
``arrays`` field must say ``arrays.npz``; nothing is followed out of the folder, symbolic links are refused), every
array's name, dtype and shape is derived from the manifest and checked in the ``.npz`` member headers before a byte
of data is read (members must be stored uncompressed, so no member can expand beyond the file's size), and the
LightGBM text is checked in Python (``_lgbm_text``) before LightGBM, whose parser crashes on bad input, sees it.

``save`` writes a sibling ``.<name>.tmp-*`` folder and swaps it in with two renames. A process killed between them
leaves no folder at ``path``; ``load`` then finishes the swap (the finished new model, else the old one) and the
next ``save`` removes the leftovers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import stat
import uuid
import warnings
import zipfile
from datetime import datetime, timezone
from numbers import Integral
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from featurestore.storage._layout import models_dir, sets_dir
from featurestore.utils._optional import library_version
from featurestore._store import MARKER as STORE_MARKER
from featurestore.utils._validation import validate_params

from stackers.classify._align import ALIGNERS
from stackers.persist._lgbm_text import MAX_LEAVES, check_model_text
from stackers.classify._meta import LightGBMMeta, LogisticMeta, PassthroughMeta
from stackers.classify._probes import CentroidSimilarity, KNeighborsVotes, LogisticProbe
from featurestore.errors import InvalidTypeError, MissingFileError, TargetExistsError, ValidationError

__all__ = ["save", "load", "read_manifest", "FORMAT"]

FORMAT = "stackers.StackingClassifier"
FORMAT_VERSION = 3  # 2: tuned probes per block, a decision threshold, the "best" passthrough meta learner
# 3: per-block alignment (align="whiten" / "coral"); a model without alignment is still written as format 2, so
# older stackers keep loading it, while one that needs its aligners to predict is refused by them.
_ALIGN_FIELDS = {"Whitening": ("mean", "matrix"), "CORAL": ("mean_source", "mean_target", "matrix")}
_ALIGN_FITTED = {"Whitening": ("shrinkage_",), "CORAL": ("shrinkage_source_", "shrinkage_target_")}
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
LGBM_FILE = "meta_lightgbm.txt"
MAX_MANIFEST_BYTES = 64 << 20
MAX_TREES = 10**6
_ESTIMATOR_CLASS = {"logistic": "LogisticProbe", "centroid": "CentroidSimilarity", "knn": "KNeighborsVotes"}
_FLOAT, _INT = "f", "iu"  # dtype kinds an array may have; anything else (object, strings, records) is refused


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
    raise InvalidTypeError(f"Cannot write {type(value).__name__} as JSON: {value!r}")


def _library_versions() -> dict[str, str | None]:
    dists = ("featurestore", "numpy", "scikit-learn", "lightgbm", "pandas", "pyarrow")
    return {"python": platform.python_version(), **{dist: library_version(dist) for dist in dists}}


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
    for key, value in arrays.items():
        if value.dtype == object:
            raise ValidationError(f"Array {key!r} has object dtype and cannot be saved without pickle.")

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
        "sources": model.sources_,
        "n_splits": int(model.n_splits_),
        "oof_feature_names": list(model.oof_feature_names_),
        "meta": {"name": model.meta_name_, "scores": model.meta_scores_, "state": meta_state},
        "threshold": model.threshold_,
        "class_weights": None if model.class_weights_ is None else [float(w) for w in model.class_weights_],
        "probe_params": model.probe_params_,
        "pruned": list(getattr(model, "pruned_", [])),
        "metrics": metrics,
        "arrays": ARRAYS,  # always this name: kept for readers of older versions, checked (never followed) by load
        "versions": _library_versions(),
    }
    text = json.dumps(manifest, indent=2, default=json_default, allow_nan=False)

    path = Path(path)
    _check_target(path)

    def write(folder: Path) -> None:
        np.savez(folder / ARRAYS, **arrays)  # stored, not compressed: load refuses compressed members
        _fsync(folder / ARRAYS)
        if isinstance(model.meta_estimator_, LightGBMMeta):
            _write_text(folder / LGBM_FILE, model.meta_estimator_.model_text_)

    return install_folder(path, write, text)


def install_folder(path: Path, write: Callable[[Path], None], manifest_text: str) -> Path:
    """Put a saved model's folder at ``path`` atomically: ``write(tmp)`` fills a sibling ``.<name>.tmp-*`` folder,
    the manifest goes in last (a leftover with a manifest is a finished model), then two renames swap it in.

    A kill between the renames leaves no folder at ``path``: readers finish the swap from the siblings
    (:func:`_recover`), so the old model or the new one is always what loads. Used by every saved model kind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old = None
    try:
        write(tmp)
        _write_text(tmp / (MANIFEST + ".part"), manifest_text)
        os.replace(tmp / (MANIFEST + ".part"), tmp / MANIFEST)
        _fsync(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
        try:
            tmp.rename(path)
        except FileNotFoundError:
            if tmp.exists() or not path.exists():  # else a concurrent load already finished this very swap
                raise
        _fsync(path.parent)
    except BaseException:
        if old is not None and not path.exists():
            try:
                old.rename(path)  # put the previous model back
            except OSError:
                pass  # load recovers it from the sibling
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for leftover in _leftovers(path):  # the old model, and whatever killed saves left behind
        _discard(leftover)
    return path


def _write_text(file: Path, text: str) -> None:
    with open(file, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk where the platform allows it (folders cannot be opened on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_model_manifest(file: Path) -> bool:
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            return False
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _check_target(path: Path) -> None:
    """Refuse to replace anything but a saved model, and to write among a feature store's feature sets."""
    where = path.resolve()
    for parent in where.parents:
        sets = sets_dir(parent)
        if (parent / STORE_MARKER).is_file() and (where == sets or sets in where.parents):
            raise TargetExistsError(
                f"{str(path)!r} is inside the feature sets of the store at {str(parent)!r}; refusing to write a "
                f"model there (models go under {str(models_dir(parent))!r})."
            )
    if (where.parent / MANIFEST).is_file() and not _is_model_manifest(where.parent / MANIFEST):
        raise TargetExistsError(
            f"{str(path)!r} is inside {str(where.parent)!r}, which holds a {MANIFEST} that is not a stackers model "
            "manifest (a feature set version?); refusing to write into it."
        )
    if path.is_symlink():
        raise TargetExistsError(f"{str(path)!r} is a symbolic link, not a saved model; refusing to replace it.")
    if not path.exists():
        return
    if not path.is_dir():
        raise TargetExistsError(f"{str(path)!r} exists and is a file, not a saved model; refusing to replace it.")
    if (path / STORE_MARKER).exists():
        raise TargetExistsError(
            f"{str(path)!r} is not a saved model: it is a feature store root ({STORE_MARKER}); refusing to replace it."
        )
    if (path / MANIFEST).exists():
        if not _is_model_manifest(path / MANIFEST):
            raise TargetExistsError(
                f"{str(path)!r} is not a saved model: its {MANIFEST} is not a stackers model manifest (a feature set "
                "version?); refusing to replace it."
            )
    elif any(path.iterdir()):
        raise TargetExistsError(f"{str(path)!r} exists and is not a saved model; refusing to replace it.")


def _leftovers(path: Path) -> list[Path]:
    """The ``.<name>.tmp-*`` and ``.<name>.old-*`` folders that saves to ``path`` create beside it."""
    parent = path.parent
    if not parent.is_dir():
        return []
    prefixes = (f".{path.name}.tmp-", f".{path.name}.old-")
    return [p for p in parent.iterdir() if p.name.startswith(prefixes) and p.is_dir() and not p.is_symlink()]


def _discard(folder: Path) -> None:
    # The manifest goes first: a leftover that still has one is whole, which is what _recover relies on.
    try:
        (folder / MANIFEST).unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _recover(path: Path) -> None:
    """Finish a save killed between moving the old model aside and moving the new one in.

    Takes the newest finished ``.<name>.tmp-*`` (the model that save was installing), else the newest whole
    ``.<name>.old-*`` (the model it replaced). A folder counts once it holds a manifest: saves write it last.
    """
    if path.exists() or path.is_symlink():
        return
    candidates = []
    for folder in _leftovers(path):
        manifest = folder / MANIFEST
        if manifest.is_file() and not manifest.is_symlink():
            is_new = folder.name.startswith(f".{path.name}.tmp-")
            candidates.append((is_new, manifest.stat().st_mtime_ns, folder.name, folder))
    if not candidates:
        return
    folder = max(candidates)[-1]
    try:
        folder.rename(path)
    except OSError:
        if not path.exists():  # else another process recovered it first
            raise
        return
    warnings.warn(f"{str(path)!r} was missing after an interrupted save; restored it from {folder.name!r}.",
                  stacklevel=3)


# -- load ----------------------------------------------------------------------------------------------------------
def _regular_file(file: Path) -> os.stat_result:
    """A plain file inside the model folder: no symbolic link may lead out of it."""
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        raise MissingFileError(f"No saved model file at {str(file)!r}.") from None
    if stat.S_ISLNK(st.st_mode):
        raise ValidationError(f"{str(file)!r} is a symbolic link; a saved model holds plain files only.")
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"{str(file)!r} is not a regular file.")
    return st


def read_manifest(path) -> dict[str, Any]:
    """The manifest of a saved model, checked to be one (after finishing a save that was killed half way)."""
    path = Path(path)
    _recover(path)
    file = path / MANIFEST
    if not file.exists() and not file.is_symlink():
        raise MissingFileError(f"No saved model at {str(path)!r}: {MANIFEST} is missing.")
    size = _regular_file(file).st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValidationError(f"{str(file)!r} is {size:,} bytes; a model manifest is at most {MAX_MANIFEST_BYTES:,}.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{str(file)!r} is not valid JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValidationError(f"{str(file)!r} is not a stackers model manifest (format={got!r}).")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValidationError(
            f"{str(path)!r} was saved by a newer stackers (format {version!r}); upgrade to load it."
        )
    return manifest


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise ValidationError(f"{what} must be an integer in [{low}, {high}]. Got {value!r} instead")
    return int(value)


def _layout(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the manifest says the arrays are: name -> (dtype kinds, shape), ``None`` standing for the row count."""
    classes = manifest["classes"]["values"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValidationError(f"classes must list at least 2 classes. Got {classes!r:.80} instead")
    k = len(classes)
    n_out = 1 if k == 2 else k
    params = manifest["params"]
    if params.get("base") != "logistic":
        raise ValidationError(f"params.base must be 'logistic'. Got {params.get('base')!r} instead")
    extras = params.get("extras")
    if not isinstance(extras, list) or not set(extras) <= {"centroid", "knn"} or len(set(extras)) != len(extras):
        raise ValidationError(f"params.extras must list distinct names from ['centroid', 'knn']. Got {extras!r} instead")
    kinds = ["logistic", *extras]
    width = {"logistic": n_out, "centroid": k, "knn": k}
    n_oof = 0
    align = params.get("align")
    if align is not None and align not in ALIGNERS:
        raise ValidationError(f"params.align must be null or one of {sorted(ALIGNERS)}. Got {align!r} instead")

    layout: dict[str, tuple[str, tuple]] = {}
    blocks = manifest["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise ValidationError("blocks must be a non-empty list")
    for i, b in enumerate(blocks):
        if not isinstance(b.get("name"), str):
            raise ValidationError(f"blocks[{i}].name must be a string")
        d = _int(b.get("dim"), f"blocks[{i}].dim", 1, 1 << 24)
        ests = b.get("estimators")
        # The extras the inner CV kept for this block (pruned ones are absent), in the order of `kinds`.
        if not isinstance(ests, dict) or "logistic" not in ests or list(ests) != [x for x in kinds if x in ests]:
            raise ValidationError(f"blocks[{i}].estimators must hold 'logistic' and some of {kinds[1:]}, in that order")
        n_oof += sum(width[kind] for kind in ests)
        for kind in ests:
            ref = ests[kind]
            if ref.get("class") != _ESTIMATOR_CLASS[kind] or ref.get("prefix") != f"base{i}.{kind}.":
                raise ValidationError(f"blocks[{i}].estimators.{kind} must be class {_ESTIMATOR_CLASS[kind]!r} with "
                                 f"prefix 'base{i}.{kind}.'")
            p = f"base{i}.{kind}."
            layout[p + "classes"] = (_INT, (k,))
            if kind == "logistic":
                layout.update({p + "mean": (_FLOAT, (d,)), p + "scale": (_FLOAT, (d,)),
                               p + "coef": (_FLOAT, (n_out, d)), p + "intercept": (_FLOAT, (n_out,))})
            elif kind == "centroid":
                layout[p + "centroids"] = (_FLOAT, (k, d))
            else:
                layout.update({p + "X": (_FLOAT, (None, d)), p + "y": (_INT, (None,))})
                _int((ref.get("params") or {}).get("n_neighbors"), f"blocks[{i}].estimators.knn.params.n_neighbors",
                     1, 1 << 31)
        layout.update(_align_layout(b.get("align"), align, i, d))
    names = manifest["oof_feature_names"]
    if not isinstance(names, list) or len(names) != n_oof:
        raise ValidationError(f"oof_feature_names must list {n_oof} names ({len(blocks)} blocks x {kinds}, {k} classes)")
    layout["oof_predictions"] = (_FLOAT, (None, n_oof))
    layout["fold_ids"] = (_INT, (None,))

    meta = manifest["meta"]
    state = meta["state"]
    if _int(state.get("n_classes"), "meta.state.n_classes", 2, 1 << 31) != k:
        raise ValidationError(f"meta.state.n_classes is {state['n_classes']} but the manifest lists {k} classes")
    columns = state["columns"]
    if not isinstance(columns, list) or [c.get("name") for c in columns] != manifest["columns"]:
        raise ValidationError(f"meta.state.columns must describe the columns {manifest['columns']!r}")
    width_cols = 0
    for c in columns:
        if c.get("kind") not in ("numeric", "categorical") or not isinstance(c.get("categories"), list):
            raise ValidationError(f"meta.state.columns entry {c!r:.80} is not a numeric or categorical column")
        width_cols += 1 if c["kind"] == "numeric" else len(c["categories"])
    out = {"layout": layout, "k": k, "n_oof": n_oof}
    if meta.get("name") == "logistic":
        p = n_oof + width_cols
        if any(not isinstance(j, int) or not 0 <= j < n_oof for j in state["proba_columns"]):
            raise ValidationError(f"meta.state.proba_columns must index the {n_oof} score columns")
        layout.update({"meta.mean": (_FLOAT, (p,)), "meta.scale": (_FLOAT, (p,)), "meta.coef": (_FLOAT, (n_out, p)),
                       "meta.intercept": (_FLOAT, (n_out,)), "meta.classes": (_INT, (k,))})
        if state.get("class_weight") not in (None, "balanced"):
            raise ValidationError(f"meta.state.class_weight must be null or 'balanced'. Got {state.get('class_weight')!r}")
    elif meta.get("name") == "best":
        cols = state.get("proba_columns")
        if (not isinstance(cols, list) or len(cols) != n_out
                or any(not isinstance(j, int) or not 0 <= j < n_oof for j in cols)):
            raise ValidationError(f"meta.state.proba_columns must list {n_out} of the {n_oof} score columns")
    elif meta.get("name") == "lightgbm":
        n_est = _int(state.get("n_estimators"), "meta.state.n_estimators", 1, MAX_TREES)
        leaves = _int(state.get("num_leaves"), "meta.state.num_leaves", 2, MAX_LEAVES)
        out.update(n_features=n_oof + len(columns), max_trees=min(n_est * n_out, MAX_TREES), max_leaves=leaves)
    else:
        raise ValidationError(f"Unknown meta learner {meta.get('name')!r}")
    return out


def _align_layout(ref: Any, align: str | None, i: int, d: int) -> dict[str, tuple[str, tuple]]:
    """The arrays of block ``i``'s aligner: present exactly when ``params.align`` is set, of its class."""
    if align is None:
        if ref is not None:
            raise ValidationError(f"blocks[{i}].align is set but params.align is null")
        return {}
    cls = ALIGNERS[align].__name__
    if not isinstance(ref, dict) or ref.get("class") != cls or ref.get("prefix") != f"align{i}.":
        raise ValidationError(f"blocks[{i}].align must be class {cls!r} with prefix 'align{i}.' (params.align={align!r})")
    params, fitted = ref.get("params"), ref.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict) or sorted(fitted) != sorted(_ALIGN_FITTED[cls]):
        raise ValidationError(f"blocks[{i}].align must hold params and the fitted {list(_ALIGN_FITTED[cls])}")
    aligner = ALIGNERS[align]
    if not set(params) <= set(aligner._get_param_names()):
        raise ValidationError(f"blocks[{i}].align.params {params!r:.80} are not {cls} parameters")
    validate_params(params, aligner._parameter_constraints, cls)
    for name, value in fitted.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValidationError(f"blocks[{i}].align.fitted.{name} must be a number in [0, 1]. Got {value!r} instead")
    shapes = {"mean": (d,), "mean_source": (d,), "mean_target": (d,), "matrix": (d, d)}
    return {f"align{i}.{f}": (_FLOAT, shapes[f]) for f in _ALIGN_FIELDS[cls]}


def _read_arrays(file: Path, layout: dict[str, tuple[str, tuple]], *, n_splits: int, k: int) -> dict[str, np.ndarray]:
    """The arrays the layout names, each checked in its .npy header (name, dtype, shape, size) before it is read."""
    size = _regular_file(file).st_size
    where = repr(str(file))
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValidationError(f"{where} is not a readable .npz archive: {exc}.") from None
    with zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        wanted = {key + ".npy": key for key in layout}
        if len(set(names)) != len(names):
            raise ValidationError(f"{where} names a member twice.")
        unknown, missing = sorted(set(names) - set(wanted)), sorted(set(wanted) - set(names))
        if unknown:
            raise ValidationError(f"{where} holds member(s) {unknown[:5]} that the manifest does not describe; expected "
                             f"exactly {sorted(wanted)[:8]}{'...' if len(wanted) > 8 else ''}.")
        if missing:
            raise ValidationError(f"{where} lacks the array(s) {missing[:5]} that the manifest describes.")
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise ValidationError(f"{where} member {info.filename!r} is compressed or encrypted; a saved model stores "
                                 "its arrays uncompressed (np.savez), so this file was not written by stackers.")
            total += info.file_size
            if info.file_size != info.compress_size or total > size:
                raise ValidationError(f"{where} member {info.filename!r} declares more bytes than the file holds.")

        arrays: dict[str, np.ndarray] = {}
        n_rows = None
        for info in infos:
            key = wanted[info.filename]
            kinds, want = layout[key]
            what = f"{where} member {info.filename!r}"
            with zf.open(info) as fp:
                try:
                    version = np.lib.format.read_magic(fp)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
                    else:
                        raise ValidationError(f"unsupported .npy format version {version}")
                except (ValueError, OSError, EOFError) as exc:
                    raise ValidationError(f"{what} is not a plain .npy array: {exc}.") from None
                header = fp.tell()
            if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
                raise ValidationError(f"{what} has dtype {dtype}; expected {'a float' if kinds == _FLOAT else 'an integer'} "
                                 "dtype.")
            if len(shape) != len(want):
                raise ValidationError(f"{what} has shape {shape}; expected {_shape_text(want)}.")
            for got, exp in zip(shape, want):
                if exp is None:
                    n_rows = got if n_rows is None else n_rows
                    exp = n_rows
                if got != exp:
                    raise ValidationError(f"{what} has shape {shape}; the manifest implies {_shape_text(want, n_rows)}.")
            if header + math.prod(shape) * dtype.itemsize != info.file_size:
                raise ValidationError(f"{what} holds {info.file_size - header:,} data bytes; shape {shape} of {dtype} "
                                 f"needs {math.prod(shape) * dtype.itemsize:,}.")
            with zf.open(info) as fp:
                arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)

    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValidationError(f"{where} array {key!r} holds NaN or infinite values.")
        if key.endswith(".knn.y") and a.size and (a.min() < 0 or a.max() >= k):
            raise ValidationError(f"{where} array {key!r} must hold class indices in [0, {k - 1}].")
        if key.endswith("classes") and not np.array_equal(a, np.arange(k)):
            raise ValidationError(f"{where} array {key!r} must be the class indices 0..{k - 1}.")
    folds = arrays["fold_ids"]
    if folds.size and (folds.min() < 0 or folds.max() >= n_splits):
        raise ValidationError(f"{where} array 'fold_ids' must hold fold numbers in [0, {n_splits - 1}].")
    return arrays


def _shape_text(shape: tuple, n_rows: int | None = None) -> str:
    return "(" + ", ".join(("n_rows" if n_rows is None else str(n_rows)) if s is None else str(s)
                           for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _read_model_text(file: Path, *, n_features: int, n_classes: int, max_trees: int, max_leaves: int) -> str:
    size = _regular_file(file).st_size
    # A generous bound for trees of at most max_leaves leaves: a 15-leaf tree takes about 1.2 KB.
    limit = (1 << 20) + max_trees * (2048 + 1024 * max_leaves)
    if size > limit:
        raise ValidationError(f"{str(file)!r} is {size:,} bytes; {max_trees} trees of at most {max_leaves} leaves take at "
                         f"most {limit:,}.")
    raw = file.read_bytes()
    if not raw.isascii():
        raise ValidationError(f"{str(file)!r} is not a LightGBM model this stacker can load: it holds non-ASCII bytes.")
    text = raw.decode("ascii").replace("\r\n", "\n")  # a model saved on Windows by an older stackers
    check_model_text(text, n_features=n_features, n_classes=n_classes, max_trees=max_trees, max_leaves=max_leaves,
                     source=repr(str(file)))
    return text


def load(path):
    """Load a model written by ``StackingClassifier.save``; arrays are read with ``allow_pickle=False``.

    Everything is checked against the manifest first; a folder that does not hold a consistent saved model raises
    ``ValueError`` naming the file and what is wrong.
    """
    from stackers.classify._stacking import StackingClassifier

    path = Path(path)
    _recover(path)
    manifest = read_manifest(path)
    mfile = repr(str(path / MANIFEST))
    if manifest.get("arrays", ARRAYS) != ARRAYS:
        raise ValidationError(f"{mfile} names arrays file {manifest['arrays']!r}; a saved model keeps its arrays in "
                         f"{ARRAYS!r} inside its own folder.")
    try:
        shape = _layout(manifest)
        n_splits = _int(manifest["n_splits"], "n_splits", 1, 1 << 31)
        classes = _decode_classes(manifest["classes"])
    except ValueError as exc:
        raise ValidationError(f"{mfile} does not describe a model this stackers can load: {exc}.") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValidationError(f"{mfile} is malformed: {type(exc).__name__} {exc}.") from None
    arrays = _read_arrays(path / ARRAYS, shape["layout"], n_splits=n_splits, k=shape["k"])
    model_text = None
    if manifest["meta"]["name"] == "lightgbm":
        model_text = _read_model_text(path / LGBM_FILE, n_features=shape["n_features"], n_classes=shape["k"],
                                      max_trees=shape["max_trees"], max_leaves=shape["max_leaves"])
    try:
        return _build(StackingClassifier, manifest, classes, arrays, model_text)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValidationError(f"{mfile} is malformed: {type(exc).__name__} {exc}.") from None


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
        raise ValidationError(f"threshold must be null or, for a binary model, a number in [0, 1]. Got {threshold!r}")
    model.threshold_ = None if threshold is None else float(threshold)
    weights = manifest.get("class_weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(model.classes_) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf for w in weights)):
        raise ValidationError(f"class_weights must be null or one positive number per class. Got {weights!r:.80}")
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

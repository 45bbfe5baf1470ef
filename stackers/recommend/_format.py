"""Save and load a fitted RecommenderStack as plain files: JSON, ``.npz`` arrays and the LightGBM ranker's text.

    manifest.json   format, params, feature names, the sets' versions and specs, metrics, library versions
    arrays.npz      the catalogue, the training (and test) interactions, each set's item vectors (no pickle)
    ranker.txt      the LambdaRank booster, checked by ``_lgbm_text`` before LightGBM parses it

The generators are recomputed from the saved training interactions at load (deterministic: fixed SVD seed), so the
folder stays small and a loaded model recommends what the saved one did. Nothing is trusted: the array names,
dtypes (numbers or fixed-width strings, never objects) and shapes are checked against the manifest, and the ranker
text must pass the same checks as a stacker's LightGBM meta learner (with ``objective=lambdarank``).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stackers.recommend._interactions import Interactions
from stackers.persist._lgbm_text import check_model_text
from stackers.persist._persist import _fsync, _library_versions, _recover, _regular_file, _write_text, install_folder, json_default
from featurestore.errors import MissingFileError, TargetExistsError, ValidationError

__all__ = ["save_recommender", "load_recommender", "FORMAT", "is_recommender"]

FORMAT = "stackers.RecommenderStack"
FORMAT_VERSION = 1
MANIFEST, ARRAYS, RANKER = "manifest.json", "arrays.npz", "ranker.txt"
MAX_TREES = 100_000
_OBJECTIVE = re.compile(r"(?m)^objective=lambdarank$")


def is_recommender(path: Path) -> bool:
    """Whether ``path`` holds a saved RecommenderStack (its manifest says so), after finishing a save that was
    killed between its two renames."""
    try:
        _recover(Path(path))
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _interaction_arrays(prefix: str, it: Interactions) -> dict[str, np.ndarray]:
    out = {f"{prefix}.user": it.user, f"{prefix}.item": it.item, f"{prefix}.time": it.time}
    if it.rating is not None:
        out[f"{prefix}.rating"] = it.rating
    return out


def save_recommender(model: Any, path: str | os.PathLike[str], *, test: Interactions | None = None,
                     metrics: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """Write fitted ``model`` (and the ``test`` interactions it is judged on) to folder ``path``; a folder holding
    a saved recommender is replaced whole, anything else is refused."""
    model._check_fitted()
    path = Path(path)
    if path.exists() and not is_recommender(path):
        raise TargetExistsError(f"{str(path)!r} exists and is not a saved recommender; refusing to replace it.")
    arrays = {"items": model.items_, **_interaction_arrays("train", model.train_)}
    if test is not None:
        arrays.update(_interaction_arrays("test", test))
    for i, name in enumerate(model.sets):
        arrays[f"set{i}"] = model.set_vectors_[name]
    for key, a in arrays.items():
        if a.dtype.kind not in "iufU":
            raise ValidationError(f"Array {key!r} has dtype {a.dtype}; ids must be numbers or strings to save without pickle.")
    params = model.get_params()
    params["sets"], params["generators"] = list(params["sets"]), list(params["generators"])
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "class": type(model).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params, "feature_names": list(model.feature_names_), "sources": model.set_sources_,
        "candidate_recall": model.candidate_recall_, "fit_seconds": model.fit_seconds_,
        "has_rating": model.train_.rating is not None, "has_test": test is not None,
        "metrics": metrics, "extra": extra or {}, "versions": _library_versions(),
    }
    text = json.dumps(manifest, indent=2, default=json_default, allow_nan=True)

    def write(folder: Path) -> None:
        np.savez(folder / ARRAYS, **arrays)
        _fsync(folder / ARRAYS)
        _write_text(folder / RANKER, model.ranker_text_)

    return install_folder(path, write, text)


def _read_arrays(file: Path, wanted: dict[str, tuple[str, int | None]]) -> dict[str, np.ndarray]:
    """The arrays named in ``wanted`` (name -> (dtype kinds, ndim or None)), refusing members it does not name."""
    where = repr(str(file))
    _regular_file(file)
    try:
        with zipfile.ZipFile(file) as zf:
            names = {i.filename[:-4] for i in zf.infolist()}
            if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                raise ValidationError(f"{where} holds compressed members; a saved recommender stores them uncompressed.")
    except zipfile.BadZipFile as exc:
        raise ValidationError(f"{where} is not a readable .npz archive: {exc}.") from None
    if names != set(wanted):
        raise ValidationError(f"{where} holds arrays {sorted(names)}; the manifest implies {sorted(wanted)}.")
    with np.load(file, allow_pickle=False) as z:
        out = {k: z[k] for k in wanted}
    for k, (kinds, ndim) in wanted.items():
        a = out[k]
        if a.dtype.kind not in kinds or (ndim is not None and a.ndim != ndim):
            raise ValidationError(f"{where} array {k!r} is {a.dtype} with shape {a.shape}; expected kind {kinds!r}, "
                             f"{ndim} dimension(s).")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValidationError(f"{where} array {k!r} holds NaN or infinite values.")
    return out


def load_recommender(path: str | os.PathLike[str]) -> tuple[Any, Interactions | None, dict[str, Any]]:
    """``(model, test interactions or None, manifest)`` from a folder written by :func:`save_recommender`."""
    from stackers.recommend._recommend import RecommenderStack

    path = Path(path)
    _recover(path)
    mfile = path / MANIFEST
    if not mfile.is_file():
        raise MissingFileError(f"No saved recommender at {str(path)!r}: {MANIFEST} is missing.")
    _regular_file(mfile)
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{str(mfile)!r} is not valid JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValidationError(f"{str(mfile)!r} is not a saved recommender (format={manifest.get('format')!r}).")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > FORMAT_VERSION:
        raise ValidationError(f"{str(path)!r} was saved by a newer stackers (format {manifest.get('format_version')!r}).")
    try:
        model = RecommenderStack(**{k: v for k, v in manifest["params"].items() if k in RecommenderStack._PARAMS})
        names = [str(n) for n in manifest["feature_names"]]
        parts = ["train", "test"] if manifest["has_test"] else ["train"]
        wanted: dict[str, tuple[str, int | None]] = {"items": ("iuU", 1)}
        for part in parts:
            wanted |= {f"{part}.user": ("iuU", 1), f"{part}.item": ("iuU", 1), f"{part}.time": ("f", 1)}
            if manifest["has_rating"]:
                wanted[f"{part}.rating"] = ("f", 1)
        wanted |= {f"set{i}": ("f", 2) for i in range(len(model.sets))}
    except (KeyError, TypeError) as exc:
        raise ValidationError(f"{str(mfile)!r} is malformed: {type(exc).__name__} {exc}.") from None
    arrays = _read_arrays(path / ARRAYS, wanted)
    rfile = path / RANKER
    _regular_file(rfile)
    text = rfile.read_text(encoding="ascii", errors="replace")
    if len(_OBJECTIVE.findall(text)) != 1:
        raise ValidationError(f"{str(rfile)!r} is not a LambdaRank model (no single 'objective=lambdarank' line).")
    check_model_text(text, n_features=len(names), n_classes=2, max_trees=MAX_TREES, source=repr(str(rfile)),
                     objective="lambdarank")

    def interactions(part: str) -> Interactions:
        return Interactions(arrays[f"{part}.user"], arrays[f"{part}.item"], arrays[f"{part}.time"],
                            arrays.get(f"{part}.rating"), arrays["items"])

    model.items_ = arrays["items"]
    model.train_ = interactions("train")
    model.set_vectors_ = {name: arrays[f"set{i}"] for i, name in enumerate(model.sets)}
    for name, vecs in model.set_vectors_.items():
        if vecs.shape[0] != len(model.items_):
            raise ValidationError(f"{str(path / ARRAYS)!r} holds {vecs.shape[0]} vectors for set {name!r}; the catalogue "
                             f"has {len(model.items_)} items.")
    model.set_sources_ = dict(manifest.get("sources") or {})
    model.gen_names_ = [*model.generators, *model.sets]
    model.feature_names_ = names
    model.candidate_recall_ = float(manifest.get("candidate_recall", float("nan")))
    model.fit_seconds_ = float(manifest.get("fit_seconds", float("nan")))
    model.ranker_text_ = text
    model._refit()
    return model, (interactions("test") if manifest["has_test"] else None), manifest

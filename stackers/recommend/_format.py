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

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stackers.errors import CorruptModelError
from stackers.persist import (
    ARRAYS,
    FLOAT,
    ID,
    RECOMMENDER_FORMAT,
    read_manifest,
    read_model_text,
    read_npz,
    save_folder,
)
from stackers.recommend._interactions import Interactions

__all__ = ["save_recommender", "load_recommender", "FORMAT"]

FORMAT = RECOMMENDER_FORMAT
FORMAT_VERSION = 1
RANKER = "ranker.txt"
MAX_TREES = 100_000


def _interaction_arrays(prefix: str, it: Interactions) -> dict[str, np.ndarray]:
    out = {f"{prefix}.user": it.user, f"{prefix}.item": it.item, f"{prefix}.time": it.time}
    if it.rating is not None:
        out[f"{prefix}.rating"] = it.rating
    return out


def save_recommender(model: Any, path: str | os.PathLike[str], *, test: Interactions | None = None,
                     metrics: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """Write fitted ``model`` (and the ``test`` interactions it is judged on) to folder ``path``; a folder holding
    a saved model is replaced whole, anything else is refused."""
    model._check_fitted()
    arrays = {"items": model.items_, **_interaction_arrays("train", model.train_)}
    if test is not None:
        arrays.update(_interaction_arrays("test", test))
    for i, name in enumerate(model.sets):
        arrays[f"set{i}"] = model.set_vectors_[name]
    for key, a in arrays.items():
        if a.dtype.kind not in "iufU":
            raise CorruptModelError(f"Array {key!r} has dtype {a.dtype}; ids must be numbers or strings to save "
                                    "without pickle.")
    params = model.get_params()
    params["sets"], params["generators"] = list(params["sets"]), list(params["generators"])
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "class": type(model).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params, "feature_names": list(model.feature_names_),
        "candidate_recall": model.candidate_recall_, "fit_seconds": model.fit_seconds_,
        "has_rating": model.train_.rating is not None, "has_test": test is not None,
        "metrics": metrics, "extra": extra or {},
    }
    return save_folder(path, manifest, sources=model.set_sources_, arrays=arrays, texts={RANKER: model.ranker_text_},
                       allow_nan=True)


def _layout(manifest: dict[str, Any], n_sets: int) -> dict[str, tuple[str, tuple[int | str, ...]]]:
    """The arrays the manifest implies: every set's vectors cover the catalogue, each part's columns one length."""
    layout: dict[str, tuple[str, tuple[int | str, ...]]] = {"items": (ID, ("items",))}
    for part in ["train", "test"] if manifest["has_test"] else ["train"]:
        layout |= {f"{part}.user": (ID, (part,)), f"{part}.item": (ID, (part,)), f"{part}.time": (FLOAT, (part,))}
        if manifest["has_rating"]:
            layout[f"{part}.rating"] = (FLOAT, (part,))
    return layout | {f"set{i}": (FLOAT, ("items", f"dim{i}")) for i in range(n_sets)}


def load_recommender(path: str | os.PathLike[str], cls: type) -> Any:
    """A ``cls`` (``RecommenderStack``) from a folder written by :func:`save_recommender`; its ``test_`` holds the
    held-out interactions saved with it (None when there were none)."""
    path = Path(path)
    manifest = read_manifest(path, formats=(FORMAT,), versions={FORMAT: FORMAT_VERSION})
    mfile = repr(str(path / "manifest.json"))
    try:
        model = cls(**{k: v for k, v in manifest["params"].items() if k in cls._get_param_names()})
        names = [str(n) for n in manifest["feature_names"]]
        layout = _layout(manifest, len(model.sets))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CorruptModelError(f"{mfile} is malformed: {type(exc).__name__} {exc}.") from None
    arrays, _ = read_npz(path / ARRAYS, layout)
    text = read_model_text(path / RANKER, n_features=len(names), n_classes=2, max_trees=MAX_TREES,
                           objective="lambdarank", kind="LambdaRank")

    def interactions(part: str) -> Interactions:
        return Interactions(arrays[f"{part}.user"], arrays[f"{part}.item"], arrays[f"{part}.time"],
                            arrays.get(f"{part}.rating"), arrays["items"])

    model.items_ = arrays["items"]
    model.train_ = interactions("train")
    model.set_vectors_ = {name: arrays[f"set{i}"] for i, name in enumerate(model.sets)}
    model.set_sources_ = dict(manifest.get("sources") or {})
    model.gen_names_ = [*model.generators, *model.sets]
    model.feature_names_ = names
    model.candidate_recall_ = float(manifest.get("candidate_recall", float("nan")))
    model.fit_seconds_ = float(manifest.get("fit_seconds", float("nan")))
    model.ranker_text_ = text
    model.test_ = interactions("test") if manifest["has_test"] else None
    model._refit()
    return model

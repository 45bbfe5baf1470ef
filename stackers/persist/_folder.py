"""A saved model's folder: one JSON manifest beside plain files, installed atomically, never pickled.

Every model kind (``StackingClassifier``, ``RecommenderStack``) saves through :func:`install_folder` and loads through
:func:`read_manifest`, so each gets the same guarantees:

- ``install_folder`` fills a sibling ``.<name>.tmp-*`` folder (the manifest last: a leftover with a manifest is a
  finished model) and swaps it in with two renames. A kill between them leaves no folder at the path; readers finish
  the swap (:func:`recover`: the finished new model, else the old one) and the next save removes the leftovers.
- :func:`check_target` refuses to replace anything but a saved model, and to write among a store's feature sets.
- A model folder is input like any other: nothing is followed out of it (symbolic links are refused), file names are
  fixed, the manifest's size is bounded and its ``format`` must be a model kind this package knows.
- The feature set versions a model reads are written as ``featurestore``'s use record (``uses_record``), so ``drop``
  protects them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import stat
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InvalidTypeError, ModelNotFoundError, TargetExistsError
from featurestore.storage import (
    MARKER,
    fsync_path,
    is_store,
    models_dir,
    sets_dir,
    store_root,
    uses_record,
    write_durable_text,
)
from featurestore.utils import library_version
from stackers.errors import CorruptModelError

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
#: the ``format`` of every model kind a folder may hold (the kinds' own modules check their fields)
STACKER_FORMAT = "stackers.StackingClassifier"
RECOMMENDER_FORMAT = "stackers.RecommenderStack"
MODEL_FORMATS = (STACKER_FORMAT, RECOMMENDER_FORMAT)
#: what an interrupted save leaves beside ``<name>``: ``.<name>.tmp-<hex>`` (being written) or ``.<name>.old-<hex>``
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}$")


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


def library_versions() -> dict[str, str | None]:
    """The versions a model was saved with (kept in its manifest: what to reinstall to get the same numbers)."""
    dists = ("featurestore", "numpy", "scikit-learn", "lightgbm", "pandas", "pyarrow")
    return {"python": platform.python_version(), **{dist: library_version(dist) for dist in dists}}


def manifest_text(manifest: dict[str, Any], sources: Mapping[str, Mapping[str, Any]], *,
                  allow_nan: bool = False) -> str:
    """The manifest as JSON, with the feature sets it uses as the store's use record (what ``drop`` reads)."""
    return json.dumps({**manifest, "sources": uses_record(sources)}, indent=2, default=json_default,
                      allow_nan=allow_nan)


def _leftover_name(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}"


def install_folder(path: Path, write: Callable[[Path], None], text: str) -> Path:
    """Put a saved model's folder at ``path`` atomically: ``write(tmp)`` fills a sibling ``.<name>.tmp-*`` folder,
    the manifest ``text`` goes in last, then two renames swap it in (see the module docstring)."""
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _leftover_name(path, "tmp")
    tmp.mkdir()
    old = None
    try:
        write(tmp)
        write_durable_text(tmp / (MANIFEST + ".part"), text)
        os.replace(tmp / (MANIFEST + ".part"), tmp / MANIFEST)
        fsync_path(tmp)
        if path.exists():
            old = _leftover_name(path, "old")
            path.rename(old)
        try:
            tmp.rename(path)
        except FileNotFoundError:
            if tmp.exists() or not path.exists():  # else a concurrent load already finished this very swap
                raise
        fsync_path(path.parent)
    except BaseException:
        if old is not None and not path.exists():
            try:
                old.rename(path)  # put the previous model back
            except OSError:
                pass  # load recovers it from the sibling
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for leftover in leftovers(path):  # the old model, and whatever killed saves left behind
        _discard(leftover)
    return path


def _model_format(file: Path) -> str | None:
    """The ``format`` of a model manifest at ``file``, None when it is not one (unreadable, too large, other JSON)."""
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    return fmt if fmt in MODEL_FORMATS else None


def check_target(path: Path) -> None:
    """Refuse to replace anything but a saved model, and to write among a feature store's feature sets."""
    where = path.resolve()
    for parent in where.parents:
        sets = sets_dir(parent)
        if is_store(parent) and (where == sets or sets in where.parents):
            raise TargetExistsError(
                f"{str(path)!r} is inside the feature sets of the store at {str(parent)!r}; refusing to write a "
                f"model there (models go under {str(models_dir(parent))!r})."
            )
    if (where.parent / MANIFEST).is_file() and _model_format(where.parent / MANIFEST) is None:
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
    if is_store(path):
        raise TargetExistsError(
            f"{str(path)!r} is not a saved model: it is a feature store root ({MARKER}); refusing to replace it."
        )
    if (path / MANIFEST).exists():
        if _model_format(path / MANIFEST) is None:
            raise TargetExistsError(
                f"{str(path)!r} is not a saved model: its {MANIFEST} is not a stackers model manifest (a feature set "
                "version?); refusing to replace it."
            )
    elif any(path.iterdir()):
        raise TargetExistsError(f"{str(path)!r} exists and is not a saved model; refusing to replace it.")


def leftovers(path: Path) -> list[Path]:
    """The ``.<name>.tmp-*`` and ``.<name>.old-*`` folders that saves to ``path`` create beside it."""
    parent = path.parent
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir() if (m := LEFTOVER.match(p.name)) and m["name"] == path.name
            and p.is_dir() and not p.is_symlink()]


def _discard(folder: Path) -> None:
    # The manifest goes first: a leftover that still has one is whole, which is what recover relies on.
    try:
        (folder / MANIFEST).unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def recover(path: Path) -> None:
    """Finish a save killed between moving the old model aside and moving the new one in.

    Takes the newest finished ``.<name>.tmp-*`` (the model that save was installing), else the newest whole
    ``.<name>.old-*`` (the model it replaced). A folder counts once it holds a manifest: saves write it last.
    """
    if path.exists() or path.is_symlink():
        return
    candidates = []
    for folder in leftovers(path):
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


def regular_file(file: Path) -> os.stat_result:
    """A plain file inside the model folder: no symbolic link may lead out of it."""
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        raise ModelNotFoundError(f"No saved model file at {str(file)!r}.") from None
    if stat.S_ISLNK(st.st_mode):
        raise CorruptModelError(f"{str(file)!r} is a symbolic link; a saved model holds plain files only.")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptModelError(f"{str(file)!r} is not a regular file.")
    return st


def read_manifest(path: str | os.PathLike[str], *, formats: tuple[str, ...] = MODEL_FORMATS,
                  versions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The manifest of a saved model, checked to be one of ``formats`` (after finishing a save killed half way).

    ``versions``: the newest ``format_version`` this package reads, per format; a newer one asks for an upgrade.
    """
    path = Path(path)
    recover(path)
    file = path / MANIFEST
    if not file.exists() and not file.is_symlink():
        raise ModelNotFoundError(f"No saved model at {str(path)!r}: {MANIFEST} is missing.")
    size = regular_file(file).st_size
    if size > MAX_MANIFEST_BYTES:
        raise CorruptModelError(f"{str(file)!r} is {size:,} bytes; a model manifest is at most {MAX_MANIFEST_BYTES:,}.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptModelError(f"{str(file)!r} is not valid JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in formats:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        kind = "a stackers model manifest" if formats == MODEL_FORMATS else f"a saved {' or '.join(formats)}"
        raise CorruptModelError(f"{str(file)!r} is not {kind} (format={got!r}).")
    version = manifest.get("format_version", 0)
    newest = (versions or {}).get(manifest["format"])
    if not isinstance(version, int) or (newest is not None and version > newest):
        raise CorruptModelError(f"{str(path)!r} was saved by a newer stackers (format {version!r}); upgrade to load it.")
    return manifest


def find_model(store: Any, name: str, *, formats: tuple[str, ...] = MODEL_FORMATS) -> Path:
    """The folder of saved model ``name`` in ``store`` (a Store or its root), checked to hold one of ``formats`` (a
    save killed between its renames is finished first)."""
    models = models_dir(store_root(store))
    path = models / name
    try:
        read_manifest(path, formats=formats)
    except ModelNotFoundError:
        known = sorted(p.name for p in models.iterdir() if (p / MANIFEST).is_file()) if models.is_dir() else []
        raise ModelNotFoundError(f"No model named {name!r} in {models.parent}. Known: {known or 'none'}.") from None
    return path

"""The store's folder layout: every path to a set, a version, the models or the encoders' state is built here.

```
<root>/featurestore.json            the marker: this folder is a store, and its format
<root>/catalog.duckdb               an index of the manifests (rebuilt at will)
<root>/sets/<name>/v<k>/            a version: manifest.json + partitions
<root>/models/<name>/               saved models (stackers)
<root>/encoders/<kind>/<sha256>/    fitted or fine-tuned encoders' state
```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from featurestore.errors import CorruptStoreError, FeatureStoreError

MARKER = "featurestore.json"
FORMAT = 1  # the store's layout version, kept in the marker
MANIFEST = "manifest.json"
SETS = "sets"
MODELS = "models"
ENCODERS = "encoders"
LOCK_FILE = ".lock"  # in a feature set's folder: held by its one writer (and by ``doctor --clean``)
VERSION_DIR = re.compile(r"^v(\d+)$")


def sets_dir(root: Path) -> Path:
    """Where every feature set lives: ``<root>/sets``."""
    return Path(root) / SETS


def models_dir(root: Path) -> Path:
    """Where saved stackers live: ``<root>/models``."""
    return Path(root) / MODELS


def encoders_dir(root: Path) -> Path:
    """Where fitted encoders keep their state: ``<root>/encoders/<kind>/<sha256>/``."""
    return Path(root) / ENCODERS


def set_dir(root: Path, name: str) -> Path:
    """Where a feature set's versions live: ``<root>/sets/<name>``."""
    return sets_dir(root) / name


def version_dir(root: Path, name: str, version: int) -> Path:
    """Where one version's manifest and partitions live: ``<root>/sets/<name>/v<version>``."""
    return set_dir(root, name) / f"v{int(version)}"


def is_version_folder(path: Path) -> bool:
    """A folder named like a version (``v<k>``), with or without a manifest yet."""
    return VERSION_DIR.match(path.name) is not None and path.is_dir()


def list_versions(set_dir: Path) -> list[int]:
    """Committed versions of a feature set: folders ``v<k>`` that hold a manifest."""
    if not set_dir.is_dir():
        return []
    return sorted(int(child.name[1:]) for child in set_dir.iterdir()
                  if VERSION_DIR.match(child.name) and (child / MANIFEST).is_file())


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the root of a feature store (it holds the marker file)."""
    return (Path(path) / MARKER).is_file()


def check_store_format(root: Path) -> None:
    """The marker of the store at ``root`` is readable and names the format this version reads."""
    marker = root / MARKER
    try:
        fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptStoreError(f"Unreadable store marker {marker}: {exc}.") from None
    if fmt != FORMAT:
        raise FeatureStoreError(f"{root} has store format {fmt}; this featurestore reads format {FORMAT}.")


def store_root(store: Any) -> Path:
    """A Store (anything with a ``root``) or the folder of an existing store -> the store's root.

    For code below the ``Store`` class (encoders keeping their state in a store): it never creates a store.
    """
    if not isinstance(store, (str, os.PathLike)):
        return Path(store.root)
    path = Path(store).expanduser().resolve()
    if not is_store(path):
        raise FeatureStoreError(f"No feature store at {path}. Create one with `featurestore init {store}` "
                                "(or featurestore.open).")
    check_store_format(path)
    return path

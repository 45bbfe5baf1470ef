"""Which feature set versions a saved model uses: the record every model saver writes and ``drop`` reads.

``stackers`` lies above this layer, so a saved model is read here only as JSON: its ``models/<name>/manifest.json``
holds, under :data:`USES_FIELD`, one entry per feature set it reads, ``{"<set>": {"version": <k>, ...}}`` (the spec it
was trained on and other facts may sit beside the version). Every saver builds that entry with :func:`uses_record`,
so the shape ``drop`` relies on is defined once, here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurestore.errors import ValidationError
from featurestore.storage._layout import MANIFEST, models_dir

USES_FIELD = "sources"
MAX_MODEL_MANIFEST = 64 * 2**20  # larger files are not model manifests (stackers refuses them too)


def uses_record(sources: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The feature sets a model uses, as its manifest keeps them: set name -> {"version": k, ...} (copied)."""
    if not isinstance(sources, Mapping):
        raise ValidationError(f"A model's feature sets are a mapping of set name -> {{'version': k, ...}}. "
                              f"Got {type(sources).__name__}.")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in sources.items():
        version = entry.get("version") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValidationError(f"A model's use of feature set {name!r} must name its version (an int >= 1). "
                                  f"Got {entry!r}.")
        out[name] = dict(entry)
    return out


def models_using(root: Path, name: str, version: int | None = None) -> dict[str, int | None]:
    """Saved models whose manifest lists feature set ``name`` (at ``version``, when given): model -> its version.

    A manifest that cannot be read is skipped: it is not a model that loads, so it uses nothing.
    """
    folder = models_dir(root)
    found: dict[str, int | None] = {}
    for manifest in sorted(folder.glob(f"*/{MANIFEST}")) if folder.is_dir() else []:
        if manifest.parent.name.startswith("."):  # a save in progress or its old copy (stackers' own leftovers)
            continue
        try:
            if manifest.stat().st_size > MAX_MODEL_MANIFEST:
                continue
            sources = json.loads(manifest.read_text(encoding="utf-8")).get(USES_FIELD) or {}
        except (OSError, ValueError, AttributeError):
            continue
        src = sources.get(name) if isinstance(sources, dict) else None
        if not isinstance(src, dict):
            continue
        used = src.get("version")
        if version is None or used == version:
            found[manifest.parent.name] = used
    return found

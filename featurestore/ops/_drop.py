"""Dropping a feature set or one of its versions, crash-safely and under the set's write lock.

Order of work, so that a kill at any moment leaves either the version whole or a leftover ``doctor --clean`` removes:

1. check (before the lock, and again under it): the name and version exist; no saved model uses them, unless forced;
2. rename each dropped ``v<k>`` to ``.tmp-drop-v<k>-<hex>`` (``_leftovers``), oldest first, then fsync the set's
   folder: from here readers, writers and the catalog no longer see the version; dropping a whole set leaves its
   latest version visible until the last rename, so a kill half way never makes an older version "latest";
3. rewrite the catalog from the manifests (the ``runs`` table lives in the manifests, so runs go with their version);
4. delete the renamed folders.

The set's folder itself stays, holding only its lock file: a writer already waiting on that lock must never end up
holding a lock on a file a newer writer no longer sees. Version numbers are not reserved: dropping the latest version
and then writing with ``version="new"`` reuses its number (saved models record the spec they were trained on).

Models: every saved model whose use record (``_uses``: what each saver writes into ``models/<name>/manifest.json``)
names the set (and the version) blocks the drop unless ``force``.
"""

from __future__ import annotations

import numbers
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.errors import FeatureSetNotFoundError, FeatureStoreError
from featurestore.storage import _leftovers
from featurestore.storage._atomic import fsync_path
from featurestore.storage._layout import list_versions, set_dir, version_dir
from featurestore.storage._lock import feature_set_lock
from featurestore.storage._manifest import read_manifest
from featurestore.storage._names import validate_name
from featurestore.storage._uses import models_using
from featurestore.utils._validation import Interval, validate_params

if TYPE_CHECKING:
    from featurestore._store import Store

_CONSTRAINTS: dict[str, list] = {
    "version": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "force": ["boolean"],
    "lock_timeout": [Interval(numbers.Real, 0, None, closed="left")],
}


def _targets(root: Path, name: str, version: int | None) -> list[int]:
    versions = list_versions(set_dir(root, name))
    if not versions:
        raise FeatureSetNotFoundError(f"No feature set named {name!r} in {root}; nothing to drop.")
    if version is not None and version not in versions:
        raise FeatureSetNotFoundError(f"Feature set {name!r} has no version {version}. Versions: {versions}.")
    return versions if version is None else [version]


def drop(store: "Store", name: str, version: int | None = None, *, force: bool = False,
         lock_timeout: float = 10.0) -> dict[str, Any]:
    """Remove ``name`` (all versions) or its ``version``; returns {name, versions, rows, bytes, latest, models}.

    ``latest`` is the version that is now the set's latest (None: the set is gone). ``models`` lists the saved models
    that used what was dropped (only non-empty with ``force``). A held lock raises :class:`LockTimeoutError` after
    ``lock_timeout`` seconds and nothing is removed.
    """
    validate_name(name)
    validate_params({"version": version, "force": force, "lock_timeout": lock_timeout}, _CONSTRAINTS, "Store.drop")
    version = None if version is None else int(version)
    root = store.root
    _targets(root, name, version)  # fail fast, before waiting on a lock
    with feature_set_lock(root, name, timeout=lock_timeout):
        targets = _targets(root, name, version)  # again: a writer may have changed the set while we waited
        users = models_using(root, name, version)
        what = f"{name!r}" if version is None else f"{name!r} v{version}"
        if users and not force:
            listed = ", ".join(f"{m} (v{v})" for m, v in users.items())
            raise FeatureStoreError(
                f"Cannot drop {what}: saved model(s) {listed} use it, and could no longer predict.\n"
                "  Help: remove them first (`featurestore models rm NAME`), or pass force=True (--force) to drop anyway."
            )
        rows = size = 0
        moved: list[Path] = []
        sdir = set_dir(root, name)
        token = uuid.uuid4().hex[:8]
        for v in targets:  # oldest first: the latest stays visible until the last rename
            vdir = version_dir(root, name, v)
            try:
                m = read_manifest(vdir)
                rows += m.rows_written
                size += sum(p.bytes for p in [*m.partitions, *m.errors])
            except FeatureStoreError:  # a damaged version can still be dropped; its counts are unknown
                pass
            target = sdir / _leftovers.dropped_name(v, token)
            vdir.rename(target)
            moved.append(target)
        fsync_path(sdir)
        store._write_catalog()
        _leftovers.remove(moved)
        remaining = list_versions(sdir)
    return {"name": name, "versions": targets, "rows": rows, "bytes": size,
            "latest": remaining[-1] if remaining else None, "models": users}

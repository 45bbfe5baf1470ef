"""Leftovers of crashed writers: what counts as one, and removing it.

A writer makes a version folder, writes each partition under a ``.tmp-`` name, renames it, and only then lists it in
the manifest (itself replaced through a ``.tmp-`` file). A kill at any moment can therefore leave, in a feature set's
folder: a version folder (``v<k>``) with no manifest yet, a ``.tmp-*`` file, or a renamed ``*.parquet`` that no
manifest lists. Dropping a version (``_drop``) first renames its folder to ``.tmp-drop-v<k>-<hex>``, so a kill before
its files are gone leaves such a folder (never a version that looks whole but is half deleted). Readers ignore them;
the next writer removes them under the set's lock; ``doctor`` reports them
(and removes them with ``clean``, under the same lock). This module is the one definition all three use.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from featurestore.errors import CorruptStoreError
from featurestore.storage._layout import MANIFEST, is_version_folder
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, read_manifest


@dataclass
class VersionFolder:
    """One version folder of a feature set as found on disk.

    ``manifest`` is None when there is none (the whole folder is then a leftover) or when it cannot be read
    (``error`` says why, and nothing in that folder counts as a leftover: its files may be all that is left).
    """

    path: Path
    manifest: Manifest | None = None
    error: CorruptStoreError | None = None
    leftovers: list[Path] = field(default_factory=list)


DROPPED_PREFIX = ".tmp-drop-"  # a version folder renamed by a drop, before its files are deleted


def dropped_name(version: int, token: str) -> str:
    """The name a dropped version's folder takes until it is deleted: ``.tmp-drop-v<k>-<token>``."""
    return f"{DROPPED_PREFIX}v{int(version)}-{token}"


def version_folders(set_dir: Path) -> list[VersionFolder]:
    """Every version folder of the feature set in ``set_dir``, each with its manifest and its leftovers; folders of
    dropped versions not yet deleted come first, each a leftover whole."""
    if not set_dir.is_dir():
        return []
    out = [VersionFolder(p, leftovers=[p]) for p in sorted(set_dir.iterdir())
           if p.name.startswith(DROPPED_PREFIX) and p.is_dir() and not p.is_symlink()]
    for vdir in sorted(p for p in set_dir.iterdir() if is_version_folder(p)):
        if not (vdir / MANIFEST).is_file():
            out.append(VersionFolder(vdir, leftovers=[vdir]))
            continue
        try:
            m = read_manifest(vdir)
        except CorruptStoreError as exc:
            out.append(VersionFolder(vdir, error=exc))
            continue
        out.append(VersionFolder(vdir, manifest=m, leftovers=uncommitted_files(vdir, m)))
    return out


def uncommitted_files(vdir: Path, m: Manifest) -> list[Path]:
    """Temporary files and Parquet files that ``m`` does not list, in a version folder."""
    known = {p.file for p in m.partitions} | {p.file for p in m.errors} | {SCHEMA_FILE, MANIFEST}
    return [f for f in sorted(vdir.iterdir())
            if f.name not in known and (f.name.startswith(".tmp-") or f.suffix == ".parquet")]


def remove(paths: list[Path]) -> None:
    """Delete leftovers (folders whole); the caller holds the feature set's lock."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

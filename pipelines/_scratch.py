"""A job's scratch folders in the temporary directory, and the ones killed jobs left behind.

A job removes its scratch folders (the key index, Ray's staging) when it ends, but a killed job cannot: each left up
to tens of MB in ``TMPDIR`` (a crash-test run left 60). Folder names carry the owning process id
(``featurestore-keys-<pid>-<random>``), so the next job removes the folders of processes that are gone. A live
process's folders are never touched (a reused pid only makes a leftover wait for the next job).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def scratch_dir(kind: str) -> Path:
    """A new folder ``featurestore-<kind>-<pid>-<random>`` in the temporary directory, after removing the ones of
    that kind whose process is gone."""
    remove_orphans(kind)
    return Path(tempfile.mkdtemp(prefix=f"featurestore-{kind}-{os.getpid()}-"))


def remove_orphans(kind: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``kind`` scratch folders of dead processes under ``root`` (default: the temporary directory)."""
    pattern = re.compile(rf"featurestore-{re.escape(kind)}-(\d+)-")
    removed = []
    base = Path(root or tempfile.gettempdir())
    for path in base.glob(f"featurestore-{kind}-*"):
        found = pattern.match(path.name)
        if found and path.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True

"""A job's scratch folders in the temporary directory, and the ones killed jobs left behind.

A job removes its scratch folders (the key index, Ray's staging) when it ends, but a killed job cannot: each left up
to tens of MB in ``TMPDIR`` (a crash-test run left 60). Folder names carry the machine and the owning process id
(``featurestore-keys-<host hash>-<pid>-<random>``), so the next job on the same machine removes the folders of its
processes that are gone. A live process's folders are never touched (a reused pid only makes a leftover wait for the
next job), nor are another machine's or container's (a ``/tmp`` shared between them, where our pids mean nothing).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path


def scratch_dir(kind: str) -> Path:
    """A new folder ``featurestore-<kind>-<host hash>-<pid>-<random>`` in the temporary directory, after removing the
    ones of that kind whose process (on this machine) is gone."""
    remove_orphans(kind)
    return Path(tempfile.mkdtemp(prefix=f"featurestore-{kind}-{_host()}-{os.getpid()}-"))


def remove_orphans(kind: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``kind`` scratch folders of this machine's dead processes under ``root`` (default: the temporary
    directory)."""
    host = _host()
    pattern = re.compile(rf"featurestore-{re.escape(kind)}-{host}-(\d+)-")
    removed = []
    base = Path(root or tempfile.gettempdir())
    for path in base.glob(f"featurestore-{kind}-{host}-*"):
        found = pattern.match(path.name)
        if found and path.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _host() -> str:
    """Eight hex digits of the host name: which machine (or container) a scratch folder's pid belongs to."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True

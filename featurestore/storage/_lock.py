"""One writer per feature set: an advisory lock file, waited on with a timeout.

Built on the ``filelock`` library: ``flock`` on POSIX (released when the process dies, so no stale locks),
``LockFileEx`` on Windows, and the lock file is opened with ``O_NOFOLLOW``, so a symlink planted in its place is
never followed (it would otherwise truncate whatever it points at). We refuse such a link up front with a clear error.
"""

from __future__ import annotations

from pathlib import Path

import filelock

from featurestore.errors import FeatureStoreError, LockTimeoutError
from featurestore.storage._layout import LOCK_FILE, set_dir


class FileLock:
    """An exclusive lock on ``path`` for the duration of a ``with`` block (or ``acquire``/``release``)."""

    def __init__(self, path: Path, *, timeout: float = 60.0, what: str = "this feature set") -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.what = what
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            raise FeatureStoreError(
                f"The lock file {self.path} is a symbolic link; refusing to follow it. Remove the link and retry."
            )
        lock = filelock.FileLock(self.path, timeout=self.timeout, is_singleton=False, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeoutError(
                f"Another writer has held the lock on {self.what} for more than {self.timeout:g}s "
                f"({self.path}). Wait for it to finish, or pass a longer lock_timeout."
            ) from None
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def feature_set_lock(root: Path, name: str, *, timeout: float) -> FileLock:
    """The write lock of feature set ``name``: held by its one writer for a whole run, and by ``doctor --clean``."""
    return FileLock(set_dir(root, name) / LOCK_FILE, timeout=timeout, what=f"feature set {name!r}")

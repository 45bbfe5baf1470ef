"""One writer per feature set: an advisory lock file, waited on with a timeout."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import LockTimeoutError


class FileLock:
    """An exclusive ``flock`` on ``path``; released on close or when the process dies (no stale locks)."""

    def __init__(self, path: Path, *, timeout: float = 60.0, what: str = "this feature set") -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeoutError(
                        f"Another writer has held the lock on {self.what} for more than {self.timeout:g}s "
                        f"({self.path}). Wait for it to finish, or pass a longer lock_timeout."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""Durable files: written whole or not at all, and on disk before anything points at them.

The store's manifests, caches and indexes and the stackers' model folders all write through these, so a kill at any
instant leaves the old file or the new one, never a torn mixture.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries: a rename inside it) to disk.

    Windows cannot open a folder, so a folder's flush is skipped there; everywhere else a failure is raised, since a
    write that did not reach the disk must not be reported as done.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        if os.name == "nt" and Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable_text(path: Path, text: str) -> None:
    """Write ``path`` in place and flush it to disk: for files inside a folder that is itself put in place atomically."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a flushed temporary file beside it, renamed over it, the folder
    flushed. Readers see the old content or the new, whole."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix or ".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_crc32(path: Path, block_bytes: int = 1 << 18) -> int:
    """CRC32 of a file, read into one reused buffer.

    ``f.read(n)`` allocates ``n`` bytes before it knows the file is shorter: with a 8 MB ``n`` every partition's
    checksum briefly held 8 MB, which a job's memory samples caught at random (and a flat-memory test with them).
    """
    crc = 0
    buffer = bytearray(block_bytes)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
    return crc

"""Where encoders keep derived files (weight hashes, ONNX exports), and the cached weight hash itself.

Hashing ~100 MB of weights on every job start would cost a second or more, so each file's sha256 is
remembered in a small JSON file keyed by absolute path and stamped with (size, mtime, ctime, inode): a changed file
is hashed again. The ctime is what catches a rewrite that keeps the size and puts the mtime back (``os.utime``,
``touch -r``): no user-level call can set it, so only changing the clock or writing the disk underneath the file
system goes unseen. This guards against damaged, stale or replaced files, not against someone who can also rewrite
the cache (or an ONNX export's ``export.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cache_dir", "cache_dir_overridden", "file_sha256", "files_sha256", "sha256_file"]

_HASHES_FILE = "file-hashes.json"
_lock = threading.Lock()


def cache_dir_overridden() -> bool:
    """True when FEATURESTORE_CACHE_DIR is set: then every derived file goes there, none beside the weights."""
    return bool(os.environ.get("FEATURESTORE_CACHE_DIR"))


def cache_dir() -> Path:
    """``$FEATURESTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/featurestore``, else ``~/.cache/featurestore``."""
    explicit = os.environ.get("FEATURESTORE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "featurestore"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, from the cache when its size, mtime, ctime and inode have not changed."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    with _lock:
        cache = _read_cache()
        entry = cache.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    value = sha256_file(path)
    with _lock:
        cache = _read_cache()
        cache[key] = {"stamp": stamp, "sha256": value}
        _write_cache(cache)
    return value


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read now (no cache): for files just written, e.g. under a temporary name."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(root: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]]) -> str:
    """One digest for a model's weight files.

    A single file gives its own sha256 (what ``sha256sum`` and the Hugging Face hub show); several give the sha256
    of sorted ``relative path NUL file sha256`` lines, so the digest does not depend on where the directory lies.
    """
    root = Path(root).resolve()
    files = list(files)
    if len(files) == 1:
        return file_sha256(files[0])
    lines = sorted(f"{Path(f).resolve().relative_to(root).as_posix()}\0{file_sha256(f)}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _read_cache() -> dict:
    try:
        with open(cache_dir() / _HASHES_FILE, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    """Atomic replace; a cache we cannot write only costs a re-hash next time."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".file-hashes-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=0, sort_keys=True)
        os.replace(tmp, directory / _HASHES_FILE)
    except OSError:
        pass

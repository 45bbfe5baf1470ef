"""Manifests: the truth about a feature set version (its spec and committed partitions), replaced atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Partition:
    file: str
    rows: int
    bytes: int
    crc32: int
    run_id: str
    created_at: str


@dataclass
class Manifest:
    """One feature set version: what its rows mean (spec) and which files hold them (partitions)."""

    name: str
    version: int
    key: list[str]
    dim: int
    dtype: str
    spec: dict[str, Any]
    columns: dict[str, str]  # column name -> Arrow type string; every partition has exactly these
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now)
    next_part: int = 0
    has_updates: bool = False  # some key was re-written with new content: views must keep the newest row
    partitions: list[Partition] = field(default_factory=list)
    errors: list[Partition] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def rows_written(self) -> int:
        return sum(p.rows for p in self.partitions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        data["partitions"] = [Partition(**p) for p in data.get("partitions", [])]
        data["errors"] = [Partition(**p) for p in data.get("errors", [])]
        return cls(**data)


def read_manifest(version_dir: Path) -> Manifest:
    with open(version_dir / MANIFEST, encoding="utf-8") as f:
        return Manifest.from_dict(json.load(f))


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    """Write to a temporary file, fsync, then rename over the old manifest: readers see the old or the new, whole."""
    atomic_write_text(version_dir / MANIFEST, manifest.to_json())


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            crc = zlib.crc32(chunk, crc)
    return crc


def list_versions(set_dir: Path) -> list[int]:
    """Committed versions of a feature set: folders ``v<k>`` that hold a manifest."""
    if not set_dir.is_dir():
        return []
    out = []
    for child in set_dir.iterdir():
        m = _VERSION_DIR.match(child.name)
        if m and (child / MANIFEST).is_file():
            out.append(int(m.group(1)))
    return sorted(out)

"""Manifests: the truth about a feature set version (its spec and committed partitions), replaced atomically.

The folder layout they live in (``sets/<name>/v<k>/``) is ``_layout``'s.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from featurestore.errors import CorruptStoreError, ValidationError
from featurestore.storage._atomic import atomic_write_text
from featurestore.storage._layout import MANIFEST, VERSION_DIR
from featurestore.storage._names import NAME_PATTERN

FORMAT_VERSION = 1
SCHEMA_FILE = "schema.parquet"  # an empty table with the version's schema: views read it so a version with no rows still has columns
# Files a manifest may name: plain names inside its own version folder, never a path.
PARTITION_FILE = re.compile(r"^(part|errors)-[A-Za-z0-9_.-]{1,120}\.parquet$")
MAX_DIM = 1 << 16
_TYPE_STRING = re.compile(r"^[A-Za-z0-9_<>\[\]:, ()=+-]{1,200}$")  # pyarrow type strings, e.g. fixed_size_list<...>[384]


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
    # count, norm_mean, norm_std, mean (dim floats): see ``_stats``. None for error files and older manifests.
    stats: dict[str, Any] | None = None


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
        data = asdict(self)
        for part in (*data["partitions"], *data["errors"]):  # no statistics (error files): no key, the older shape
            if part.get("stats") is None:
                part.pop("stats", None)
        return json.dumps(data, indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """Build a manifest from parsed JSON, checking every field's type and range (a manifest is untrusted input).

        Values from here reach SQL view definitions and file paths, so anything unexpected is refused with a
        :class:`ValueError` naming the field, never passed on.
        """
        if not isinstance(data, dict):
            raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ValidationError(f"unknown field(s) {unknown}")
        missing = sorted(k for k in ("name", "version", "key", "dim", "dtype", "spec", "columns") if k not in data)
        if missing:
            raise ValidationError(f"missing field(s) {missing}")
        _check(isinstance(data["name"], str) and NAME_PATTERN.match(data["name"]), "name", data["name"], "a feature set name")
        _check(_is_int(data["version"], 1, 10**9), "version", data["version"], "an int >= 1")
        key = data["key"]
        _check(isinstance(key, list) and key and all(isinstance(k, str) and 0 < len(k) <= 256 for k in key),
               "key", key, "a non-empty list of column names")
        _check(_is_int(data["dim"], 1, MAX_DIM), "dim", data["dim"], f"an int in [1, {MAX_DIM}]")
        _check(data["dtype"] in ("float32", "float16"), "dtype", data["dtype"], "'float32' or 'float16'")
        _check(isinstance(data["spec"], dict), "spec", data["spec"], "an object")
        columns = data["columns"]
        _check(isinstance(columns, dict) and all(
            isinstance(k, str) and 0 < len(k) <= 256 and isinstance(v, str) and _TYPE_STRING.match(v)
            for k, v in columns.items()), "columns", columns, "an object of column name -> Arrow type")
        if columns:  # the columns promise the key and a vector of the manifest's dim
            missing_keys = [k for k in key if k not in columns]
            _check(not missing_keys, "key", key, f"columns of the partitions (missing {missing_keys})")
            embedding = columns.get("embedding", "")
            _check(embedding.startswith("fixed_size_list<") and embedding.endswith(f"[{data['dim']}]"), "dim",
                   f"dim={data['dim']} with embedding column {embedding}", "the width of the embedding column")
        for name in ("next_part",):
            if name in data:
                _check(_is_int(data[name], 0, 10**12), name, data[name], "an int >= 0")
        for name in ("has_updates",):
            if name in data:
                _check(isinstance(data[name], bool), name, data[name], "true or false")
        for name in ("provenance",):
            if name in data:
                _check(isinstance(data[name], dict), name, data[name], "an object")
        for name in ("created_at",):
            if name in data:
                _check(isinstance(data[name], str), name, data[name], "a string")
        if "format_version" in data:
            _check(_is_int(data["format_version"], 1, FORMAT_VERSION), "format_version", data["format_version"],
                   f"an int <= {FORMAT_VERSION} (a newer featurestore wrote it?)")
        runs = data.get("runs", [])
        _check(isinstance(runs, list) and all(isinstance(r, dict) and isinstance(r.get("run_id"), str) for r in runs),
               "runs", "...", "a list of run records")
        for field_name in ("partitions", "errors"):
            items = data.get(field_name, [])
            _check(isinstance(items, list), field_name, type(items).__name__, "a list")
            data[field_name] = [_partition(p, f"{field_name}[{i}]", dim=data["dim"], vectors=field_name == "partitions")
                                for i, p in enumerate(items)]
        seen = [p.file for p in data["partitions"] + data["errors"]]
        if len(seen) != len(set(seen)):
            raise ValidationError("a partition file is listed twice")
        return cls(**data)


_FIELDS = set(Manifest.__dataclass_fields__)


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _check(ok: Any, field_name: str, value: Any, expected: str) -> None:
    if not ok:
        shown = repr(value)
        raise ValidationError(f"field {field_name!r} must be {expected}; got {shown[:80]}{'...' if len(shown) > 80 else ''}")


def _partition(p: Any, where: str, *, dim: int, vectors: bool) -> Partition:
    _check(isinstance(p, dict) and _PARTITION_FIELDS - {"stats"} <= set(p) <= _PARTITION_FIELDS, where, p,
           "an object with file, rows, bytes, crc32, run_id, created_at and optionally stats")
    _check(isinstance(p["file"], str) and PARTITION_FILE.match(p["file"]), f"{where}.file", p["file"],
           "a part-*.parquet or errors-*.parquet file name inside the version folder")
    _check(_is_int(p["rows"], 0, 1 << 48), f"{where}.rows", p["rows"], "an int >= 0")
    _check(_is_int(p["bytes"], 0, 1 << 50), f"{where}.bytes", p["bytes"], "an int >= 0")
    _check(_is_int(p["crc32"], 0, 0xFFFFFFFF), f"{where}.crc32", p["crc32"], "a CRC32")
    _check(isinstance(p["run_id"], str) and isinstance(p["created_at"], str), f"{where}.run_id", p["run_id"], "a string")
    if p.get("stats") is not None:
        _check(vectors, f"{where}.stats", p["stats"], "absent (an error file holds no vectors)")
        _check_stats(p["stats"], f"{where}.stats", dim=dim)
    return Partition(**p)


_PARTITION_FIELDS = set(Partition.__dataclass_fields__)
_STATS_FIELDS = {"count", "norm_mean", "norm_std", "mean"}


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_stats(s: Any, where: str, *, dim: int) -> None:
    """A partition's statistics (see ``_stats``): the keys, a count >= 1, finite norms >= 0 and a finite mean vector of
    the manifest's dim. A count that differs from the partition's rows does not refuse the whole manifest (``doctor``
    names a partition whose row count is wrong); ``_stats.version_stats`` leaves such statistics out."""
    _check(isinstance(s, dict) and set(s) == _STATS_FIELDS, where, s, "an object with count, norm_mean, norm_std, mean")
    _check(_is_int(s["count"], 1, 1 << 48), f"{where}.count", s["count"], "an int >= 1")
    for name in ("norm_mean", "norm_std"):
        _check(_is_number(s[name]) and s[name] >= 0, f"{where}.{name}", s[name], "a finite number >= 0")
    mean = s["mean"]
    _check(isinstance(mean, list) and len(mean) == dim and all(map(_is_number, mean)), f"{where}.mean",
           mean, f"a list of {dim} finite numbers (the manifest's dim)")


def read_manifest(version_dir: Path) -> Manifest:
    """Read and check ``version_dir/manifest.json``; any problem is a :class:`CorruptStoreError` naming the file."""
    path = version_dir / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        m = Manifest.from_dict(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CorruptStoreError(
            f"Unreadable manifest {path}: {exc}.\n  Help: run `featurestore doctor` for the whole store; restore the "
            "file from a backup, or remove the version folder to drop that version."
        ) from None
    where = VERSION_DIR.match(version_dir.name)
    if m.name != version_dir.parent.name or where is None or int(where.group(1)) != m.version:
        raise CorruptStoreError(
            f"Manifest {path} says it is {m.name!r} v{m.version} but lies in {version_dir.parent.name}/{version_dir.name}."
        )
    return m


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    """Write to a temporary file, fsync, then rename over the old manifest: readers see the old or the new, whole."""
    atomic_write_text(version_dir / MANIFEST, manifest.to_json())

"""What ``featurestore show`` prints: everything about one feature set version, as data, and that data as TOML."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import featurestore
from featurestore.query import errors_view
from featurestore.storage import Manifest, float32_list, version_stats


def set_info(store: featurestore.Store, name: str, version: int | None = None, *,
             partitions: bool = False) -> dict[str, Any]:
    """One feature set version: spec, provenance, columns, sizes and every run; with ``partitions`` every data and
    error file (rows, bytes, created, run, CRC32)."""
    fs = store.get(name, version)
    m = fs.manifest
    info = {
        "name": fs.name, "version": fs.version, "versions": store.versions(name), "view": fs.view,
        "errors_view": errors_view(fs.name), "rows": fs.count(), "dim": fs.dim, "dtype": fs.dtype, "key": fs.key,
        "spec": m.spec, "provenance": m.provenance, "columns": m.columns, "partitions": len(m.partitions),
        "bytes": sum(p.bytes for p in m.partitions), "error_rows": sum(p.rows for p in m.errors), "runs": m.runs,
        "stats": _stats(m),
    }
    if partitions:
        info["partition_files"] = [
            {"file": p.file, "kind": kind, "rows": p.rows, "bytes": p.bytes, "created_at": p.created_at,
             "run_id": p.run_id, "crc32": p.crc32, "stats": p.stats}
            for kind, parts in (("rows", m.partitions), ("errors", m.errors)) for p in parts]
    return info


def _stats(m: Manifest) -> dict[str, Any] | None:
    """The version's vector statistics, pooled from its partitions' (no row is read; see ``featurestore.storage._stats``)."""
    stats = version_stats(m.partitions, m.dim, has_updates=m.has_updates)
    return None if stats is None else {**stats, "mean": float32_list(stats["mean"])}


def stats_text(stats: dict[str, Any] | None) -> str:
    """One line for people: what the statistics cover, the norms, the centroid and the spread."""
    if stats is None:
        return "statistics: none (no rows yet, or only partitions written before statistics were kept)"
    covers = f"{stats['count']:,} committed rows"
    if stats["rows_without_stats"]:
        covers += f"; {stats['rows_without_stats']:,} older rows have none"
    if not stats["view"] and not stats["rows_without_stats"]:
        covers += ", rewritten keys counted once per write"
    return (f"statistics ({covers}): norm {stats['norm_mean']:.4g} ± {stats['norm_std']:.3g}  centroid norm "
            f"{stats['centroid_norm']:.4g}  spread {stats['spread']:.4g} (rms distance to the centroid)")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(data: dict[str, Any]) -> str:
    """``data`` (JSON-like) as a TOML document. TOML has no null: keys whose value is None are listed in a comment."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if v is not None and not _is_table(v) and not _is_table_list(v)}
    nulls = [k for k, v in data.items() if v is None]
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    if nulls:
        lines.append(f"# not set (null): {', '.join(nulls)}")
    for k, v in data.items():
        if _is_table(v):
            lines += ["", f"[{'.'.join(_key(p) for p in [*path, k])}]"]
            _table(v, [*path, k], lines)
        elif _is_table_list(v):
            for item in v:
                lines += ["", f"[[{'.'.join(_key(p) for p in [*path, k])}]]"]
                _table(item, [*path, k], lines)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) if not math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    return json.dumps(str(v), ensure_ascii=False)

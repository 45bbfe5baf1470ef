"""Choosing the version a write goes to, from its spec and the ``version`` it asked for.

``None`` appends to the latest version (a different spec is an error naming what differs), ``"new"`` starts a
version, ``"auto"`` appends to the newest version with the same spec and key (or starts one), an int names a
version. A version that does not exist yet is only described here (a :class:`Manifest` with no partitions): its
folder and manifest are made by its first commit, so a write of no rows leaves nothing behind.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurestore.errors import SpecMismatchError, ValidationError
from featurestore.storage._format import DTYPES
from featurestore.storage._layout import list_versions, set_dir, version_dir
from featurestore.storage._manifest import Manifest, read_manifest
from featurestore.utils._validation import Interval, StrOptions

# The accepted values of a writer's ``version`` parameter, for ``validate_params``.
VERSION_CONSTRAINT = [StrOptions({"new", "auto"}), Interval(numbers.Integral, 1, None, closed="left"), None]


def full_spec(user_spec: Mapping[str, Any], dim: int, dtype: str | None) -> dict[str, Any]:
    """The spec as stored: the user's, with ``metric`` (default cosine), ``dim`` and ``dtype``, as plain JSON."""
    spec = dict(user_spec)
    spec.setdefault("metric", "cosine")
    spec["dim"] = dim
    spec["dtype"] = dtype or spec.get("dtype") or "float32"
    if spec["dtype"] not in DTYPES:
        raise ValidationError(f"Unsupported dtype {spec['dtype']!r} in the spec; expected one of {sorted(DTYPES)}.")
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def choose_version(root: Path, name: str, *, key: list[str], spec: dict[str, Any], requested: int | str | None,
                   provenance: Mapping[str, Any]) -> tuple[Path, Manifest]:
    """The folder and manifest of the version rows with ``spec`` and ``key`` go to (a new one, not yet on disk,
    when none fits)."""
    dim = spec["dim"]
    versions = list_versions(set_dir(root, name))
    target: int | None = None
    if requested == "new" or not versions:
        if _is_int(requested) and requested not in versions:
            raise SpecMismatchError(f"Feature set {name!r} has no version {requested}. Versions: {versions or 'none'}.")
    elif requested == "auto":
        for v in reversed(versions):
            m = read_manifest(version_dir(root, name, v))
            if _same_except(m.spec, spec, "dim") and m.key == key:
                if m.dim != dim:
                    raise ValidationError(
                        f"Cannot append to {name!r} v{v}: its spec has dim={m.dim} but the rows have dim={dim}. "
                        "The dim belongs to the spec; rows of another dim are refused."
                    )
                target = v
                break
    else:
        v = versions[-1] if requested is None else int(requested)
        if v not in versions:
            raise SpecMismatchError(f"Feature set {name!r} has no version {v}. Versions: {versions}.")
        m = read_manifest(version_dir(root, name, v))
        _check_compatible(name, m, key=key, spec=spec)
        target = v
    if target is None:
        new = (versions[-1] + 1) if versions else 1
        return version_dir(root, name, new), Manifest(name=name, version=new, key=key, dim=dim, dtype=spec["dtype"],
                                                      spec=spec, columns={}, provenance=dict(provenance))
    vdir = version_dir(root, name, target)
    return vdir, read_manifest(vdir)


def _check_compatible(name: str, m: Manifest, *, key: list[str], spec: dict[str, Any]) -> None:
    where = f"{name!r} v{m.version}"
    if m.dim != spec["dim"]:
        raise ValidationError(
            f"Cannot append to {where}: its spec has dim={m.dim} but the rows have dim={spec['dim']}.\n"
            "  Help: the dim belongs to the spec; rows of another dim are refused."
        )
    if m.key != key:
        raise SpecMismatchError(f"Cannot append to {where}: it is keyed by {m.key}, not {key}.")
    if m.spec != spec:
        diff = sorted(k for k in set(m.spec) | set(spec) if m.spec.get(k) != spec.get(k))
        details = ", ".join(f"{k}: {m.spec.get(k)!r} -> {spec.get(k)!r}" for k in diff)
        raise SpecMismatchError(
            f"Cannot append to {where}: its encoder spec differs ({details}).\n"
            "  Help: a different encoder spec makes a new version; pass version=\"new\" (or \"auto\")."
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _same_except(a: Mapping[str, Any], b: Mapping[str, Any], *ignored: str) -> bool:
    keys = (set(a) | set(b)) - set(ignored)
    return all(a.get(k) == b.get(k) for k in keys)

"""``featurestore sql --param NAME=VALUE``: values for the query's ``$NAME`` placeholders, from the command line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["n=10", "q=@v.npy"]`` -> ``{"n": 10, "q": [0.1, ...]}``; a bad item is a usage error naming it."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().lstrip("$")
        if not sep or not _NAME.match(name):
            raise click.BadParameter(f"{item!r} is not NAME=VALUE (NAME as in $NAME in the query)", param_hint="--param")
        if name in out:
            raise click.BadParameter(f"${name} is given twice", param_hint="--param")
        out[name] = parse_value(raw)
    return out


def parse_value(raw: str) -> Any:
    """JSON if it parses as JSON, else the text itself; ``@FILE`` reads the file (see :func:`read_value_file`)."""
    if raw.startswith("@"):
        return read_value_file(Path(raw[1:]))
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def read_value_file(path: Path) -> Any:
    """A .npy array (as a list: DuckDB casts it, e.g. ``$q::FLOAT[384]``), a .json value, or a text file's text."""
    if not path.is_file():
        raise click.BadParameter(f"@{path}: no such file", param_hint="--param")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise click.BadParameter(f"@{path}: not a plain .npy array ({exc})", param_hint="--param") from None
        if array.ndim > 2 or array.dtype.kind not in "biuf":
            raise click.BadParameter(f"@{path}: expected a 1-D (or 2-D) numeric array, got {array.dtype} with shape "
                                     f"{array.shape}", param_hint="--param")
        return array.tolist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"@{path}: not valid JSON ({exc})", param_hint="--param") from None
    return text.rstrip("\n")

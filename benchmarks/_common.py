"""Shared benchmark helpers: machine facts first, warm once, median of repeats, one ratio per line."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata


def header(*packages: str) -> None:
    cpus = os.cpu_count()
    versions = "  ".join(f"{p} {_version(p)}" for p in packages)
    print(f"# {platform.platform()}  python {platform.python_version()}  cpus {cpus}")
    print(f"# {versions}")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def median_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

"""Tips the command line prints after a job: only where a measurement says they help, and not on every run.

The bf16 tip: on an Intel CPU with AMX-BF16 units, ``--precision bf16`` ran the MiniLM job 2.0x faster than our fp32
job (cosine to fp32 >= 0.9999). On an AMD EPYC with AVX512-BF16 it ran *slower* (100 rows: 14.0 s in bf16 vs 9.8 s
in fp32), and AVX512-BF16-only Intel or aarch64 CPUs were never measured: no tip there. A tiny job has nothing to
gain, so the tip needs a job that took a while, and it is shown at most once a week per machine (a marker file in
the featurestore cache folder).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIN_ROWS = 1_000
MIN_SECONDS = 30.0
EVERY_S = 7 * 24 * 3600
MARKER = "tips/bf16"

BF16_TIP = ("tip: this CPU has AMX-BF16 units; on such a CPU --precision bf16 ran this job ~2x faster than fp32, "
            "with vectors within cosine 0.9999 of fp32 (same spec, so it appends to this version). "
            "Shown at most once a week.")


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``... from /proc/cpuinfo; empty where it is not said (aarch64, no /proc)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def bf16_measured_faster() -> bool:
    """Only where bf16 was measured faster than fp32: an Intel CPU with AMX-BF16 units."""
    from featurestore.encoders.runtime import cpu_flags

    return cpu_vendor() == "GenuineIntel" and "amx_bf16" in cpu_flags()


def bf16_tip(results: Sequence[dict[str, Any]], *, now: float | None = None) -> str | None:
    """The tip after an embedding job (``EmbedResult.to_dict()`` per set), or None.

    Shown for an fp32 run on the CPU with a backend --precision applies to, that wrote at least ``MIN_ROWS`` rows
    in at least ``MIN_SECONDS``, on a CPU where bf16 was measured faster, when not shown in the last week.
    """
    ran = [r for r in results if r.get("rows_written", 0) >= MIN_ROWS and r.get("seconds", 0) >= MIN_SECONDS]
    cpu_fp32 = any(r.get("provenance", {}).get("device") == "cpu" and r.get("provenance", {}).get("precision") == "fp32"
                   and r.get("provenance", {}).get("backend") in ("onnx", "torch") for r in ran)
    if not cpu_fp32 or not bf16_measured_faster():
        return None
    return BF16_TIP if _due(now if now is not None else time.time()) else None


def _due(now: float) -> bool:
    """True (and the marker touched) unless the tip was shown less than a week ago."""
    from featurestore.encoders.runtime import cache_dir

    marker = Path(cache_dir()) / MARKER
    try:
        if now - marker.stat().st_mtime < EVERY_S:
            return False
    except OSError:
        pass
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os.utime(marker, (now, now))
    except OSError:
        return False  # a read-only cache: better no tip than one on every run
    return True

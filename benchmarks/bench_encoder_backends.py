"""Text encoding throughput: plain sentence-transformers vs our encoder's torch, ONNX fp32 and ONNX int8 paths.

    python -m benchmarks.bench_encoder_backends                 # 3,000 texts, all-MiniLM-L6-v2, 3 rounds
    python -m benchmarks.bench_encoder_backends --tune          # also sweep the mini-batch token budget
    python -m benchmarks.bench_encoder_backends --texts my.txt  # one text per line

The texts are paragraphs of the Python standard library's docstrings: real English prose, offline, 10-200
words. Every case encodes the same texts end to end (tokenization, batching, pooling, normalisation); the cases
run interleaved, round after round, and each line shows the median rate, the cosine of its vectors to the
baseline's (fp32) vectors, and its speed ratio against ``st.encode`` (batch_size=32), the baseline named on the
line. Goal: the default encoder >= 1.5x the baseline, with cosine >= 0.99999.

First-use costs (the one-off ONNX export and int8 quantization, kept in the cache for later runs) are printed
separately and not counted in the rates.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from ._common import header

MODEL = "sentence-transformers:all-MiniLM-L6-v2"
# Modules whose docstrings we read; importing them has no side effects (no GUI, no browser, no network).
_DOC_MODULES = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections concurrent.futures "
    "configparser contextlib copy csv dataclasses datetime decimal difflib email enum fileinput fnmatch "
    "fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http.client http.server "
    "imaplib inspect io ipaddress itertools json locale logging lzma mailbox math mimetypes multiprocessing "
    "numbers operator optparse os pathlib pickle pkgutil platform plistlib poplib pprint queue random re "
    "sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl statistics "
    "string struct subprocess tarfile tempfile textwrap threading timeit tokenize traceback types typing "
    "unittest urllib.parse urllib.request uuid warnings weakref xml.dom.minidom xml.etree.ElementTree "
    "zipfile zlib"
).split()


def docstring_texts(n: int) -> list[str]:
    """Up to ``n`` distinct docstring paragraphs (30-1,200 characters), spread evenly over the modules."""
    seen: set[str] = set()
    found: list[str] = []
    for name in _DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = [module] + [v for _, v in sorted(vars(module).items()) if inspect.isclass(v) or inspect.isfunction(v)]
        for obj in objects:
            for paragraph in (inspect.getdoc(obj) or "").split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if 30 <= len(paragraph) <= 1200 and not paragraph.startswith((">>>", "...")) and paragraph not in seen:
                    seen.add(paragraph)
                    found.append(paragraph)
    step = max(1, len(found) // n)
    return found[::step][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="number of texts (default 3000)")
    parser.add_argument("--texts", help="a UTF-8 file with one text per line instead of docstrings")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--tune", action="store_true", help="also sweep max_batch_tokens and fixed batch sizes")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 case")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from featurestore.encoders import get_encoder
    from featurestore.encoders.runtime import cpu_threads

    threads = cpu_threads()
    torch.set_num_threads(threads)  # ONNX Runtime gets the same count from the encoder
    header("torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers", "numpy")
    print(f"# cpu {_cpu_model()}  cores {threads}  threads: torch {torch.get_num_threads()}, onnxruntime {threads}")

    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()][: args.n]
        source = args.texts
    else:
        texts = docstring_texts(args.n)
        source = f"python {platform.python_version()} docstring paragraphs"
    words = np.array([len(t.split()) for t in texts])
    print(
        f"# texts {len(texts)} ({source}): words mean {words.mean():.1f} median {np.median(words):.0f} "
        f"max {words.max()}; {args.repeat} rounds, median; model {MODEL}"
    )

    path = get_encoder(MODEL, backend="torch").provenance()["model_path"]
    st = SentenceTransformer(path, device="cpu", local_files_only=True)
    cases: dict[str, Callable[[list[str]], np.ndarray]] = {
        "st.encode bs=32": lambda batch: st.encode(batch, batch_size=32)
    }
    variants = [
        ("featurestore torch", {"backend": "torch", "device": "cpu"}),
        ("featurestore onnx fp32", {"backend": "onnx"}),
    ]
    if not args.no_int8:
        variants.append(("featurestore onnx int8", {"backend": "onnx-int8"}))
    if args.tune:
        for tokens in (256, 1024, 2048, 4096):
            variants.append((f"onnx max_batch_tokens={tokens}", {"backend": "onnx", "max_batch_tokens": tokens}))
        for tokens in (512, 2048, 4096):
            variants.append((f"torch max_batch_tokens={tokens}", {"backend": "torch", "max_batch_tokens": tokens}))
        for size in (8, 32):
            variants.append((f"onnx batch_size={size}", {"backend": "onnx", "batch_size": size}))
            variants.append((f"torch batch_size={size}", {"backend": "torch", "batch_size": size}))
    for label, options in variants:
        encoder = get_encoder(MODEL, **options)
        t0 = time.perf_counter()
        encoder.encode(texts[:8])  # loads; exports or quantizes on first use
        load = time.perf_counter() - t0
        prov = encoder.provenance()
        note = f" ({prov['onnx_file']})" if prov.get("onnx_file") else ""
        print(f"# load {label}: {load:.2f} s{note}")
        cases[label] = encoder.encode

    for fn in cases.values():  # warm once
        fn(texts[:64])
    rates: dict[str, list[float]] = {name: [] for name in cases}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            out = fn(texts)
            seconds = time.perf_counter() - t0
            rates[name].append(len(texts) / seconds)
            outputs[name] = np.asarray(out, dtype=np.float32)

    reference = outputs["st.encode bs=32"]
    base = statistics.median(rates["st.encode bs=32"])
    width = max(map(len, cases))
    for name, values in rates.items():
        rate = statistics.median(values)
        cos = _cosines(outputs[name], reference)
        print(
            f"encode n={len(texts)} {name:<{width}}  {rate:7.1f} texts/s  {len(texts) / rate:6.2f} s  "
            f"cos-to-fp32 min {cos.min():.6f} mean {cos.mean():.6f}  vs st.encode bs=32 {rate / base:.2f}x"
        )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()

"""Fit time and held-out macro-F1: ``stackers.StackingClassifier()`` (its defaults) vs scikit-learn's own
``StackingClassifier`` over the same feature blocks, in the same run.

    python -m benchmarks.bench_stack                    # three tasks; embeds 5,000 reviews once (cached in /tmp)
    python -m benchmarks.bench_stack --quick --tasks digits

scikit-learn's stack is built the way a strong user would: one ``make_pipeline(ColumnTransformer(<the block's
columns>), LogisticRegression(C=4))`` per block, out-of-fold on the same kind of folds (stratified; grouped by garment
where the task is grouped), a logistic final estimator. A second variant tunes each block's C by inner CV
(``LogisticRegressionCV``, log loss) under a class-balanced logistic final estimator. Tasks:

- recommend: 5,000 clothing reviews (sample seed 0), 70/30 stratified, target ``Recommended IND`` (82 % positive);
- garment:   the same reviews of the 12 most common ``Class Name`` values, 70/30 grouped by garment (Clothing ID);
- digits:    scikit-learn's 8x8 digits as two blocks (top and bottom halves), 70/30 stratified.

Review blocks: all-MiniLM-L6-v2 (its own output), its hidden layer 3 mean-pooled (both from one forward pass), and
TF-IDF (1-2 grams, min_df 2, sublinear) + TruncatedSVD(128) fitted on the training texts only. Each task also prints
each block's tuned single probe (``LogisticProbeCV(class_weight="auto", scoring="macro_f1", threshold="auto")``) and
the stack's gap to the best of them with a paired bootstrap 95 % interval over the test rows. Every fit runs on one
BLAS thread and ``n_jobs=1`` on both sides, so the times compare work, not threading.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ._common import header

TASKS = ("recommend", "garment", "digits")
MINILM = "sentence-transformers:all-MiniLM-L6-v2"
LAYER = 3  # MiniLM's middle layer, mean pooled, as in the demo
TFIDF_DIM = 128
CACHE = Path("/tmp/featurestore-bench")
GOAL_POINTS = 1.0  # issue 11, recommend task: stack >= best tuned single + 1 point
FLOOR_POINTS = -0.5  # issue 11, every task: the stack is never more than 0.5 points below the best tuned single


# -- machine and data -----------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name, family and model numbers and the vector extensions that matter here (/proc/cpuinfo)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in info:
        import platform

        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    amx = "" if "amx_bf16" in flags else ", no amx"
    return (f"{info['model name']} (family {info.get('cpu family', '?')} model {info.get('model', '?')}; "
            f"{' '.join(simd) or 'no avx2'}{amx})")


def review_frame():
    """The clothing reviews that have a review text, with ``text`` = title + ". " + review as the demo builds it."""
    from pipelines.sources import clothing_reviews

    df = clothing_reviews()
    df = df[df["Review Text"].notna()].copy()
    title = df["Title"].fillna("")
    df["text"] = (title + ". ").where(title != "", "") + df["Review Text"]
    return df


def minilm_blocks(df, cache: Path = CACHE, *, layer: int = LAYER) -> dict[str, np.ndarray]:
    """MiniLM's own output and its hidden layer ``layer`` (mean pooled) for the rows of ``df``, keyed by the frame's
    index in a cache file, so that only rows never embedded before are encoded (both blocks from one pass)."""
    from featurestore.encoders import get_encoder

    file = cache / f"minilm_reviews_layer{layer}.npz"
    ids = df.index.to_numpy().astype(np.int64)
    known = np.zeros(0, dtype=np.int64)
    last = mid = np.zeros((0, 384), dtype=np.float32)
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            known, last, mid = z["ids"], z["last"], z["mid"]
    missing = np.setdiff1d(ids, known)
    if len(missing):
        texts = df.loc[missing, "text"].tolist()
        own = get_encoder(MINILM)
        hidden = get_encoder(MINILM, layer=layer, pooling="mean")
        chunks = [texts[i:i + 512] for i in range(0, len(texts), 512)]
        t0 = time.perf_counter()
        parts = list(own.encode_batches_with([hidden], chunks))
        seconds = time.perf_counter() - t0
        print(f"# embedded {len(texts):,} reviews with MiniLM (last + layer {layer}, one pass) in {seconds:.0f} s "
              f"({len(texts) / seconds:.0f}/s); cached in {file}")
        known = np.concatenate([known, missing])
        last = np.concatenate([last, *(p[0] for p in parts)])
        mid = np.concatenate([mid, *(p[1] for p in parts)])
        cache.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        np.savez(tmp, ids=known, last=last, mid=mid)
        tmp.replace(file)
    row = {int(k): i for i, k in enumerate(known)}
    take = np.array([row[int(k)] for k in ids], dtype=np.int64)
    return {"minilm": last[take], f"minilm_layer{layer}": mid[take]}


def tfidf_svd(train_texts: list[str], texts: list[str], seed: int = 0) -> np.ndarray:
    """TF-IDF (1-2 grams, min_df 2, sublinear) + TruncatedSVD(128) + unit length, fitted on ``train_texts`` only."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         TruncatedSVD(TFIDF_DIM, random_state=seed), Normalizer())
    pipe.fit(train_texts)
    return pipe.transform(texts).astype(np.float32)


# -- tasks ------------------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """One benchmark task: named training and test blocks (same names and dims), labels, optional training groups."""

    name: str
    train: dict[str, np.ndarray]
    y_train: np.ndarray
    test: dict[str, np.ndarray]
    y_test: np.ndarray
    groups: np.ndarray | None = None
    split: str = "stratified"

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y_train)

    def describe(self) -> str:
        dims = " ".join(f"{b}:{x.shape[1]}" for b, x in self.train.items())
        return (f"task   {self.name}  train {len(self.y_train):,}  test {len(self.y_test):,}  classes "
                f"{len(self.classes)}  split {self.split}  blocks {dims}")


def review_tasks(names: list[str], rows: int, cache: Path, seed: int = 0) -> list[Task]:
    """The recommendation and garment-class tasks on ``rows`` reviews (sample seed ``seed``)."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    df = review_frame().sample(n=rows, random_state=seed)
    embedded = minilm_blocks(df, cache)
    texts = df["text"].tolist()
    tasks = []
    if "recommend" in names:
        y = df["Recommended IND"].to_numpy()
        train, test = train_test_split(np.arange(len(df)), test_size=0.3, stratify=y, random_state=seed)
        tasks.append(_review_task("recommend", embedded, texts, y, train, test, seed=seed))
    if "garment" in names:
        top = df["Class Name"].value_counts().index[:12]
        keep = np.flatnonzero(df["Class Name"].isin(top).to_numpy())
        y, garment = df["Class Name"].to_numpy()[keep], df["Clothing ID"].to_numpy()[keep]
        # 30 % of the rows, whole garments: 3 of 10 stratified group folds (reviews of one garment share its class)
        folds = list(StratifiedGroupKFold(10, shuffle=True, random_state=seed).split(keep, y, garment))
        test = np.sort(np.concatenate([f[1] for f in folds[:3]]))
        train = np.setdiff1d(np.arange(len(keep)), test)
        sub = {b: x[keep] for b, x in embedded.items()}
        tasks.append(_review_task("garment", sub, [texts[i] for i in keep], y, train, test, groups=garment,
                                  seed=seed))
    return tasks


def _review_task(name, embedded, texts, y, train, test, *, groups=None, seed=0) -> Task:
    tfidf = tfidf_svd([texts[i] for i in train], texts, seed)
    blocks = {**embedded, "tfidf_svd": tfidf}
    return Task(name, {b: x[train] for b, x in blocks.items()}, y[train], {b: x[test] for b, x in blocks.items()},
                y[test], None if groups is None else groups[train],
                "stratified" if groups is None else "grouped by garment")


def digits_task(rows: int | None, seed: int = 0) -> Task:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    keep = np.arange(len(y))
    if rows is not None and rows < len(y):
        keep, _ = train_test_split(keep, train_size=rows, stratify=y, random_state=seed)
    X, y = X[keep], y[keep]
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    blocks = {"top": X[:, :32], "bottom": X[:, 32:]}
    return Task("digits", {b: x[train] for b, x in blocks.items()}, y[train], {b: x[test] for b, x in blocks.items()},
                y[test])


# -- the two stacks ---------------------------------------------------------------------------------------------------
def sklearn_stack(dims: dict[str, int], cv, *, tuned: bool):
    """scikit-learn's StackingClassifier over column blocks of the concatenated matrix, as a strong user builds it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import StackingClassifier as SkStackingClassifier
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    estimators, start = [], 0
    for name, dim in dims.items():
        select = ColumnTransformer([(name, "passthrough", list(range(start, start + dim)))])
        start += dim
        probe = (LogisticRegressionCV(Cs=CS, scoring="neg_log_loss", max_iter=1000) if tuned
                 else LogisticRegression(C=4, max_iter=1000))
        estimators.append((name, make_pipeline(select, probe)))
    final = LogisticRegression(max_iter=1000, class_weight="balanced" if tuned else None)
    return SkStackingClassifier(estimators, final_estimator=final, cv=cv)


CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # LogisticRegressionCV's grid: its default reaches C=1e4, slow and never chosen
SKLEARN_VARIANTS = {"LR C=4": False, "LRCV, balanced final": True}


def _folds(task: Task, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = np.zeros((len(task.y_train), 1))
    if task.groups is None:
        return list(StratifiedKFold(5, shuffle=True, random_state=seed).split(X, task.y_train))
    return list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, task.y_train, task.groups))


def _timed_fit(fit) -> tuple[Any, float, float]:
    """(model, wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier one."""
    t0, c0 = time.perf_counter(), time.process_time()
    model = fit()
    return model, time.perf_counter() - t0, time.process_time() - c0


def run_task(task: Task, *, repeat: int, n_boot: int, variants: dict[str, bool] = SKLEARN_VARIANTS,
             seed: int = 0) -> dict[str, Any]:
    """Fit both stacks ``repeat`` times (alternating, median time), the tuned singles once; print the task's lines."""
    import stackers
    from stackers.evaluate import bootstrap_indices, bootstrap_scores, interval, score

    print(task.describe(), flush=True)
    X_train = np.hstack(list(task.train.values()))
    X_test = np.hstack(list(task.test.values()))
    dims = {b: x.shape[1] for b, x in task.train.items()}
    folds = _folds(task, seed)
    y_idx = np.searchsorted(task.classes, task.y_test)
    idx = bootstrap_indices(len(y_idx), n_boot, seed)

    def scored(model, X) -> dict[str, Any]:
        proba, pred = model.predict_proba(X), np.searchsorted(task.classes, model.predict(X))
        return {"f1": score(y_idx, proba, pred)["macro_f1"],
                "boot": bootstrap_scores(y_idx, proba, idx, pred)["macro_f1"]}

    fits: dict[str, Any] = {"ours": lambda: stackers.StackingClassifier().fit(task.train, task.y_train,
                                                                                groups=task.groups)}
    for label, tuned in variants.items():
        fits[label] = lambda t=tuned: sklearn_stack(dims, folds, tuned=t).fit(X_train, task.y_train)
    times: dict[str, list[float]] = {k: [] for k in fits}
    cpu: dict[str, list[float]] = {k: [] for k in fits}
    models: dict[str, Any] = {}
    for _ in range(repeat):
        for label, fit in fits.items():
            # Limits taken here, after every library is loaded: a limit set earlier misses a BLAS loaded later
            # (scipy's own OpenBLAS, which scikit-learn's lbfgs uses), and that side then runs threaded.
            with threadpool_limits(limits=1):
                models[label], seconds, cpu_seconds = _timed_fit(fit)
            times[label].append(seconds)
            cpu[label].append(cpu_seconds)
    t = {k: statistics.median(v) for k, v in times.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    ours = scored(models["ours"], task.test)
    result = {"task": task.name, "ours": {"seconds": t["ours"], "cpu_seconds": c["ours"], "f1": ours["f1"],
                                          "meta": models["ours"].meta_name_}}

    singles = {}
    for b in task.train:
        probe = stackers.LogisticProbeCV(class_weight="auto", scoring="macro_f1", threshold="auto")
        probe.fit(task.train[b], task.y_train, groups=task.groups)
        singles[b] = scored(probe, task.test[b])
        cw = "balanced" if probe.class_weight_ == "balanced" else "unweighted"
        cut = "" if probe.threshold_ is None else f"  threshold {probe.threshold_:.2f}"
        print(f"single {task.name}  {b:<14} tuned probe macro-F1 {singles[b]['f1']:.3f}   (C={probe.C_:g}, "
              f"{'standardized' if probe.standardize_ else 'raw'}, {cw}{cut})", flush=True)

    for label in variants:
        theirs = scored(models[label], X_test)
        lo, hi = interval(ours["boot"] - theirs["boot"])
        diff = ours["f1"] - theirs["f1"]
        print(f"stack  {task.name}  sklearn[{label}] {t[label]:.1f} s F1 {theirs['f1']:.3f}   ours {t['ours']:.1f} s "
              f"F1 {ours['f1']:.3f} (meta {models['ours'].meta_name_})   ours-theirs F1 {100 * diff:+.1f} pts "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}]   ours/theirs time {t['ours'] / t[label]:.2f}x "
              f"(cpu {c['ours'] / c[label]:.2f}x)", flush=True)
        result[label] = {"seconds": t[label], "cpu_seconds": c[label], "f1": theirs["f1"], "diff": diff,
                         "diff_ci": (lo, hi)}

    best = max(singles, key=lambda b: singles[b]["f1"])
    gap = ours["f1"] - singles[best]["f1"]
    lo, hi = interval(ours["boot"] - singles[best]["boot"])
    goal = GOAL_POINTS if task.name == "recommend" else FLOOR_POINTS
    verdict = "met" if 100 * gap >= goal else "NOT met"
    print(f"goal   {task.name}  best tuned single {best} {singles[best]['f1']:.3f}   stack {ours['f1']:.3f}   "
          f"stack-best {100 * gap:+.1f} pts, paired 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]   "
          f"goal stack-best >= {goal:+.1f} pts: {verdict}", flush=True)
    result["best_single"] = {"block": best, "f1": singles[best]["f1"], "gap": gap, "ci": (lo, hi)}
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--rows", type=int, default=None, help="reviews sampled (default 5,000; --quick 600)")
    parser.add_argument("--quick", action="store_true",
                        help="few rows and the LR C=4 baseline only: a smoke test, not a measurement")
    parser.add_argument("--repeat", type=int, default=1, help="fits per stack; the median time is printed")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=CACHE, help="where MiniLM embeddings are cached")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    rows = args.rows or (600 if args.quick else 5000)
    n_boot = min(args.n_boot, 200) if args.quick else args.n_boot
    header("scikit-learn", "lightgbm", "numpy", "onnxruntime")
    print(f"# cpu {cpu_model()}; every fit on 1 BLAS thread, n_jobs=1 on both sides; times are medians of "
          f"{args.repeat}")
    results = []
    # LogisticRegressionCV warns about parameters changing in scikit-learn 1.10; the defaults used here are explicit.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    with threadpool_limits(limits=1):
        tasks = review_tasks(names, rows, args.cache) if {"recommend", "garment"} & set(names) else []
        if "digits" in names:
            tasks.append(digits_task(360 if args.quick else None))
        for task in tasks:
            variants = dict(list(SKLEARN_VARIANTS.items())[:1]) if args.quick else SKLEARN_VARIANTS
            results.append(run_task(task, repeat=args.repeat, n_boot=n_boot, variants=variants))
    return results


if __name__ == "__main__":
    main()

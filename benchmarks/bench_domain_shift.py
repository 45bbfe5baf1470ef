"""Domain shift on the clothing reviews: train on one department, predict another; no alignment vs whitening vs CORAL.

    python -m benchmarks.bench_domain_shift
    python -m benchmarks.bench_domain_shift --pairs Tops:Dresses,Dresses:Tops --label rating4 --rows 1500

For each pair (source -> target department), up to ``--rows`` reviews of each (sample seed 0). The target's rows are
split in half, stratified: the adaptation half is passed unlabelled as ``fit(..., target=)``, the other half is scored.
Blocks: all-MiniLM-L6-v2 (its own output) and TF-IDF (1-2 grams, min_df 2, sublinear) + TruncatedSVD(128) fitted on
the source texts only. Every model is ``stackers.StackingClassifier(align=...)`` with its defaults otherwise:

- none:   no alignment;
- whiten: each domain ZCA-whitened by its own statistics (source rows by the source's, target rows by a whitening
          fitted on the adaptation half);
- whiten-src: one whitening fitted on the source rows for both (no ``target``): whitening as plain preprocessing,
          which tells its own effect apart from the alignment's;
- coral:  source rows recoloured to the adaptation half's covariance and mean (CORAL), target rows as they are;
- oracle: no alignment, trained on the adaptation half *with* its labels: how much the shift costs.

Each line gives macro-F1 on the scored half and, for whiten and coral, the paired bootstrap 95 % interval of their
difference to none on the same resamples, whichever way it goes. The last lines average the differences over pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ._common import header
from .bench_stack import CACHE, cpu_model, minilm_blocks, review_frame, tfidf_svd

PAIRS = "Tops:Dresses,Dresses:Tops,Tops:Bottoms,Bottoms:Tops,Dresses:Intimate,Tops:Jackets"
LABELS = {"recommend": "Recommended IND", "rating4": "Rating >= 4"}
ALIGNS = {"none": None, "whiten": "whiten", "whiten-src": "whiten", "coral": "coral"}
COMPARED = ("whiten", "whiten-src", "coral")  # each against none, paired


def department(df, name: str, rows: int, seed: int = 0):
    """Up to ``rows`` reviews of one department (the same sample as the embedding cache holds)."""
    sub = df[df["Department Name"] == name]
    if sub.empty:
        known = sorted(df["Department Name"].dropna().unique())
        raise SystemExit(f"No department named {name!r}. Known: {known}.")
    return sub.sample(n=min(rows, len(sub)), random_state=seed)


def labels(frame, label: str) -> np.ndarray:
    return (frame["Rating"].to_numpy() >= 4).astype(np.int64) if label == "rating4" else \
        frame["Recommended IND"].to_numpy().astype(np.int64)


def run_pair(df, source: str, target: str, *, rows: int, label: str, n_boot: int, oracle: bool,
             cache: Path, seed: int = 0) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    import stackers
    from stackers.evaluate import bootstrap_indices, bootstrap_scores, interval, score

    src, tgt = department(df, source, rows, seed), department(df, target, rows, seed)
    y_src, y_tgt = labels(src, label), labels(tgt, label)
    adapt, test = train_test_split(np.arange(len(tgt)), test_size=0.5, stratify=y_tgt, random_state=seed)
    emb_src, emb_tgt = minilm_blocks(src, cache)["minilm"], minilm_blocks(tgt, cache)["minilm"]
    src_texts, tgt_texts = src["text"].tolist(), tgt["text"].tolist()
    tfidf = tfidf_svd(src_texts, src_texts + tgt_texts, seed)
    train = {"minilm": emb_src, "tfidf_svd": tfidf[:len(src)]}
    tgt_blocks = {"minilm": emb_tgt, "tfidf_svd": tfidf[len(src):]}
    unlabelled = {b: X[adapt] for b, X in tgt_blocks.items()}
    scored = {b: X[test] for b, X in tgt_blocks.items()}
    y_test = y_tgt[test]
    idx = bootstrap_indices(len(test), n_boot, seed)

    out: dict[str, Any] = {"pair": f"{source}->{target}", "n": (len(src), len(adapt), len(test))}
    boots, seconds = {}, {}
    runs = dict(ALIGNS, **({"oracle": None} if oracle else {}))
    for name, align in runs.items():
        t0 = time.perf_counter()
        model = stackers.StackingClassifier(align=align)
        if name == "oracle":
            model.fit(unlabelled, y_tgt[adapt])
        else:
            model.fit(train, y_src, **({} if align is None or name == "whiten-src" else {"target": unlabelled}))
        seconds[name] = time.perf_counter() - t0
        proba, pred = model.predict_proba(scored), model.predict(scored)
        out[name] = score(y_test, proba, pred)["macro_f1"]
        boots[name] = bootstrap_scores(y_test, proba, idx, pred)["macro_f1"]
    parts = [f"none {out['none']:.3f}"]
    for name in COMPARED:
        lo, hi = interval(boots[name] - boots["none"])
        out[f"{name}-none"] = (out[name] - out["none"], lo, hi)
        parts.append(f"{name} {out[name]:.3f} ({100 * (out[name] - out['none']):+.1f} pts [{100 * lo:+.1f}, "
                     f"{100 * hi:+.1f}])")
    if oracle:
        parts.append(f"oracle {out['oracle']:.3f}")
    fit_s = " ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    pos = f"{100 * y_src.mean():.0f}%/{100 * y_tgt.mean():.0f}% positive"
    print(f"shift  {source + '->' + target:<17} train {len(src):,} adapt {len(adapt):,} test {len(test):,} ({pos})   "
          + "   ".join(parts) + f"   fit {fit_s}", flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=PAIRS, help="comma-separated source:target departments")
    parser.add_argument("--label", choices=sorted(LABELS), default="recommend")
    parser.add_argument("--rows", type=int, default=2500, help="reviews per department at most")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--no-oracle", action="store_true", help="skip the model trained on target labels")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where MiniLM embeddings are cached")
    args = parser.parse_args(argv)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        parser.error(f"--pairs must be source:target pairs, e.g. {PAIRS}")
    header("scikit-learn", "lightgbm", "numpy", "onnxruntime")
    print(f"# cpu {cpu_model()}; label {LABELS[args.label]}; blocks minilm + tfidf_svd; "
          "StackingClassifier() defaults; 1 BLAS thread")
    df = review_frame()
    results = []
    with threadpool_limits(limits=1):
        for source, target in pairs:
            results.append(run_pair(df, source, target, rows=args.rows, label=args.label, n_boot=args.n_boot,
                                    oracle=not args.no_oracle, cache=args.cache))
    for name in COMPARED:
        diffs = [r[f"{name}-none"][0] for r in results]
        better = sum(r[f"{name}-none"][1] > 0 for r in results)
        worse = sum(r[f"{name}-none"][2] < 0 for r in results)
        print(f"mean   {name + '-none':<15} over {len(results)} pairs {100 * statistics.mean(diffs):+.2f} pts   "
              f"CI above 0 in {better}, below 0 in {worse}, spanning 0 in {len(results) - better - worse}")
    return results


if __name__ == "__main__":
    main()

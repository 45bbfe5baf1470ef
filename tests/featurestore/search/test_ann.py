"""The optional ANN index (``featurestore.search._ann``): measured recall on real MiniLM vectors, persisted beside the
version, rebuilt (never used) once the version's rows change, and invisible to ``doctor``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featurestore.search import _ann, _matrix

pytest.importorskip("faiss", reason="the 'ann' extra (faiss-cpu) is part of featurestore[all]")


def _ann_files(store, name):
    return sorted(p.name for p in store.get(name).path.iterdir() if p.name.startswith("ann-"))


@pytest.fixture
def vecs(store):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 32)).astype(np.float32)
    matrix = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, 32)).astype(np.float32)
    store.write("vecs", {"id": np.arange(3000), "embedding": matrix}, spec={"encoder": "external:test"})
    return matrix


@pytest.mark.slow
def test_recall_on_real_minilm_vectors_of_the_demo_reviews(store, encoder_cache):
    """1,500 demo reviews embedded with all-MiniLM-L6-v2 (about 40 s on 2 shared cores); 100 other reviews as text
    queries, scored against exact search."""
    import pipelines
    from pipelines.demos._reviews import demo_tables

    source, _, _ = demo_tables(1600, seed=0)
    pipelines.embed(store, source.slice(0, 1500), key="id", text="text", name="reviews_minilm",
                    encoder="sentence-transformers:all-MiniLM-L6-v2", progress=False)
    info = store.build_index("reviews_minilm")
    assert info["status"] == "ready" and info["kind"] == "faiss-hnsw" and info["rows"] == 1500
    assert info["recall_at_10"] >= 0.95 and info["recall_queries"] == 200
    queries = source.slice(1500).column("text").to_pylist()[:100]
    exact = store.search("reviews_minilm", queries, k=10)
    approx = store.search("reviews_minilm", queries, k=10, index="ann")
    hits = 0
    for i in range(len(queries)):
        mask_e = pa.compute.equal(exact.column("query"), i)
        mask_a = pa.compute.equal(approx.column("query"), i)
        hits += len(set(exact.filter(mask_e).column("id").to_pylist())
                    & set(approx.filter(mask_a).column("id").to_pylist()))
    assert hits / (10 * len(queries)) >= 0.95


def test_index_is_persisted_and_reused(store, vecs):
    info = store.build_index("vecs")
    assert info["recall_at_10"] >= 0.95 and info["bytes"] > 0 and info["ef_search"] in _ann.EF_CHOICES
    assert len(_ann_files(store, "vecs")) == 2
    _ann._INDEXES.clear()
    _matrix._MATRICES.clear()
    again = store.build_index("vecs")  # found on disk: not built again
    assert again["created_at"] == info["created_at"]
    got = store.search("vecs", vecs[10], k=5, index="ann")
    assert got.column("id")[0].as_py() == 10
    exact = store.search("vecs", vecs[10], k=5)
    np.testing.assert_allclose(got.column("score").to_numpy(), exact.column("score").to_numpy(), rtol=1e-6)


def test_stale_index_is_rebuilt_never_used(store, vecs):
    store.build_index("vecs")
    old = _ann_files(store, "vecs")
    far = np.full((1, 32), 50.0, dtype=np.float32)
    store.write("vecs", {"id": [99999], "embedding": far}, spec={"encoder": "external:test"})
    assert store.index_info("vecs")["status"] == "stale"
    got = store.search("vecs", far[0], k=1, index="ann")
    assert got.column("id").to_pylist() == [99999]  # the new row is in the index that answered
    info = store.index_info("vecs")
    assert info["status"] == "ready" and info["rows"] == 3001
    assert not set(_ann_files(store, "vecs")) & set(old)  # the stale files are gone


def test_doctor_is_clean_with_index_and_cache_files(store, vecs):
    store.build_index("vecs")
    assert any(p.name.startswith("search-") for p in store.get("vecs").path.iterdir())
    report = store.doctor(clean=True)
    assert report.ok and not report.findings
    assert len(_ann_files(store, "vecs")) == 2  # clean left them alone


def test_a_damaged_index_is_rebuilt(store, vecs):
    store.build_index("vecs")
    _ann._INDEXES.clear()
    for name in _ann_files(store, "vecs"):
        (store.get("vecs").path / name).write_bytes(b"garbage")
    got = store.search("vecs", vecs[3], k=1, index="ann")
    assert got.column("id").to_pylist() == [3]
    assert store.index_info("vecs")["status"] == "ready"


def test_missing_index_reads_as_missing(store, vecs):
    assert store.index_info("vecs") == {"status": "missing", "metric": "cosine"}
    with pytest.raises(ValueError, match="'recall' parameter of Store.build_index"):
        store.build_index("vecs", recall=1.5)

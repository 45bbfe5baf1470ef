"""Exact vector search (``featurestore.search._search``): the same answers as a numpy brute force, ties ordered by key,
``where`` run first, text queries through the set's own encoder, and a cache that follows the version's rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featurestore.errors import SpecMismatchError, ValidationError
from featurestore.search import _matrix, _scoring


def brute_force(matrix: np.ndarray, keys: list, query: np.ndarray, k: int, metric: str) -> tuple[list, np.ndarray]:
    """The reference: float64 scores over every row, best first, ties by key ascending."""
    x = matrix.astype(np.float64)
    q = query.astype(np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        q = q / np.linalg.norm(q)
        scores = x @ q
    elif metric == "dot":
        scores = x @ q
    else:
        scores = -np.linalg.norm(x - q, axis=1)
    order = sorted(range(len(keys)), key=lambda i: (-round(scores[i], 9), keys[i]))[:k]
    return [keys[i] for i in order], scores[order]


@pytest.fixture
def tied(store):
    """300 rows with string keys written out of order; rows come in groups of three identical vectors (exact ties)."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((100, 24)).astype(np.float32)
    matrix = np.repeat(base, 3, axis=0)
    keys = [f"k{i:03d}" for i in range(300)]
    order = rng.permutation(300)
    store.write("tied", {"id": pa.array([keys[i] for i in order]), "embedding": matrix[order]},
                spec={"encoder": "external:test", "metric": "cosine"})
    return matrix, keys


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_exact_search_equals_numpy_with_ties_by_key(store, tied, metric):
    matrix, keys = tied
    rng = np.random.default_rng(2)
    for _ in range(5):
        query = rng.standard_normal(24).astype(np.float32)
        got = store.search("tied", query, k=10, metric=metric)
        want_keys, want_scores = brute_force(matrix, keys, query, 10, metric)
        assert got.column("id").to_pylist() == want_keys
        np.testing.assert_allclose(got.column("score").to_numpy(), want_scores, rtol=1e-5, atol=1e-5)
        assert got.column("rank").to_pylist() == list(range(1, 11))
        # ties: each group of three identical rows comes out together, in key order
        assert want_keys[:3] == sorted(want_keys[:3]) and len({round(s, 6) for s in want_scores[:3]}) == 1


def test_batch_queries_equal_single_queries(store, tied):
    queries = np.random.default_rng(3).standard_normal((7, 24)).astype(np.float32)
    batch = store.search("tied", queries, k=4)
    assert batch.column_names == ["query", "id", "score", "rank"]
    for i, q in enumerate(queries):
        one = store.search("tied", q, k=4)
        part = batch.filter(pa.compute.equal(batch.column("query"), i))
        assert part.column("id").to_pylist() == one.column("id").to_pylist()


def test_blocks_and_rounding_slack_keep_exact_answers(store, monkeypatch):
    """Batches score block by block: many small blocks give the answers one big block gives."""
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((5000, 16)).astype(np.float32)
    store.write("v", {"id": np.arange(5000), "embedding": matrix}, spec={"encoder": "external:test"})
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    whole = store.search("v", queries, k=25)
    monkeypatch.setattr(_scoring, "BLOCK_ROWS", 700)
    monkeypatch.setattr(_scoring, "_SCORE_BYTES", 1)
    assert store.search("v", queries, k=25).equals(whole)
    for i, q in enumerate(queries):
        want, _ = brute_force(matrix, list(range(5000)), q, 25, "cosine")
        assert whole.filter(pa.compute.equal(whole.column("query"), i)).column("id").to_pylist() == want


def test_where_filters_before_scoring(store, tied):
    matrix, keys = tied
    query = matrix[0]
    got = store.search("tied", query, k=5, where="id >= 'k150' and id < 'k200'")
    kept = [i for i, key in enumerate(keys) if "k150" <= key < "k200"]
    want, _ = brute_force(matrix[kept], [keys[i] for i in kept], query, 5, "cosine")
    assert got.column("id").to_pylist() == want
    assert store.search("tied", query, k=5, where="false").num_rows == 0


def test_where_errors_name_the_filter(store, tied):
    with pytest.raises(ValidationError, match="no_such_column"):
        store.search("tied", tied[0][0], where="no_such_column > 1")


def test_key_query_leaves_its_own_row_out_unless_asked(store, tied):
    matrix, keys = tied
    got = store.search("tied", key="k000", k=3)
    assert got.column("id").to_pylist() == ["k001", "k002", got.column("id")[2].as_py()]
    assert "k000" not in got.column("id").to_pylist()
    assert store.search("tied", key="k000", k=3, include_self=True).column("id").to_pylist() == ["k000", "k001", "k002"]
    batch = store.search("tied", key=["k000", "k003"], k=2)
    assert batch.column("id").to_pylist() == ["k001", "k002", "k004", "k005"]
    with pytest.raises(ValidationError, match="No row with key id='nope'"):
        store.search("tied", key="nope")


def test_text_query_uses_the_sets_own_encoder(store):
    import pipelines

    texts = ["soft cotton dress", "wool winter coat", "running shoes for trails", "a silk evening gown", "denim jacket"]
    pipelines.embed(store, pa.table({"id": np.arange(5), "text": texts, "title": [t.upper() for t in texts]}),
                    key="id", text="text", encoder="hash:64", name="docs", progress=False)
    got = store.search("docs", "wool winter coat", k=2)
    assert got.column("id")[0].as_py() == 1
    assert got.column("score")[0].as_py() == pytest.approx(1.0, abs=1e-6)
    batch = store.search("docs", ["denim jacket", "silk evening gown"], k=1)
    assert batch.column("id").to_pylist() == [4, 3]


def test_text_query_refused_when_the_encoder_cannot_be_rebuilt(store, tied):
    with pytest.raises(SpecMismatchError, match="(?s)Cannot encode a text query for .tied.*Help: search with a vector"):
        store.search("tied", "some text")


def test_columns_are_read_for_the_hits(store):
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((50, 8)).astype(np.float32)
    store.write("v", {"id": np.arange(50), "embedding": matrix, "title": [f"t{i}" for i in range(50)],
                      "price": np.arange(50) * 1.5}, spec={"encoder": "external:test"})
    got = store.search("v", matrix[7], k=3, columns=["title", "price"])
    ids = got.column("id").to_pylist()
    assert ids[0] == 7
    assert got.column("title").to_pylist() == [f"t{i}" for i in ids]
    assert got.column("price").to_pylist() == [i * 1.5 for i in ids]
    with pytest.raises(ValidationError, match=r"No column\(s\) \['nope'\] in 'v' v1"):
        store.search("v", matrix[7], columns=["nope"])


def test_compound_keys(store):
    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((40, 8)).astype(np.float32)
    users = [f"u{i % 4}" for i in range(40)]
    items = list(range(40))
    store.write("pairs", {"user": users, "item": items, "embedding": matrix}, key=["user", "item"],
                spec={"encoder": "external:test"})
    got = store.search("pairs", key=("u1", 5), k=2, include_self=True, where="user = 'u1'")
    assert got.column_names == ["user", "item", "score", "rank"]
    assert (got.column("user")[0].as_py(), got.column("item")[0].as_py()) == ("u1", 5)
    assert set(got.column("user").to_pylist()) == {"u1"}
    with pytest.raises(ValidationError, match="compound"):
        store.search("pairs", key="u1")


def test_cache_is_written_once_and_invalidated_by_an_append(store, tied):
    matrix, keys = tied
    store.search("tied", matrix[0], k=1)
    vdir = store.get("tied").path
    caches = sorted(p.name for p in vdir.iterdir() if p.name.startswith("search-"))
    assert len(caches) == 2 and caches[0].endswith("-unit.npy") and caches[1].endswith(".keys.arrow")
    new = np.full((1, 24), 7.0, dtype=np.float32)
    store.write("tied", {"id": ["zzz"], "embedding": new}, spec={"encoder": "external:test", "metric": "cosine"})
    got = store.search("tied", new[0], k=1)
    assert got.column("id").to_pylist() == ["zzz"]  # the new row is found: the old cache was not used
    after = sorted(p.name for p in vdir.iterdir() if p.name.startswith("search-"))
    assert len(after) == 2 and not set(after) & set(caches)  # the stale cache is gone
    report = store.doctor()
    assert report.ok and not report.findings


def test_updated_rows_newest_wins(store):
    store.write("u", {"id": [1, 2], "embedding": np.eye(2, 4, dtype=np.float32)}, spec={"encoder": "external:test"})
    store.write("u", {"id": [1], "embedding": np.array([[0, 0, 1, 0]], np.float32)}, spec={"encoder": "external:test"})
    got = store.search("u", np.array([1, 0, 0, 0], np.float32), k=5)
    assert got.column("id").to_pylist() == [1, 2]  # one row per key; both score 0 now, so ordered by key
    assert got.column("score").to_pylist() == [0.0, 0.0]  # key 1's old row (score 1) is gone
    assert store.search("u", np.array([0, 0, 1, 0], np.float32), k=1).column("id").to_pylist() == [1]


def test_a_damaged_cache_is_rebuilt(store, tied):
    matrix, _ = tied
    first = store.search("tied", matrix[5], k=5)
    vdir = store.get("tied").path
    npy = next(p for p in vdir.iterdir() if p.name.endswith(".npy"))
    npy.write_bytes(npy.read_bytes()[:200])  # truncated
    _matrix._MATRICES.clear()
    assert store.search("tied", matrix[5], k=5).equals(first)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "'k' parameter of Store.search must be an int >= 1"),
    ({"metric": "hamming"}, "'metric' parameter of Store.search"),
    ({"index": "lsh"}, "'index' parameter of Store.search"),
    ({"where": 3}, "'where' parameter of Store.search"),
])
def test_bad_parameters(store, tied, kwargs, match):
    with pytest.raises(ValueError, match=match):
        store.search("tied", tied[0][0], **kwargs)


@pytest.mark.parametrize("query, key, match", [
    (None, None, "exactly one of query"),
    (np.zeros(5, np.float32), None, "dim=24"),
    (np.full(24, np.nan, np.float32), None, "NaN"),
    (np.zeros((2, 3, 24), np.float32), None, "1-D"),
])
def test_bad_queries(store, tied, query, key, match):
    with pytest.raises(ValidationError, match=match):
        store.search("tied", query, key=key)


def test_ann_with_where_is_refused(store, tied):
    with pytest.raises(ValidationError, match="cannot apply a where filter"):
        store.search("tied", tied[0][0], where="true", index="ann")


def test_k_larger_than_the_set_returns_every_row(store, tied):
    assert store.search("tied", tied[0][0], k=1000).num_rows == 300

"""``featurestore search``: text, key and vector-file queries, filters, JSON output and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import cli


def _run(runner, store, *args):
    return runner.invoke(cli, ["search", *args, "--store", str(store.root)])


def test_key_query_json(runner, filled):
    out = _run(runner, filled, "vecs", "--key", "3", "-k", "5", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and 3 not in [r["id"] for r in rows]
    want = filled.search("vecs", key=3, k=5)
    assert [r["id"] for r in rows] == want.column("id").to_pylist()
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]))
    out = _run(runner, filled, "vecs", "--key", "3", "-k", "1", "--include-self", "--json")
    assert json.loads(out.output)[0]["id"] == 3


def test_vector_file_batch_and_where(runner, filled, tmp_path):
    queries = filled.get("vecs").to_numpy()[[2, 7]]
    path = tmp_path / "q.npy"
    np.save(path, queries)
    out = _run(runner, filled, "vecs", "--vector-file", str(path), "-k", "2", "--where", "id < 10", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [(r["query"], r["id"]) for r in rows][::2] == [(0, 2), (1, 7)]
    assert all(r["id"] < 10 for r in rows)


def test_table_output(runner, filled):
    out = _run(runner, filled, "vecs", "--key", "0", "-k", "2")
    assert out.exit_code == 0, out.output
    assert "score" in out.output and "rank" in out.output


def test_ann_index(runner, filled):
    pytest.importorskip("faiss")
    out = _run(runner, filled, "vecs", "--key", "4", "-k", "3", "--index", "ann", "--json")
    assert out.exit_code == 0, out.output
    exact = filled.search("vecs", key=4, k=3)
    assert [r["id"] for r in json.loads(out.output)] == exact.column("id").to_pylist()


@pytest.mark.parametrize("args, code, message", [
    (["vecs"], 2, "Give exactly one of --text, --image, --key and --vector-file (got none)"),
    (["vecs", "--key", "1", "--text", "x"], 2, "(got --text, --key)"),
    (["vecs", "--key", "abc"], 2, "'abc' is not a int64"),
    (["vecs", "--key", "99"], 1, "No row with key id=99 in 'vecs' v1"),
    (["vecs", "--text", "a dress"], 1, "Cannot encode a text query for 'vecs' v1"),
    (["vecs", "--key", "1", "--where", "nope = 1"], 1, "The where filter 'nope = 1' cannot run"),
    (["vecs", "--key", "1", "--columns", "nope"], 1, "No column(s) ['nope']"),
    (["nothere", "--key", "1"], 1, "No feature set named 'nothere'"),
])
def test_errors(runner, filled, args, code, message):
    out = _run(runner, filled, *args)
    assert out.exit_code == code, out.output
    assert message in out.output


def test_json_errors(runner, filled):
    out = runner.invoke(cli, ["search", "vecs", "--key", "99", "--json", "--store", str(filled.root)])
    assert out.exit_code == 1
    payload = json.loads(out.output.strip().splitlines()[-1])
    assert payload["kind"] == "ValidationError" and "No row with key" in payload["error"]


def test_compound_key(runner, store):
    rng = np.random.default_rng(0)
    store.write("pairs", {"user": ["a", "a", "b", "b"], "item": [1, 2, 1, 2],
                          "embedding": rng.standard_normal((4, 4)).astype(np.float32)},
                key=["user", "item"], spec={"encoder": "external:test"})
    out = _run(runner, store, "pairs", "--key", "b,2", "-k", "1", "--include-self", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [{"user": "b", "item": 2, "score": pytest.approx(1.0), "rank": 1}]
    out = _run(runner, store, "pairs", "--key", "b")
    assert out.exit_code == 2 and "compound key" in out.output

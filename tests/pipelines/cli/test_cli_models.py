"""`featurestore models ls|show|rm` on stores with real saved stackers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
from pipelines.cli import cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with two hash-encoded sets and one model trained by `stack train` (built once, copied per test)."""
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    words = {"a": "cotton soft dress", "b": "runs small shoe", "c": "lovely colour scarf"}
    labels = rng.choice(list(words), 90)
    pq.write_table(pa.table({"id": np.arange(90), "text": [f"{words[k]} {i}" for i, k in enumerate(labels)]}),
                   root / "src.parquet")
    pq.write_table(pa.table({"id": np.arange(90), "label": labels, "price": rng.uniform(1, 9, 90)}),
                   root / "labels.parquet")
    runner = CliRunner()
    for enc, name in (("hash:16", "h16"), ("hash:8", "h8")):
        assert runner.invoke(cli, ["embed", "-s", str(root / "store"), "--source", str(root / "src.parquet"),
                                   "-e", enc, "--name", name]).exit_code == 0
    out = runner.invoke(cli, ["stack", "train", "-s", str(root / "store"), "--sets", "h16,h8", "--labels",
                              str(root / "labels.parquet"), "--columns", "price", "--name", "clf", "--cv", "3"])
    assert out.exit_code == 0, out.output
    return root / "store"


@pytest.fixture
def store(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "store")
    return featurestore.open(tmp_path / "store")


def _run(store, *args, input=None):
    return CliRunner().invoke(cli, ["models", *args, "-s", str(store.root)], input=input)


def _json(result):
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def test_ls_and_show(store):
    [row] = _json(_run(store, "ls", "--json"))
    assert row["name"] == "clf" and row["classes"] == ["a", "b", "c"] and row["sets"] == {"h16": 1, "h8": 1}
    assert row["columns"] == ["price"] and row["metric"] == "macro_f1" and 0 <= row["heldout"] <= 1
    text = _run(store, "ls").stdout
    assert "clf" in text and "h16 v1, h8 v1" in text
    info = _json(_run(store, "show", "clf", "--json"))
    assert info["split"]["n_test"] == info["n_test"] and "manifest.json" in info["files"]
    assert {b["name"] for b in info["blocks"]} == {"h16", "h8"} and info["params"]["cv"] == 3
    text = _run(store, "show", "clf").stdout
    assert "classes (3): a, b, c" in text and "stack" in text


def test_rm_asks_then_removes_only_the_model(store):
    refused = _run(store, "rm", "clf", input="n\n")
    assert refused.exit_code == 1 and (store.models_dir / "clf").is_dir()
    assert _json(_run(store, "rm", "clf", "--json"))[0]["name"] == "clf"
    assert not (store.models_dir / "clf").exists() and _json(_run(store, "ls", "--json")) == []
    assert {"h16", "h8", "clf_oof"} <= set(store.names())  # feature sets stay


def test_rm_checks_every_name_before_removing_any(store):
    result = _run(store, "rm", "clf", "nope", "--yes")
    assert result.exit_code == 1 and "No model named 'nope'" in result.stderr
    assert (store.models_dir / "clf" / "manifest.json").is_file()


def test_a_damaged_model_is_listed_as_such_and_hides_no_other(store):
    shutil.copytree(store.models_dir / "clf", store.models_dir / "broken")
    (store.models_dir / "broken" / "manifest.json").write_text("{not json")
    rows = {r["name"]: r for r in _json(_run(store, "ls", "--json"))}
    assert "not valid JSON" in rows["broken"]["error"] and rows["clf"]["classes"] == ["a", "b", "c"]
    assert "unreadable" in _run(store, "ls").stdout


def test_a_save_killed_between_its_renames_is_finished_and_listed(store):
    (store.models_dir / "clf").rename(store.models_dir / ".clf.tmp-0123abcd")  # new model written, not yet moved in
    [row] = _json(_run(store, "ls", "--json"))
    assert row["name"] == "clf" and (store.models_dir / "clf" / "manifest.json").is_file()

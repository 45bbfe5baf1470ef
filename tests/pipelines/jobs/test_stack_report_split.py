"""`featurestore stack report` scores exactly the rows `stack train` held out, whatever the working directory."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

import featurestore
import stackers
from pipelines.cli import cli

SETS = ["img_top", "img_bottom"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Digits as two stored halves; `stack train` run from a working folder with a *relative* labels path."""
    root = tmp_path_factory.mktemp("split")
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    ids = np.arange(len(y)) * 7 + 3
    store = featurestore.open(root / "store")
    order = np.random.default_rng(0).permutation(len(y))
    store.write(SETS[0], {"id": ids[order], "embedding": X[order, :32]}, spec={"encoder": "external:top"})
    store.write(SETS[1], {"id": ids, "embedding": X[:, 32:]}, spec={"encoder": "external:bottom"})
    work = root / "work"
    work.mkdir()
    labels = work / "labels.parquet"
    pq.write_table(pa.table({"id": ids, "label": [f"digit{d}" for d in y], "ink": X.sum(axis=1)}), labels)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        out = CliRunner().invoke(cli, ["stack", "train", "-s", str(store.root), "--sets", ",".join(SETS),
                                       "--labels", "labels.parquet", "--columns", "ink", "--name", "digits",
                                       "--meta", "logistic", "--cv", "2", "--json"])
    assert out.exit_code == 0, out.output
    return {"root": root, "store": store, "labels": labels, "result": json.loads(out.stdout)}


def _expected_heldout_ids(store, labels) -> list[int]:
    """The split `stack train` cuts, computed here independently from the original labels."""
    data = stackers.join(store, SETS, labels=labels, columns=["ink"])
    _, test = data.split(test_size=0.25, random_state=0)
    return test.keys.column("id").to_pylist()


def test_report_from_another_directory_scores_what_train_scored(trained, monkeypatch):
    root, store, result = trained["root"], trained["store"], trained["result"]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    monkeypatch.chdir(elsewhere)  # labels.parquet is not here: report must not need it
    out = CliRunner().invoke(cli, ["stack", "report", "-s", str(store.root), "-m", "digits",
                                   "--out", str(root / "report_elsewhere"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_test"] == result["split"]["n_test"]
    got = json.loads((root / "report_elsewhere" / "metrics.json").read_text())
    want = result["metrics"]
    assert got["n_test"] == want["n_test"] == result["split"]["n_test"]
    # Same rows, same order, same bootstrap: the stack and the per-set probes score exactly as at training.
    for name in ("stack", "concat", *(f"probe:{s}" for s in SETS)):
        assert got["models"][name]["metrics"] == want["models"][name]["metrics"], name
    assert got["headline"] == want["headline"] and got["paired"] == want["paired"]
    split = json.loads((store.models_dir / "digits" / "split.json").read_text())
    assert os.path.isabs(split["labels"]) and split["heldout"] == "heldout.parquet"


def test_report_scores_exactly_the_heldout_keys(trained):
    root, store, labels = trained["root"], trained["store"], trained["labels"]
    model_dir = store.models_dir / "digits"
    expected = _expected_heldout_ids(store, labels)
    assert pq.read_table(model_dir / "heldout.parquet").column("id").to_pylist() == expected
    assert pq.read_table(model_dir / "report" / "scored.parquet").column("id").to_pylist() == expected

    # The labels file changes after training (rows reordered, some training rows gone): the held-out rows do not.
    table = pq.read_table(labels)
    held = set(expected)
    keep = [i for i in np.random.default_rng(5).permutation(table.num_rows)
            if table.column("id")[int(i)].as_py() in held or i % 9]
    changed = root / "changed.parquet"
    pq.write_table(table.take(pa.array(keep)), changed)
    shutil.copy(changed, labels)

    runner = CliRunner()
    out = runner.invoke(cli, ["stack", "report", "-s", str(store.root), "-m", "digits", "--out", str(root / "r1")])
    assert out.exit_code == 0, out.output
    assert pq.read_table(root / "r1" / "scored.parquet").column("id").to_pylist() == expected

    # --labels relabels the held-out rows; it does not choose them.
    out = runner.invoke(cli, ["stack", "report", "-s", str(store.root), "-m", "digits", "--labels", str(changed),
                              "--out", str(root / "r2")])
    assert out.exit_code == 0, out.output
    scored = pq.read_table(root / "r2" / "scored.parquet")
    assert scored.column("id").to_pylist() == expected
    truth = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
    assert scored.column("label").to_pylist() == [truth[i] for i in expected]

    partial = root / "partial.parquet"
    pq.write_table(table.filter(pc.not_equal(table.column("id"), expected[0])), partial)
    out = runner.invoke(cli, ["stack", "report", "-s", str(store.root), "-m", "digits", "--labels", str(partial),
                              "--out", str(root / "r3")])
    assert out.exit_code == 1 and "1 of the" in out.output and "held-out keys have no row" in out.output


def test_report_refits_the_baselines_from_the_saved_training_rows(trained, tmp_path):
    store, result = trained["store"], trained["result"]
    model_dir = store.models_dir / "digits"
    saved = pq.read_table(model_dir / "train.parquet")
    heldout = pq.read_table(model_dir / "heldout.parquet")
    assert saved.num_rows == result["split"]["n_train"] and set(saved.column_names) == {"id", "label", "ink"}
    assert not set(saved.column("id").to_pylist()) & set(heldout.column("id").to_pylist())

    # A model saved before train.parquet existed: still reported (the stack and its own base learners), and the
    # report says the baselines are missing and how to get them.
    old = store.models_dir / "digits_old"
    shutil.copytree(model_dir, old)
    (old / "train.parquet").unlink()
    out = CliRunner().invoke(cli, ["stack", "report", "-s", str(store.root), "-m", "digits_old",
                                   "--out", str(tmp_path / "old")])
    assert out.exit_code == 0, out.output
    assert "Baselines missing" in out.output and "has no train.parquet" in out.output
    got = json.loads((tmp_path / "old" / "metrics.json").read_text())
    assert set(got["models"]) == {"stack", *(f"base:{s}" for s in SETS)}
    assert got["models"]["stack"]["metrics"] == result["metrics"]["models"]["stack"]["metrics"]

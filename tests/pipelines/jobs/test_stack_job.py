"""`featurestore stack train|predict|report` and the demo, on real stores."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

import featurestore
import stackers
from pipelines.cli import cli


@pytest.fixture
def digits_store(tmp_path):
    """Digits split into two 'encoders' (left and right image halves), plus labels with groups and a column."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    ids = np.arange(len(y)) * 7 + 3  # keys unrelated to row order
    left = X.reshape(-1, 8, 8)[:, :, :4].reshape(len(y), -1)
    right = X.reshape(-1, 8, 8)[:, :, 4:].reshape(len(y), -1)
    store = featurestore.open(tmp_path / "store")
    order = np.random.default_rng(0).permutation(len(y))  # stored in another order than the labels
    store.write("left_half", {"id": ids[order], "embedding": left[order]}, spec={"encoder": "external:left"})
    store.write("right_half", {"id": ids, "embedding": right}, spec={"encoder": "external:right"})
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"id": ids, "label": [f"digit{d}" for d in y], "writer": np.arange(len(y)) // 20,
                             "ink": X.sum(axis=1)}), labels)
    return store, labels


def test_stack_train_predict_report(digits_store, tmp_path):
    store, labels = digits_store
    runner = CliRunner()
    root = str(store.root)
    out = runner.invoke(cli, ["stack", "train", "-s", root, "--sets", "left_half,right_half", "--labels", str(labels),
                              "--groups", "writer", "--columns", "ink", "--name", "digits", "--cv", "3", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    models = result["metrics"]["models"]
    assert set(models) == {"probe:left_half", "probe:right_half", "concat", "stack"}
    stack_f1 = models["stack"]["metrics"]["macro_f1"]["value"]
    assert stack_f1 > max(models[f"probe:{half}"]["metrics"]["macro_f1"]["value"] for half in ("left_half", "right_half"))
    assert result["split"]["n_test"] > 300 and result["oof_set"] == "digits_oof"
    report_dir = store.models_dir / "digits" / "report"
    for f in ("metrics.json", "comparison.png", "confusion_matrix.png", "calibration.png"):
        assert (report_dir / f).stat().st_size > 0
    # the out-of-fold scores are a feature set like any other
    oof = store.get("digits_oof")
    assert oof.dim == 2 * 10 and oof.count() == result["split"]["n_train"]
    assert store.sql("select count(distinct fold) from digits_oof").fetchone()[0] == 3

    keys = tmp_path / "keys.parquet"
    pq.write_table(pq.read_table(labels).select(["id", "ink"]).slice(0, 25), keys)
    pred = runner.invoke(cli, ["stack", "predict", "-s", root, "-m", "digits", "--keys", str(keys), "--json"])
    assert pred.exit_code == 0, pred.output
    out = json.loads(pred.stdout)  # one shape with or without --output: the predictions are under "predictions"
    rows = out["predictions"]
    assert out["rows"] == 25 and out["output"] is None
    assert len(rows) == 25 and rows[0]["id"] == 3 and rows[0]["prediction"].startswith("digit")
    truth = pq.read_table(labels).column("label").to_pylist()[:25]
    assert np.mean([r["prediction"] == t for r, t in zip(rows, truth)]) > 0.8

    # Without --json: a preview, and one line that says what it left out (12 columns, 25 rows).
    shown = runner.invoke(cli, ["stack", "predict", "-s", root, "-m", "digits", "--keys", str(keys)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("25 predictions\n") and "proba_digit3" in shown.stdout
    assert shown.stdout.rstrip().endswith("15 more rows and 6 more columns (proba_digit4 … proba_digit9) not shown; "
                                          "--json or --output FILE gives them all.")
    written = runner.invoke(cli, ["stack", "predict", "-s", root, "-m", "digits", "--keys", str(keys),
                                  "-o", str(tmp_path / "pred.csv"), "--json"])
    assert json.loads(written.stdout) == {"rows": 25, "output": str(tmp_path / "pred.csv"), "embedded": {},
                                          "failed": 0, "predictions": None}
    assert pa_csv.read_csv(tmp_path / "pred.csv").column("prediction").to_pylist() == [r["prediction"] for r in rows]

    again = runner.invoke(cli, ["stack", "report", "-s", root, "-m", "digits", "--json"])
    assert again.exit_code == 0, again.output
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert "stack" in json.dumps(metrics)

    for command in ("predict", "report"):  # one line on stderr, exit 1
        missing = runner.invoke(cli, ["stack", command, "-s", root, "-m", "nope"])
        assert missing.exit_code == 1 and missing.output == f"Error: No model named 'nope' in {root}. Known: ['digits'].\n"
    stackers.load(store.models_dir / "digits").save(store.models_dir / "bare")  # a model `stack train` did not make
    bare = runner.invoke(cli, ["stack", "report", "-s", root, "-m", "bare"])
    assert bare.exit_code == 1 and bare.output == (f"Error: {store.models_dir / 'bare'} has no split.json: it was not "
                                                   "trained with `featurestore stack train`.\n")


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path):
    """The README's main command on 300 real reviews with the real MiniLM (rerun skips every embedded row)."""
    runner = CliRunner()
    store = tmp_path / "demo"
    first = runner.invoke(cli, ["demo", "--store", str(store), "--rows", "300", "--no-progress", "--json"])
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert result["embed"]["reviews_minilm"]["rows_written"] == 300
    sets = ["reviews_minilm", "reviews_minilm_layer3", "reviews_wordllama", "reviews_tfidf"]
    for task in ("reviews_class", "reviews_recommend"):
        assert set(result["models"][task]["metrics"]["models"]) == {*(f"probe:{s}" for s in sets), "concat", "stack"}
        assert "best baseline" in result["models"][task]["metrics"]["headline"]
        assert (store / "models" / task / "report" / "comparison.png").is_file()
    assert all(len(hits) == 3 for hits in result["sql"].values())
    # The TF-IDF + SVD encoder was fitted on training rows of both tasks only: no held-out review of either.
    held_out = set()
    for task in ("reviews_class", "reviews_recommend"):
        held_out |= set(pq.read_table(store / "models" / task / "heldout.parquet").column("id").to_pylist())
    assert result["tfidf_fit_rows"] == 300 - len(held_out)
    # Unseen reviews were embedded into every set of the model and scored.
    assert len(result["predictions"]) == 5 and all(p["prediction"] in ("yes", "no") for p in result["predictions"])
    second = runner.invoke(cli, ["demo", "--store", str(store), "--rows", "300", "--no-progress", "--json"])
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["embed"]["reviews_minilm"]["rows_skipped"] == 300
    assert again["tfidf_encoder"] == result["tfidf_encoder"]  # the same fit, saved once (content-addressed)
    names = {r["name"] for r in featurestore.open(store).list()}
    assert names == {*sets, "reviews_class_oof", "reviews_recommend_oof"}


def test_stack_train_refuses_to_overwrite_a_model_without_force(digits_store):
    store, labels = digits_store
    runner = CliRunner()
    args = ["stack", "train", "-s", str(store.root), "--sets", "left_half,right_half", "--labels", str(labels),
            "--name", "digits", "--cv", "2", "--meta", "logistic", "--json"]
    assert runner.invoke(cli, args).exit_code == 0
    before = (store.models_dir / "digits" / "manifest.json").read_bytes()
    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    assert (store.models_dir / "digits" / "manifest.json").read_bytes() == before  # untouched
    forced = runner.invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0, forced.output


def test_stack_train_takes_the_stackers_options(digits_store):
    store, labels = digits_store
    runner = CliRunner()
    base = ["stack", "train", "-s", str(store.root), "--sets", "left_half,right_half", "--labels", str(labels),
            "--cv", "2", "--meta", "logistic", "--json"]
    result = runner.invoke(cli, [*base, "--name", "fixed", "--C", "0.5", "--extras", "centroid", "--no-threshold"])
    assert result.exit_code == 0, result.output
    params = stackers.read_manifest(store.models_dir / "fixed")["params"]
    assert (params["C"], params["extras"], params["threshold"]) == (0.5, ["centroid"], None)
    tuned = stackers.read_manifest(store.models_dir / "fixed")["probe_params"]
    assert {p["C"] for p in tuned.values()} == {0.5}  # a number fixes every set's C
    default = runner.invoke(cli, [*base, "--name", "tuned"])
    assert default.exit_code == 0, default.output
    params = stackers.read_manifest(store.models_dir / "tuned")["params"]
    assert (params["C"], params["extras"], params["threshold"]) == ("auto", [], "auto")
    for bad in (["--C", "0"], ["--C", "x"], ["--extras", "svm"]):
        refused = runner.invoke(cli, [*base, "--name", "bad", *bad])
        assert refused.exit_code == 2 and not (store.models_dir / "bad").exists()

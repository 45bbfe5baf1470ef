"""Serving (`pipelines.predict`, `featurestore stack predict --source`): new raw rows in, predictions out.

Real stores, real embedding jobs (the instant ``hash`` encoder, MiniLM in the slow test), real model fits, real files.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
import pipelines
import stackers
from featurestore.errors import EncoderNotAvailableError, FeatureSetNotFoundError, ValidationError
from pipelines.cli import cli
from pipelines.jobs._serve import serve
from pipelines.jobs._stack import train_stack

WORDS = {"c0": ["good", "nice", "great", "lovely"], "c1": ["bad", "awful", "poor", "broken"],
         "c2": ["fine", "okay", "average", "plain"]}
SETS = {"a": "hash:16", "b": "hash:32"}


def reviews(n: int = 300, seed: int = 0) -> pa.Table:
    """Short texts whose words give their class away (the hash encoder is a bag of words), and a numeric column."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(sorted(WORDS), n)
    noise = ["the", "it", "was", "a", "dress", "shirt", "fit"]
    texts = [" ".join([*rng.choice(WORDS[c], 3), *rng.choice(noise, 3)]) for c in labels]
    return pa.table({"id": np.arange(n) * 3 + 1, "text": texts, "label": labels.tolist(),
                     "stars": rng.integers(1, 6, n).astype(np.float64)})


def embed_sets(store, rows: pa.Table, sets=SETS) -> None:
    for name, encoder in sets.items():
        pipelines.embed(store, rows, key="id", text="text", encoder=encoder, name=name, progress=False)


@pytest.fixture
def trained(tmp_path):
    """Sets a (hash:16) and b (hash:32) hold the first 200 rows; a stacker with a table column is fitted on them."""
    table = reviews()
    store = featurestore.open(tmp_path / "store")
    embed_sets(store, table.slice(0, 200))
    data = stackers.join(store, list(SETS), labels=table.slice(0, 200), columns=["stars"])
    model = stackers.StackingClassifier(meta="logistic", cv=3).fit(data)
    return store, model, table


def stored_vector(store, name: str, key: int) -> np.ndarray:
    rows = store.get(name).to_arrow()
    return np.asarray(rows.filter(pc.equal(rows.column("id"), key)).column("embedding").to_pylist())


def test_exactly_the_keys_a_set_lacks_are_embedded(trained):
    store, model, table = trained
    embed_sets(store, table.slice(200, 20), {"b": SETS["b"]})  # b already holds 200..219, a does not
    before = {name: stored_vector(store, name, 451) for name in SETS}  # key 451 is row 150, a training row
    source = table.slice(150).to_pandas()
    source.loc[source["id"] == 451, "text"] = "completely different words now"

    served = serve(model, store, source, progress=False)

    new_ids = table.column("id").to_numpy()[200:]
    for name, lacking in (("a", new_ids), ("b", new_ids[20:])):
        result = served.embedded[name]
        assert (result.rows_read, result.rows_written, result.rows_failed) == (len(lacking), len(lacking), 0)
        rows = store.get(name).to_arrow(columns=["run_id"])
        written = rows.filter(pc.equal(rows.column("run_id"), result.run_id)).column("id").to_numpy()
        assert sorted(written) == sorted(lacking)
        assert store.get(name).count() == 300 and store.versions(name) == [1]
        np.testing.assert_array_equal(stored_vector(store, name, 451), before[name])  # its new text is not embedded
    assert served.table.num_rows == 150 and served.n_failed == 0

    again = serve(model, store, source, progress=False)  # every key is stored now: nothing runs
    assert again.embedded == {} and again.table.equals(served.table)


@pytest.mark.parametrize("kind", ["parquet", "csv", "jsonl", "pandas", "arrow"])
def test_predictions_from_source_rows_equal_predictions_from_stored_features(trained, tmp_path, kind,
                                                                             same_predictions):
    store, model, table = trained
    new = table.slice(150).select(["id", "text", "stars"])  # 50 stored keys, 100 new ones
    if kind == "parquet":
        source = tmp_path / "new.parquet"
        pq.write_table(new, source)
    elif kind == "csv":  # every CSV cell reads as text: the keys are cast to the store's int64, stars parsed as numbers
        source = tmp_path / "new.csv"
        pa_csv.write_csv(new, source)
    elif kind == "jsonl":
        source = tmp_path / "new.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in new.to_pylist()))
    else:
        source = new.to_pandas() if kind == "pandas" else new

    out = pipelines.predict(model, store, source, columns=["text"], progress=False)

    assert out.column_names == ["id", "text", "prediction", "error", "proba_c0", "proba_c1", "proba_c2"]
    assert out.column("id").to_pylist() == new.column("id").to_pylist() and out.column("error").null_count == 150
    # The same rows embedded by a plain job into another store, then predicted from the stored features.
    other = featurestore.open(tmp_path / "other")
    embed_sets(other, table)
    expected = stackers.predict_from_store(model, other, new.select(["id", "stars"]))
    same_predictions(out.select(expected.column_names), expected)
    # ... and from this store's stored features, now that the new rows are there.
    here = stackers.predict_from_store(model, store, new.select(["id", "stars"]))
    same_predictions(out.select(expected.column_names), here)
    truth = table.column("label").to_pylist()[150:]
    accuracy = np.mean(np.array(out.column("prediction").to_pylist()) == np.array(truth))
    assert accuracy > 0.9


def test_new_rows_go_to_the_trained_version_and_nothing_warns(trained):
    store, model, table = trained
    train_keys = table.slice(0, 200).select(["id", "stars"])
    before = stackers.predict_from_store(model, store, train_keys)
    model.save(store.models_dir / "saved")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no StaleFeatureSetWarning, no MissingKeysWarning, nothing
        out = pipelines.predict("saved", store, table.slice(100), progress=False)  # a model saved in the store
        after = stackers.predict_from_store(model, store, train_keys)
        reloaded = stackers.predict_from_store(stackers.load(store.models_dir / "saved"), store, train_keys)
    assert after.equals(before) and reloaded.equals(before)  # same path, same rows, a lossless save: bit for bit
    for name in SETS:
        assert store.versions(name) == [model.sources_[name]["version"]] == [1]
        assert store.get(name).spec == model.sources_[name]["spec"]
    assert out.num_rows == 200 and out.column("prediction").null_count == 0
    assert pipelines.predict(store.models_dir / "saved", store, table.slice(100), progress=False).equals(out)  # folder


def test_rows_that_fail_to_embed_get_a_null_prediction_and_the_reason(trained):
    store, model, table = trained
    source = table.slice(190, 20).to_pandas()  # 190..199 stored, 200..209 new
    source["text"] = source["text"].astype(object)
    source.loc[source.index[0], "text"] = ""     # stored key: predicted from its stored vectors all the same
    source.loc[source.index[10], "text"] = "   "
    source.loc[source.index[11], "text"] = None
    source.loc[source.index[12], "text"] = 42  # not text

    served = serve(model, store, source, progress=False)

    out = served.table.to_pandas()
    failed = out[out["error"].notna()]
    assert failed["id"].tolist() == source["id"].tolist()[10:13] and served.n_failed == 3
    assert failed["error"].tolist() == [
        "empty: the text is empty or only whitespace (feature sets a, b)",
        "null: the text is null (feature sets a, b)",
        "non-string: a int value, not text (feature sets a, b)"]
    assert failed["prediction"].isna().all() and failed[["proba_c0", "proba_c1", "proba_c2"]].isna().all().all()
    ok = out[out["error"].isna()]
    assert len(ok) == 17 and ok["prediction"].notna().all()
    np.testing.assert_allclose(ok[["proba_c0", "proba_c1", "proba_c2"]].sum(axis=1), 1.0)
    assert served.embedded["a"].errors_by_reason == {"empty": 1, "null": 1, "non-string": 1}
    assert sorted(store.get("a").errors().column("id").to_pylist()) == sorted(failed["id"].tolist())

    source.loc[source.index[11], "text"] = "good nice great"  # fixed: the next run embeds it
    again = serve(model, store, source, progress=False).table.to_pandas()
    assert pd.isna(again.loc[11, "error"]) and again.loc[11, "prediction"] == "c0"
    assert again["error"].notna().sum() == 2


@pytest.mark.parametrize("spec, why", [
    ({"encoder": "sklearn:tfidf-svd", "metric": "cosine"}, "'sklearn:tfidf-svd'"),  # the old demo's spec
    ({"encoder": "external:my-model"}, "'external:my-model'"),
    ({"encoder": "hash:16", "window": 5}, "does not match the stored spec"),
])
def test_a_set_that_cannot_be_recomputed_is_refused_before_anything_is_written(tmp_path, spec, why):
    table = reviews()
    store = featurestore.open(tmp_path / "store")
    embed_sets(store, table.slice(0, 150), {"a": SETS["a"]})
    vectors = np.random.default_rng(1).standard_normal((150, 16)).astype(np.float32)
    store.write("x", {"id": table.column("id").to_numpy()[:150], "embedding": vectors}, spec=spec)

    with pytest.warns(pipelines.NotRecomputableWarning) as caught:
        train_stack(store, ["a", "x"], table.slice(0, 150), name="m", meta="logistic", cv=2, n_boot=10)
    assert len(caught) == 1  # once, naming the set and why
    assert "Model 'm' can predict for keys already stored, but not for new rows" in str(caught[0].message)
    message = str(caught[0].message)
    assert "1 of its 2 feature sets cannot be recomputed here ('x' v1: " in message and why in message
    assert "'a'" not in message and not message.endswith(".).")

    runs = len(store.get("a").runs)
    with pytest.raises(EncoderNotAvailableError, match=rf"Feature set 'x' v1, .* lacks 50 of the source's keys "
                                                       rf"and cannot be recomputed: .*{why}"):
        pipelines.predict("m", store, table.slice(100, 100), progress=False)
    assert store.get("a").count() == 150 and len(store.get("a").runs) == runs  # a lacked rows too: untouched

    stored_only = pipelines.predict("m", store, table.slice(100, 50), progress=False)  # nothing to embed: fine
    assert stored_only.num_rows == 50 and stored_only.column("error").null_count == 50


def test_a_fitted_encoder_serves_from_its_state_and_is_refused_without_it(tmp_path, same_predictions):
    """tfidf-svd keeps its fitted state in the store: new rows are embedded with it; once it is gone, refused."""
    encoders = pytest.importorskip("featurestore.encoders")
    if not hasattr(encoders, "TfidfSvd"):
        pytest.skip("no fitted encoder registered here")
    import shutil

    table = reviews()
    store = featurestore.open(tmp_path / "store")
    fitted = encoders.TfidfSvd.fit(table.column("text").to_pylist()[:150], dim=6, min_df=1)
    fitted.save(store)
    embed_sets(store, table.slice(0, 150), {"a": SETS["a"]})
    pipelines.embed(store, table.slice(0, 150), key="id", text="text", encoder=fitted, name="t", progress=False)
    data = stackers.join(store, ["a", "t"], labels=table.slice(0, 150))
    model = stackers.StackingClassifier(meta="logistic", cv=3).fit(data)

    out = pipelines.predict(model, store, table.slice(140, 20), progress=False)
    other = featurestore.open(tmp_path / "other")
    embed_sets(other, table.slice(0, 160), {"a": SETS["a"]})
    pipelines.embed(other, table.slice(0, 160), key="id", text="text", encoder=fitted, name="t", progress=False)
    expected = stackers.predict_from_store(model, other, table.slice(140, 20).select(["id"]))
    same_predictions(out.select(expected.column_names), expected)

    for state in list((store.root / "encoders").rglob("state.json")):
        shutil.rmtree(state.parent)
    count = store.get("a").count()
    with pytest.raises(EncoderNotAvailableError, match="Feature set 't' v1, .* cannot be recomputed: "):
        pipelines.predict(model, store, table.slice(150, 20), progress=False)
    assert store.get("a").count() == count


def test_training_on_recomputable_sets_does_not_warn(tmp_path):
    table = reviews(120)
    store = featurestore.open(tmp_path / "store")
    embed_sets(store, table)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pipelines.NotRecomputableWarning)
        train_stack(store, list(SETS), table, name="m", meta="logistic", cv=2, n_boot=10, write_oof=False)


def test_a_store_without_the_trained_version_is_refused_before_anything_is_written(trained, tmp_path):
    _, model, table = trained
    elsewhere = featurestore.open(tmp_path / "elsewhere")
    with pytest.raises(FeatureSetNotFoundError, match="Feature set 'a' v1, which the model was trained on, is not in"):
        pipelines.predict(model, elsewhere, table.slice(250), progress=False)
    assert elsewhere.names() == []


@pytest.mark.parametrize("kwargs, err, match", [
    ({"key": "review_id"}, ValueError, r"The model is keyed by \['id'\]"),
    ({"text": {"nope": "text"}}, ValueError, r"text names feature set\(s\) \['nope'\]"),
    ({"text": "review"}, ValidationError, r"has no column\(s\) \['review'\]"),
    ({"columns": ["prediction"]}, ValueError, "would clash with the output's own columns"),
    ({"layer": 3}, ValueError, r"Unknown option\(s\) \['layer'\] for predict\(\)"),
])
def test_bad_arguments_are_refused_before_anything_is_written(trained, kwargs, err, match):
    store, model, table = trained
    source = table.slice(190).append_column("prediction", pa.array(["x"] * 110))
    with pytest.raises(err, match=match):
        pipelines.predict(model, store, source, progress=False, **kwargs)
    assert store.get("a").count() == 200 and store.get("b").count() == 200


def test_duplicate_source_keys_are_refused(trained):
    store, model, table = trained
    with pytest.raises(ValidationError, match="appear more than once"):
        pipelines.predict(model, store, pa.concat_tables([table.slice(250), table.slice(250)]), progress=False)
    assert store.get("a").count() == 200


def test_each_set_reads_its_own_text_column(tmp_path, same_predictions):
    """A model over two sets embedded from different columns: text={set: column}."""
    table = reviews()
    table = table.append_column("title", pc.utf8_upper(table.column("text")))
    store = featurestore.open(tmp_path / "store")
    first = table.slice(0, 200)
    pipelines.embed(store, first, key="id", text="text", encoder="hash:16", name="body", progress=False)
    pipelines.embed(store, first, key="id", text="title", encoder="hash:8", name="head", progress=False)
    model = stackers.StackingClassifier(meta="logistic", cv=3).fit(stackers.join(store, ["body", "head"], labels=first))
    out = pipelines.predict(model, store, table.slice(200), text={"head": "title"}, progress=False)
    other = featurestore.open(tmp_path / "other")
    pipelines.embed(other, table, key="id", text="text", encoder="hash:16", name="body", progress=False)
    pipelines.embed(other, table, key="id", text="title", encoder="hash:8", name="head", progress=False)
    expected = stackers.predict_from_store(model, other, table.slice(200).select(["id"]))
    same_predictions(out.select(expected.column_names), expected)


def test_a_compound_key(tmp_path, same_predictions):
    table = reviews(240)
    table = table.append_column("shop", pa.array(["north", "south"] * 120))
    store = featurestore.open(tmp_path / "store")
    for name, encoder in SETS.items():
        pipelines.embed(store, table.slice(0, 160), key=["shop", "id"], text="text", encoder=encoder, name=name,
                        progress=False)
    model = stackers.StackingClassifier(meta="logistic", cv=3).fit(
        stackers.join(store, list(SETS), labels=table.slice(0, 160), key=["shop", "id"]))
    served = serve(model, store, table.slice(140), progress=False)
    assert served.embedded["a"].rows_written == 80 and served.table.column_names[:2] == ["shop", "id"]
    expected = stackers.predict_from_store(model, store, table.slice(140).select(["shop", "id"]))
    same_predictions(served.table.select(expected.column_names), expected)


# -- the command line ----------------------------------------------------------------------------------------------
@pytest.fixture
def cli_model(tmp_path):
    """A model trained by `stack train` on the first 200 rows; new.parquet holds rows 190..299, two with bad text."""
    table = reviews()
    store = featurestore.open(tmp_path / "store")
    embed_sets(store, table.slice(0, 200))
    labels = tmp_path / "labels.parquet"
    pq.write_table(table.slice(0, 200).select(["id", "label", "stars"]), labels)
    runner = CliRunner()
    trained = runner.invoke(cli, ["stack", "train", "-s", str(store.root), "--sets", "a,b", "--labels", str(labels),
                                  "--columns", "stars", "--name", "reviews", "--cv", "3", "--meta", "logistic"])
    assert trained.exit_code == 0, trained.output
    new = table.slice(190).select(["id", "text", "stars"]).to_pandas()
    new.loc[new.index[[20, 21]], "text"] = ["", None]
    path = tmp_path / "new.parquet"
    new.to_parquet(path)
    return store, table, path, runner


def test_cli_predict_source_json(cli_model, tmp_path, same_predictions):
    store, table, path, runner = cli_model
    result = runner.invoke(cli, ["stack", "predict", "reviews", "-s", str(store.root), "--source", str(path),
                                 "--key", "id", "--text", "text", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["rows"], out["output"], out["embedded"], out["failed"]) == (110, None, {"a": 98, "b": 98}, 2)
    rows = out["predictions"]
    assert [r["id"] for r in rows] == table.column("id").to_pylist()[190:]
    assert set(rows[0]) == {"id", "prediction", "error", "proba_c0", "proba_c1", "proba_c2"}
    failed = [r for r in rows if r["error"] is not None]
    assert [r["id"] for r in failed] == [rows[20]["id"], rows[21]["id"]]
    assert all(r["prediction"] is None for r in failed)
    assert "a v1: embedded 98 new rows, failed 2 (empty: 1, null: 1)" in result.stderr
    expected = stackers.predict_from_store(stackers.load(store.models_dir / "reviews"), store,
                                           table.slice(190, 10).select(["id", "stars"]))
    same_predictions(rows[:10], [r | {"error": None} for r in expected.to_pylist()])  # 110 rows scored vs 10

    written = runner.invoke(cli, ["stack", "predict", "-s", str(store.root), "-m", "reviews", "--source", str(path),
                                  "-o", str(tmp_path / "out.parquet"), "--json"])
    assert written.exit_code == 0, written.output
    assert json.loads(written.stdout) == {"rows": 110, "output": str(tmp_path / "out.parquet"), "embedded": {
        "a": 0, "b": 0}, "failed": 2, "predictions": None}  # the failed rows were tried again: nothing else missing
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == rows


def test_cli_predict_source_prints_every_class_and_the_failures(cli_model):
    store, _, path, runner = cli_model
    result = runner.invoke(cli, ["stack", "predict", "reviews", "-s", str(store.root), "--source", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("108 predictions, 2 rows without one (failed to embed; see error)\n")
    header = next(line for line in result.stdout.splitlines() if "prediction" in line and "proba_c0" in line)
    assert all(c in header for c in ("id", "error", "proba_c1", "proba_c2"))
    assert result.stdout.rstrip().endswith("100 more rows not shown; --json or --output FILE gives them all.")


@pytest.mark.parametrize("args, message", [
    (["--source", "NEW", "--keys", "NEW"], "Pass --keys (stored rows) or --source (new rows), not both."),
    (["--text", "text"], "--key and --text go with --source"),
    (["-m", "other", "--source", "NEW"], "Two models named: 'reviews' and --model 'other'."),
    (["--source", "NEW", "--text", "text", "--text", "a=text"], "not both"),
])
def test_cli_predict_usage_errors(tmp_path, args, message):
    path = tmp_path / "new.csv"
    path.write_text("id,text\n1,a\n")
    args = [str(path) if a == "NEW" else a for a in args]
    result = CliRunner().invoke(cli, ["stack", "predict", "reviews", "-s", str(tmp_path / "store"), *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_predict_needs_a_model_name(tmp_path):
    result = CliRunner().invoke(cli, ["stack", "predict", "-s", str(tmp_path / "store"), "--keys", __file__])
    assert result.exit_code == 2 and "Name the model" in result.output


@pytest.mark.slow
def test_minilm_layers_and_hash_served_in_one_pass_equal_stored_predictions(tmp_path):
    """The real MiniLM (two layers, one forward pass per batch) beside a hash set; rebuilt from the stored specs."""
    table = reviews(160)
    minilm = "sentence-transformers:all-MiniLM-L6-v2"

    def embed_all(store, rows):
        pipelines.embed_layers(store, rows, name="mini", layers=[None, 3], key="id", text="text", encoder=minilm,
                               pooling="mean", progress=False)
        pipelines.embed(store, rows, key="id", text="text", encoder="hash:16", name="h", progress=False)

    store = featurestore.open(tmp_path / "store")
    embed_all(store, table.slice(0, 100))
    sets = ["mini", "mini_layer3", "h"]
    data = stackers.join(store, sets, labels=table.slice(0, 100))
    model = stackers.StackingClassifier(meta="logistic", cv=3).fit(data)
    served = serve(model, store, table.slice(80), progress=False)
    assert {n: r.rows_written for n, r in served.embedded.items()} == {"mini": 60, "mini_layer3": 60, "h": 60}
    # the sets lacked the same rows: one pass over the source (one job, one clock), the layers on one forward pass
    assert len({r.seconds for r in served.embedded.values()}) == 1
    assert store.get("mini_layer3").spec == model.sources_["mini_layer3"]["spec"]

    other = featurestore.open(tmp_path / "other")
    embed_all(other, table)
    expected = stackers.predict_from_store(model, other, table.slice(80).select(["id"]))
    got = served.table
    assert got.column("prediction").to_pylist() == expected.column("prediction").to_pylist()
    for c in ("proba_c0", "proba_c1", "proba_c2"):  # batches of other neighbours: float noise only
        np.testing.assert_allclose(got.column(c).to_numpy(), expected.column(c).to_numpy(), atol=1e-5)


def test_an_empty_source_and_a_source_of_only_bad_rows_keep_the_columns(trained):
    store, model, table = trained
    columns = ["id", "prediction", "error", "proba_c0", "proba_c1", "proba_c2"]
    empty = pipelines.predict(model, store, table.slice(0, 0), progress=False)
    assert empty.num_rows == 0 and empty.column_names == columns
    bad = table.slice(250, 2).set_column(1, "text", pa.array(["", None], pa.string()))
    out = pipelines.predict(model, store, bad, progress=False)
    assert out.column_names == columns and out.column("prediction").null_count == 2
    assert out.column("proba_c0").null_count == 2 and out.column("error").null_count == 0

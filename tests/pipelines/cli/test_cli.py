"""The command line through click's CliRunner: exit codes and --json output."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import featurestore
from pipelines.cli import cli


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_init_ls_show_sql(runner, tmp_path, filled):
    root = str(filled.root)
    assert _json(runner.invoke(cli, ["init", str(tmp_path / "new"), "--json"]))["root"].endswith("new")
    [row] = _json(runner.invoke(cli, ["ls", "--store", root, "--json"]))
    assert (row["name"], row["rows"], row["dim"]) == ("vecs", 20, 8)
    shown = _json(runner.invoke(cli, ["show", "vecs", "-s", root, "--json"]))
    assert shown["spec"]["encoder"] == "external:test" and shown["rows"] == 20 and shown["runs"][0]["status"] == "ok"
    rows = _json(runner.invoke(cli, ["sql", "select id, embedding from vecs order by id limit 2", "-s", root, "--json"]))
    assert [r["id"] for r in rows] == [0, 1] and len(rows[0]["embedding"]) == 8
    table = runner.invoke(cli, ["sql", "select count(*) as n from vecs", "-s", root])
    assert table.exit_code == 0 and "20" in table.stdout
    csv = runner.invoke(cli, ["sql", "select id from vecs order by id limit 3", "-s", root, "--format", "csv"])
    assert csv.stdout.split() == ["id", "0", "1", "2"]


def test_env_var_names_the_store(runner, filled):
    result = runner.invoke(cli, ["ls", "--json"], env={"FEATURESTORE_STORE": str(filled.root)})
    assert _json(result)[0]["name"] == "vecs"


@pytest.mark.parametrize("args, code, message", [
    (["show", "nope"], 1, "No feature set named 'nope'"),
    (["sql", "drop view vecs"], 1, "read-only"),
    (["sql", "select * from nowhere"], 1, "nowhere"),
    (["embed", "--source", "x.parquet"], 2, "Missing --name, --encoder"),
    (["show"], 2, "Missing argument"),
])
def test_errors_exit_codes(runner, filled, args, code, message):
    result = runner.invoke(cli, [*args, "--store", str(filled.root)])
    assert result.exit_code == code, result.output
    assert message in result.output


def test_missing_store_is_exit_1(runner, tmp_path):
    result = runner.invoke(cli, ["ls", "--store", str(tmp_path / "none")])
    assert result.exit_code == 1 and "No feature store" in result.output


def test_doctor_exit_codes(runner, filled):
    root = str(filled.root)
    assert _json(runner.invoke(cli, ["doctor", "-s", root, "--json"]))["ok"] is True
    filled.catalog_path.unlink()
    broken = runner.invoke(cli, ["doctor", "-s", root, "--json"])
    assert broken.exit_code == 3 and json.loads(broken.stdout)["findings"][0]["kind"] == "catalog"
    assert _json(runner.invoke(cli, ["doctor", "-s", root, "--rebuild", "--json"]))["ok"] is True
    part = next(filled.get("vecs").path.glob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    corrupt = runner.invoke(cli, ["doctor", "-s", root])
    assert corrupt.exit_code == 3 and "checksum" in corrupt.stdout


def test_embed_command_and_rerun(runner, tmp_path):
    src = tmp_path / "reviews.csv"
    pd.DataFrame({"id": range(50), "review": [f"text number {i}" for i in range(50)]}).to_csv(src, index=False)
    root = str(tmp_path / "store")
    args = ["embed", "--store", root, "--source", str(src), "--key", "id", "--text", "review", "-e", "hash:16",
            "--name", "reviews_hash", "--json"]
    [first] = _json(runner.invoke(cli, args))  # --json: a list, one result per feature set written
    assert (first["rows_written"], first["rows_failed"]) == (50, 0)
    [second] = _json(runner.invoke(cli, args))
    assert (second["rows_written"], second["rows_skipped"]) == (0, 50)


def test_embed_spec_file(runner, tmp_path):
    src = tmp_path / "reviews.jsonl"
    pd.DataFrame({"id": range(10), "review": [f"t {i}" for i in range(10)]}).to_json(src, orient="records", lines=True)
    spec = tmp_path / "job.toml"
    spec.write_text('store = "store"\nsource = "reviews.jsonl"\ntext = "review"\nencoder = "hash:4"\nname = "j"\n')
    [result] = _json(runner.invoke(cli, ["embed", "--spec", str(spec), "--json"]))
    assert result["rows_written"] == 10
    assert featurestore.open(tmp_path / "store").get("j").dim == 4


def test_embed_with_a_hash_encoder_gives_no_precision_tip(runner, tmp_path):
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": range(3), "text": ["a", "b", "c"]}).to_csv(src, index=False)
    result = runner.invoke(cli, ["embed", "--store", str(tmp_path / "s"), "--source", str(src), "-e", "hash:8", "--name", "h"])
    assert result.exit_code == 0 and "tip:" not in result.stderr
    assert "wrote 3" in result.stdout


@pytest.mark.parametrize("args, option", [
    (["embed", "--source", "x.csv", "--encoder", "hash:8", "--name", "x", "--limit", "-3"], "--limit"),
    (["embed", "--source", "x.csv", "--encoder", "hash:8", "--name", "x", "--batch-size", "0"], "--batch-size"),
    (["embed", "--source", "x.csv", "--encoder", "hash:8", "--name", "x", "--max-seq-length", "0"], "--max-seq-length"),
    (["sql", "select 1", "--timeout", "0"], "--timeout"),
    (["sql", "select 1", "--max-rows", "0"], "--max-rows"),
    (["show", "x", "--version", "0"], "--version"),
    (["stack", "train", "--sets", "a", "--labels", "x.csv", "--name", "m", "--cv", "1"], "--cv"),
    (["stack", "train", "--sets", "a", "--labels", "x.csv", "--name", "m", "--test-size", "1.5"], "--test-size"),
])
def test_out_of_range_numbers_are_usage_errors(runner, tmp_path, args, option):
    (tmp_path / "x.csv").write_text("id,text\n1,a\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(cli, args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_init_takes_store_like_every_command(runner, tmp_path):
    result = runner.invoke(cli, ["init", "-s", str(tmp_path / "viaflag"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "viaflag" / "featurestore.json").is_file()


def test_featurestore_debug_shows_the_traceback_of_our_own_errors(runner, tmp_path, monkeypatch):
    featurestore.open(tmp_path / "s")
    monkeypatch.delenv("FEATURESTORE_DEBUG", raising=False)
    quiet = runner.invoke(cli, ["show", "missing", "-s", str(tmp_path / "s")])
    assert quiet.exit_code == 1 and "No feature set named 'missing'" in quiet.output
    monkeypatch.setenv("FEATURESTORE_DEBUG", "1")
    loud = runner.invoke(cli, ["show", "missing", "-s", str(tmp_path / "s")])
    assert isinstance(loud.exception, featurestore.FeatureSetNotFoundError)  # raised, so the traceback prints

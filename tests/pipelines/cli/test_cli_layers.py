"""How the command line and job specs name the sets of a layer job: one layer keeps NAME, several get suffixes,
'model' is the model's own output (real all-MiniLM-L6-v2: the hash encoder has no layers)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
from pipelines import JobSpec, layer_name
from pipelines.cli import cli

MODEL = "sentence-transformers:all-MiniLM-L6-v2"


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"id": list(range(12)), "text": [f"review number {i}, soft and warm" for i in range(12)]}),
                   path)
    return path


def _embed(tmp_path, source, *args):
    result = CliRunner().invoke(cli, ["embed", "-s", str(tmp_path / "store"), "--source", str(source), "-e", MODEL,
                                      "--json", *args])
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("args, sets", [
    (["--name", "x", "--layer", "3"], {"x": 3}),                                     # one layer keeps the name
    (["--name", "x", "--layers", "model,3"], {"x": None, "x_layer3": 3}),           # as embed_layers([None, 3])
    (["--name", "x", "--layers", "model", "--layers", "3"], {"x": None, "x_layer3": 3}),
    (["--name", "x", "--layer", "-1", "--layer", "2"], {"x_layer_m1": 6, "x_layer2": 2}),  # m = minus
    (["--name", "x", "--layers", "model"], {"x": None}),
])
def test_layer_set_names(tmp_path, source, args, sets):
    results = _embed(tmp_path, source, *args)
    assert [r["name"] for r in results] == list(sets)
    store = featurestore.open(tmp_path / "store")
    assert {n: store.get(n).spec.get("layer") for n in store.names()} == sets
    assert all(r["rows_written"] == 12 for r in results)


@pytest.mark.slow
def test_a_job_spec_names_its_sets_as_the_flags_do(tmp_path, source):
    spec = tmp_path / "job.toml"
    spec.write_text(f'store = "store"\nsource = "{source}"\nencoder = "{MODEL}"\nname = "j"\nlayers = ["model", 3]\n')
    assert [r["name"] for r in _embed(tmp_path, source, "--spec", str(spec))] == ["j", "j_layer3"]
    spec.write_text(f'store = "store"\nsource = "{source}"\nencoder = "{MODEL}"\nname = "k"\nlayers = [-2]\n')
    assert [r["name"] for r in _embed(tmp_path, source, "--spec", str(spec))] == ["k"]


@pytest.mark.parametrize("args, fragment", [
    (["--layers", "top"], "an int or 'model'"),
    (["--layers", "3,3"], "given twice"),
])
def test_bad_layer_lists_are_usage_errors(tmp_path, source, args, fragment):
    result = CliRunner().invoke(cli, ["embed", "-s", str(tmp_path / "store"), "--source", str(source), "-e", MODEL,
                                      "--name", "x", *args])
    assert result.exit_code == 2 and "--layers" in result.stderr and fragment in result.stderr, result.output


def test_layer_names_and_spec_layers():
    assert (layer_name("r", 3), layer_name("r", 0), layer_name("r", -1)) == ("r_layer3", "r_layer0", "r_layer_m1")
    assert JobSpec.from_dict({"source": "s", "name": "n", "layers": ["model", 3, "-1"]}).layers == [None, 3, -1]
    with pytest.raises(featurestore.ValidationError, match="an int or 'model'"):
        JobSpec.from_dict({"source": "s", "name": "n", "layers": [True]})

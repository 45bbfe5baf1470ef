"""`featurestore encoders fit`, and embedding jobs with the static and fitted encoders, through the real CLI and store."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
import pipelines
from featurestore.encoders import TfidfSvd, get_encoder, is_reproducible
from pipelines.cli import cli
from pipelines.cli._encoders import fit_from_source

WORDS = ("soft cotton dress linen shirt wool coat silk scarf denim jeans size small large fits runs true colour "
         "fabric thin thick warm lovely returned zipper broke washes comfortable").split()


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """300 short reviews from a small vocabulary (so 2-grams repeat), plus rows a fit must leave out."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 14)))).capitalize() + "." for _ in range(300)]
    texts[10], texts[11] = None, "   "
    return pa.table({"id": np.arange(300), "text": texts})


@pytest.fixture
def paths(tmp_path, table):
    parquet, csv = tmp_path / "train.parquet", tmp_path / "train.csv"
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return {"parquet": parquet, "csv": csv, "store": tmp_path / "store"}


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _texts(table: pa.Table) -> list[str]:
    return [t for t in table.column("text").to_pylist() if isinstance(t, str) and t.strip()]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_fit_prints_the_id_and_saves_the_state(fmt, paths, table):
    result = _ok(CliRunner().invoke(cli, ["encoders", "fit", "tfidf-svd", "--source", str(paths[fmt]), "--text", "text",
                                          "--key", "id", "--dim", "16", "-s", str(paths["store"])]))
    name = result.stdout.strip()
    assert re.fullmatch(r"tfidf-svd:[0-9a-f]{16}", name)
    assert "fitted on 298 texts (2 null or blank left out)" in result.stderr and f"-e {name}" in result.stderr
    quiet = _ok(CliRunner().invoke(cli, ["encoders", "fit", "tfidf-svd", "--source", str(paths[fmt]), "--dim", "16",
                                         "-s", str(paths["store"]), "-q"]))
    assert (quiet.stdout, quiet.stderr) == (f"{name}\n", "")  # the same fit again: the same id, nothing else
    expected = TfidfSvd.fit(_texts(table), dim=16)
    assert name == expected.name  # the CLI fits what the Python call fits, with the same defaults
    restored = get_encoder(name, store=paths["store"])
    np.testing.assert_array_equal(restored.encode(_texts(table)[:20]), expected.encode(_texts(table)[:20]))


def test_fit_json_then_embed_with_the_id(paths, table):
    runner = CliRunner()
    fitted = json.loads(_ok(runner.invoke(cli, ["encoders", "fit", "tfidf-svd", "--source", str(paths["parquet"]),
                                                "--dim", "8", "--min-df", "3", "--ngram-range", "1", "1", "--seed", "5",
                                                "-s", str(paths["store"]), "--json"])).stdout)
    assert (fitted["dim"], fitted["rows"], fitted["rows_skipped"]) == (8, 298, 2)
    assert (paths["store"] / "encoders" / "tfidf-svd").is_dir() and fitted["state"].startswith(str(paths["store"]))
    store = featurestore.open(paths["store"])
    spec = get_encoder(fitted["encoder"], store=store).spec()
    assert (spec["min_df"], spec["analyzer"]["ngram_range"], spec["svd_random_state"]) == (3, [1, 1], 5)
    _ok(runner.invoke(cli, ["embed", "--source", str(paths["parquet"]), "--text", "text", "--key", "id",
                            "-e", fitted["encoder"], "--name", "reviews_tfidf", "-s", str(store.root), "--json"]))
    fs = store.get("reviews_tfidf")
    keys = fs.keys().column("id").to_numpy()
    texts = table.column("text").to_pylist()
    expected = get_encoder(fitted["encoder"], store=store).encode([texts[k] for k in keys])
    np.testing.assert_array_equal(fs.to_numpy(), expected)
    assert is_reproducible(fs.manifest.spec, store) == (True, f"{fitted['encoder']!r} rebuilds here with the same spec.")


@pytest.mark.parametrize("encoder, dim", [("glove:6B-50d", 50), ("wordllama:l2_supercat-64", 64)])
def test_embed_with_a_static_encoder(encoder, dim, paths, table, encoder_cache_env):
    store = featurestore.open(paths["store"])
    _ok(CliRunner().invoke(cli, ["embed", "--source", str(paths["parquet"]), "--text", "text", "--key", "id",
                                 "-e", encoder, "--name", "reviews_static", "-s", str(store.root), "--json"]))
    fs = store.get("reviews_static")
    assert fs.dim == dim and fs.manifest.spec["encoder"] == encoder
    keys = fs.keys().column("id").to_numpy()
    texts = table.column("text").to_pylist()
    np.testing.assert_array_equal(fs.to_numpy(), get_encoder(encoder).encode([texts[k] for k in keys]))
    assert is_reproducible(fs.manifest.spec)[0]


def test_embed_with_an_unsaved_fitted_encoder_saves_its_state(tmp_path, table):
    store = featurestore.open(tmp_path / "store")
    encoder = TfidfSvd.fit(_texts(table), dim=8)
    assert is_reproducible(encoder.spec(), store)[0] is False
    result = pipelines.embed(store, table, key="id", text="text", encoder=encoder, name="reviews_tfidf", progress=False)
    assert result.rows_written == 298 and result.rows_failed == 2
    spec = store.get("reviews_tfidf").manifest.spec
    assert (store.root / spec["state"] / "state.json").is_file()
    assert is_reproducible(spec, store)[0] is True


@pytest.mark.parametrize("args, code, message", [
    (["--source", "{parquet}", "--text", "review"], 1, "has no column(s) ['review']"),
    (["--source", "{parquet}", "--key", "nope"], 1, "has no column(s) ['nope']"),
    (["--source", "{parquet}", "--dim", "5000"], 1, "dim=5000 needs at least 5000 terms"),
    (["--source", "{parquet}", "--ngram-range", "3", "1"], 2, "the smallest n-gram (3) is larger than the largest (1)"),
    (["--source", "{parquet}", "--dim", "0"], 2, "--dim"),
    (["--dim", "8"], 2, "Missing option '--source'"),
])
def test_fit_errors(args, code, message, paths):
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    result = CliRunner().invoke(cli, ["encoders", "fit", "tfidf-svd", *args, "-s", str(paths["store"])])
    assert result.exit_code == code, result.output
    assert message in result.output


def test_repeated_keys_are_refused(tmp_path):
    source = pa.table({"id": [1, 1, 2], "text": ["soft dress", "soft dress", "warm coat"]})
    with pytest.raises(featurestore.ValidationError, match="id"):
        fit_from_source(tmp_path / "store", source, key="id", dim=2, min_df=1)


def test_the_group_is_listed():
    assert "encoders" in _ok(CliRunner().invoke(cli, ["--help"])).stdout
    assert "tfidf-svd" in _ok(CliRunner().invoke(cli, ["encoders", "fit", "--help"])).stdout


@pytest.fixture
def encoder_cache_env(tmp_path, monkeypatch):
    """Weight hashes go to a temporary cache, not the user's."""
    monkeypatch.setenv("FEATURESTORE_CACHE_DIR", str(tmp_path / "cache"))

"""`featurestore drift`: text, JSON and PNG output, exit codes; and a real shift between departments of the clothing
reviews embedded with all-MiniLM-L6-v2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import featurestore
from pipelines.cli import cli

SPEC = {"encoder": "external:test", "metric": "cosine"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def two_groups(tmp_path):
    """``g``: 160 rows of 8-dim vectors, ``grp`` 'x' (rows 0..79) and 'y' (shifted by 1.0 along one axis)."""
    store = featurestore.open(tmp_path / "store")
    x = np.random.default_rng(0).standard_normal((160, 8)).astype(np.float32)
    x[80:, 0] += 1.0
    store.write("g", {"id": np.arange(160), "embedding": x, "grp": np.repeat(["x", "y"], 80)}, spec=SPEC)
    return store


def _args(store, *args):
    return ["drift", *args, "--store", str(store.root)]


def test_json_shape_and_png(runner, two_groups, tmp_path):
    png = tmp_path / "out" / "drift.png"
    result = runner.invoke(cli, _args(two_groups, "g", "--where-a", "grp = 'x'", "--where-b", "grp = 'y'",
                                      "--permutations", "100", "--png", str(png), "--json"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"a", "b", "centroid_cosine", "centroid_distance", "centroid_shift", "centroid_noise",
                        "norm_shift", "mmd2", "bandwidth", "p_value", "permutations", "seed", "spec_differences", "png"}
    assert set(out["a"]) == {"set", "version", "as_of", "where", "rows", "rows_tested", "norm_mean", "norm_std",
                             "spread"}
    assert (out["a"]["where"], out["b"]["rows"], out["permutations"]) == ("grp = 'x'", 80, 100)
    assert out["p_value"] < 0.01
    assert out["png"] == str(png) and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


def test_text_output(runner, two_groups):
    result = runner.invoke(cli, _args(two_groups, "g", "--where-a", "grp = 'x' and id % 2 = 0", "--where-b",
                                      "grp = 'x' and id % 2 = 1", "--permutations", "100", "--seed", "1"))
    assert result.exit_code == 0, result.output
    assert "A: g@v1 where grp = 'x' and id % 2 = 0  40 rows (40 tested)" in result.stdout
    assert "(100 permutations, seed 1): no difference detected at 0.05" in result.stdout


def test_usage_and_store_errors(runner, two_groups):
    result = runner.invoke(cli, _args(two_groups, "g"))
    assert result.exit_code == 2 and "Give a second set or version B" in result.output
    two_groups.write("h", {"id": np.arange(5), "embedding": np.ones((5, 8), np.float32)},
                     spec={"encoder": "external:other"})
    result = runner.invoke(cli, _args(two_groups, "g", "h", "--json"))
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)
    assert error["kind"] == "SpecMismatchError" and "encoder: 'external:test' -> 'external:other'" in error["error"]
    result = runner.invoke(cli, _args(two_groups, "g", "h", "--allow-spec-differences", "--permutations", "0"))
    assert result.exit_code == 0 and "specs differ in: encoder" in result.stdout
    result = runner.invoke(cli, _args(two_groups, "g", "--where-a", "grp = 'x'", "--max-rows", "1"))
    assert result.exit_code == 2


# -- real data ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_reviews_one_department_against_another_shows_a_real_shift(runner, tmp_path):
    """600 reviews embedded with all-MiniLM-L6-v2: Dresses against Bottoms differ; two halves of Tops do not."""
    from featurestore.encoders import get_encoder
    from pipelines.sources._datasets import clothing_reviews

    df = clothing_reviews()
    df = df[df["Review Text"].notna() & df["Department Name"].notna()]
    rng = np.random.default_rng(0)
    picked = [df[df["Department Name"] == d] for d in ("Tops", "Dresses", "Bottoms")]
    sample = [d.iloc[rng.choice(len(d), n, replace=False)] for d, n in zip(picked, (300, 150, 150))]
    ids = np.concatenate([s.index.to_numpy() for s in sample])
    texts = [t for s in sample for t in s["Review Text"]]
    departments = np.concatenate([s["Department Name"].to_numpy(dtype=str) for s in sample])
    encoder = get_encoder("sentence-transformers:all-MiniLM-L6-v2")
    store = featurestore.open(tmp_path / "store")
    store.write("reviews", {"id": ids, "embedding": encoder.encode(texts), "department": departments},
                spec=encoder.spec())

    shift = runner.invoke(cli, _args(store, "reviews", "--where-a", "department = 'Dresses'", "--where-b",
                                     "department = 'Bottoms'", "--json", "--png", str(tmp_path / "d.png")))
    assert shift.exit_code == 0, shift.output
    shift = json.loads(shift.stdout)
    halves = store.drift("reviews", where_a="department = 'Tops' and id % 2 = 0",
                         where_b="department = 'Tops' and id % 2 = 1")
    assert shift["p_value"] < 0.01 and shift["norm_shift"] is None  # MiniLM's vectors are unit-norm
    assert halves.p_value > 0.05
    assert shift["centroid_shift"] > 2 * halves.centroid_shift
    assert shift["centroid_distance"] > 3 * shift["centroid_noise"]

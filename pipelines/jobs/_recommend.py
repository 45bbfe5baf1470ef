"""Train, evaluate and query recommenders on stored item embeddings: what `featurestore recommend ...` and
`featurestore demo movies` run.

Honest by construction: the interactions are split by time first (each user's last event, or a global cut), and the
collaborative feature set, the generators, the ranker and every feature see the training part only. The test part is
saved with the model, so `recommend eval` scores exactly the events `recommend train` held out.

The demo, measured on MovieLens-100k (943 users, 1,682 movies, leave-last-out, full catalogue, 2-core AMD EPYC
shared with other jobs): see the README's Recommenders section for its table and time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.errors import MissingFileError, ModelNotFoundError, TargetExistsError, ValidationError
from featurestore.storage import validate_name
from featurestore.utils import import_optional

SVD_DIM = 64


def read_interactions(source: Any, *, user: str = "user", item: str = "item", time_column: str = "time",
                      rating: str | None = None, items: Sequence[Any] | None = None):
    """An ``Interactions`` table from a Parquet/CSV file or a pandas DataFrame naming its columns."""
    import stackers

    pd = import_optional("pandas", extra="stack", what="Reading interactions")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MissingFileError(f"No interactions file at {str(path)!r}.")
        df = pd.read_csv(path) if path.suffix.lower() in (".csv", ".tsv") else pd.read_parquet(path)
    else:
        df = source
    return stackers.Interactions.from_frame(df, user=user, item=item, time=time_column, rating=rating, items=items)


def _fingerprint(train) -> str:
    h = hashlib.blake2b(digest_size=8)
    for a in (train.user, train.item, train.time):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def write_collaborative_set(store: featurestore.Store, train, name: str, *, dim: int = SVD_DIM,
                            seed: int = 0) -> dict[str, Any]:
    """Item factors of a truncated SVD of the training user-item matrix, written as feature set ``name``.

    Its spec names the training data it was learned from (``fitted_on``: a hash of the training events), so
    training on other data starts a new version instead of mixing two factorisations in one.
    """
    from stackers.recommend import collaborative_vectors

    validate_name(name)
    vectors = collaborative_vectors(train, dim, random_state=seed).astype(np.float32)
    spec = {"encoder": f"svd:{name}", "metric": "cosine", "dim": int(vectors.shape[1]), "fitted_on": _fingerprint(train),
            "method": "truncated SVD of the binary user-item matrix (training events only), V * sqrt(s)",
            "seed": int(seed)}
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    table = pa.table({"item": pa.array(train.items), "embedding": emb})
    return store.write(name, table, key="item", spec=spec, version="auto")


def _is_recommender(path: Path) -> bool:
    from stackers.persist import RECOMMENDER_FORMAT, read_manifest

    try:
        return read_manifest(path)["format"] == RECOMMENDER_FORMAT
    except (OSError, ValueError):
        return False


def _model_dir(store: featurestore.Store, name: str) -> Path:
    path = store.models_dir / name
    if not _is_recommender(path):
        models = store.models_dir
        known = sorted(p.name for p in models.iterdir() if _is_recommender(p)) if models.is_dir() else []
        raise ModelNotFoundError(f"No recommender named {name!r} in {store.root}. Known: {known or 'none'}.")
    return path


def write_report(evaluation, out: Path) -> dict[str, str]:
    """``metrics.json``, ``table.txt`` and ``recommend.png`` (recall and NDCG with intervals) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation.to_dict(), indent=2, default=float) + "\n")
    (out / "table.txt").write_text(evaluation.to_text() + "\n")
    png = evaluation.plot(out / "recommend.png")
    return {"metrics": str(out / "metrics.json"), "table": str(out / "table.txt"), "png": str(png)}


def train_recommender(store: featurestore.Store, interactions, *, name: str, sets: Sequence[str] = (),
                      svd_set: str | None = None, split: str = "leave_last", cut: float | None = None,
                      k: int = 10, n_boot: int = 1000, seed: int = 0, out: str | Path | None = None,
                      force: bool = False, progress: bool | None = None, **params: Any) -> dict[str, Any]:
    """Split ``interactions`` by time, write the collaborative set ``svd_set`` (from training events), fit a
    ``RecommenderStack`` on ``sets``, evaluate it against the baselines on the held-out events, save and report."""
    import stackers

    validate_name(name, "model")
    path = store.models_dir / name
    if path.exists() and not force:
        raise TargetExistsError(f"A model named {name!r} exists in {store.root}; pass force=True (--force) to replace it.")
    for s in sets:
        store.get(s)  # fail before any work on a set name that is not there
    train, test = interactions.split(split, cut=cut)
    if len(test) == 0:
        raise ValidationError(f"The {split!r} split left no held-out events; nothing to evaluate on.")
    written = None
    if svd_set is not None:
        written = write_collaborative_set(store, train, svd_set, seed=seed)
    t0 = time.perf_counter()
    model = stackers.RecommenderStack(sets=list(sets), random_state=seed, **params).fit(train, store, progress=progress)
    fit_s = time.perf_counter() - t0
    evaluation = model.evaluate(test, k=k, n_boot=n_boot, random_state=seed, progress=progress)
    model.save(path, test=test, metrics=evaluation.to_dict(),
               extra={"split": split, "cut": cut, "svd_set": svd_set, "train": train.to_dict(), "test": test.to_dict()})
    report = write_report(evaluation, Path(out) if out is not None else path / "report")
    return {"model": str(path), "fit_seconds": fit_s, "eval_seconds": evaluation.seconds, "report": report,
            "svd_set": written, "evaluation": evaluation, "candidate_recall": model.candidate_recall_}


def evaluate_recommender(store: featurestore.Store, name: str, *, k: int = 10, n_boot: int = 1000, seed: int = 0,
                         out: str | Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Re-score saved model ``name`` on the held-out events saved with it; writes the report again."""
    import stackers

    path = _model_dir(store, name)
    model = stackers.RecommenderStack.load(path)
    test = model.test_
    if test is None:
        raise ModelNotFoundError(f"Model {name!r} was saved without its held-out events; nothing to evaluate on.")
    evaluation = model.evaluate(test, k=k, n_boot=n_boot, random_state=seed, progress=progress)
    report = write_report(evaluation, Path(out) if out is not None else path / "report")
    return {"model": str(path), "evaluation": evaluation, "report": report}


def recommend_for_user(store: featurestore.Store, name: str, user: Any, *, k: int = 10) -> pa.Table:
    """The top ``k`` items of saved model ``name`` for ``user`` (an id as stored; a digit string is tried as an
    int when the model's users are numbers)."""
    import stackers

    model = stackers.RecommenderStack.load(_model_dir(store, name))
    users = model.train_.users
    if isinstance(user, str) and users.dtype.kind in "iu":
        try:
            user = int(user)
        except ValueError:
            raise ValidationError(f"User {user!r} is not a number; the model's users are numbers like "
                             f"{users[:3].tolist()}.") from None
    if not np.isin(np.asarray([user]), users)[0]:
        import warnings

        warnings.warn(f"User {user!r} has no training events; recommending the most popular items.", stacklevel=2)
    return model.recommend(user, k)

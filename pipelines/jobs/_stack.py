"""Train, apply and re-score stackers on stored feature sets: what `featurestore stack train|predict|report` run.

Honest by construction: the held-out split (whole groups when groups are given) is cut before anything is fitted,
the stack and every baseline see only the training rows, and the report scores all of them on the same held-out rows.

The held-out rows are saved with the model (``heldout.parquet``: their keys, labels and table columns), so
``stack report`` scores exactly the rows ``stack train`` scored, from any working directory, even after the labels
file has moved or changed. Both write ``scored.parquet`` beside the report: the keys they scored and the predictions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.errors import ModelNotFoundError, TargetExistsError, ValidationError
from featurestore.storage import to_table, validate_name
from featurestore.utils import progress_enabled, rich_progress
from pipelines.jobs._serve import NotRecomputableWarning, Served, serve, why_not_recomputable

SPLIT = "split.json"
HELDOUT = "heldout.parquet"
TRAIN = "train.parquet"  # the training rows (keys, labels, groups, columns): `stack report` refits the baselines
SCORED = "scored.parquet"


def train_stack(store: featurestore.Store, sets: Sequence[str], labels: Any, *, key: str | Sequence[str] = "id",
                label: str = "label", groups: str | None = None, columns: Sequence[str] | None = None,
                name: str, meta: str = "auto", cv: int = 5, test_size: float = 0.25, seed: int = 0,
                n_boot: int = 1000, out: str | Path | None = None, write_oof: bool = True,
                force: bool = False, progress: bool | None = None, extras: Sequence[str] = (),
                C: float | str = "auto", threshold: str | None = "auto") -> dict[str, Any]:
    """Join ``sets`` with ``labels``, hold out ``test_size``, fit a StackingClassifier, compare, save and report.

    An existing model of that name is refused before any work unless ``force`` (then it is replaced whole). A set
    whose vectors cannot be computed again here (its encoder is not registered, or differs) gives one
    ``NotRecomputableWarning`` naming each such set: the model can then predict for stored keys, not for new rows.

    The model goes to ``<store>/models/<name>`` with its split (``split.json``), held-out rows
    (``heldout.parquet``) and training rows (``train.parquet``: keys, labels, groups, columns, so ``report_stack``
    can refit the baselines), the out-of-fold scores to feature set ``<name>_oof`` and the report (metrics.json,
    table.txt, scored.parquet, PNG plots) to ``out`` (default ``<store>/models/<name>/report``).
    """
    import pyarrow.parquet as pq

    import stackers

    validate_name(name, "model")
    existing = store.models_dir / name
    if not force and (existing.exists() or existing.is_symlink()):
        raise TargetExistsError(f"A model named {name!r} already exists in {store.root}; pass force=True "
                              "(`--force`) to replace it, or choose another name.")
    steps = 5 if write_oof else 4
    with rich_progress(f"stack train {name}", steps, enabled=progress_enabled(progress), unit="steps") as done:
        data = stackers.join(store, list(sets), labels=labels, key=key, label=label, groups=groups,
                             columns=list(columns) if columns else None)
        _warn_if_not_servable(store, name, data.sources)
        train, test = data.split(test_size=test_size, random_state=seed)
        done(1)
        # A batch job uses the machine: base-learner fits and baselines run on every core (one BLAS thread each).
        model = stackers.StackingClassifier(meta=meta, cv=cv, extras=tuple(extras), C=C, threshold=threshold,
                                            random_state=seed, n_jobs=-1)
        model.fit(train)
        done(2)
        comparison = stackers.compare(train, test, model, n_boot=n_boot, random_state=seed, n_jobs=-1)
        done(3)
        model_dir = store.models_dir / name
        model.save(model_dir, metrics=comparison.to_dict())  # replaces a previous save whole, so it goes first
        out = Path(out) if out is not None else model_dir / "report"
        paths = stackers.report(comparison, out=out)
        _write_scored(out / SCORED, test, model.classes_, comparison.probas["stack"], comparison.preds["stack"])
        done(4)
        oof = None
        if write_oof:
            oof = stackers.write_oof(model, store, train, f"{name}_oof", version="auto")
            done(5)
        pq.write_table(_heldout_table(test, label, groups), model_dir / HELDOUT)
        pq.write_table(_heldout_table(train, label, groups), model_dir / TRAIN)
        split = {"test_size": test_size, "seed": seed, "n_boot": n_boot, "n_train": len(train), "n_test": len(test),
                 "labels": str(Path(labels).resolve()) if isinstance(labels, (str, Path)) else "<table>",
                 "label": label, "groups": groups, "columns": list(columns or []), "key": test.key, "heldout": HELDOUT,
                 "train": TRAIN}
        # last: a model with split.json has its held-out rows
        (model_dir / SPLIT).write_text(json.dumps(split, indent=1))
    return {"model": str(model_dir), "report": {k: str(v) for k, v in paths.items()} | {"scored": str(out / SCORED)},
            "comparison": comparison, "meta": model.meta_name_, "meta_scores": getattr(model, "meta_scores_", None),
            "oof_set": oof.name if oof is not None else None, "split": split, "estimator": model}


def _warn_if_not_servable(store: featurestore.Store, name: str, sources: Mapping[str, Mapping[str, Any]]) -> None:
    """One warning naming every set of the model whose vectors cannot be computed again here."""
    why = {s: why_not_recomputable(info["spec"], store) for s, info in sources.items()}
    lost = {s: w for s, w in why.items() if w is not None}
    if lost:
        detail = "; ".join(f"{s!r} v{sources[s]['version']}: {w}" for s, w in lost.items())
        warnings.warn(f"Model {name!r} can predict for keys already stored, but not for new rows: "
                      f"{len(lost)} of its {len(sources)} feature sets cannot be recomputed here ({detail}).",
                      NotRecomputableWarning, stacklevel=3)


def predict_stack(store: featurestore.Store, name: str, keys: Any = None, *, source: Any = None,
                  key: str | Sequence[str] | None = None, text: str | Mapping[str, str] | None = None,
                  output: str | Path | None = None, progress: bool | None = None) -> pa.Table:
    """Score ``keys`` with saved model ``name``, from the feature sets and versions it was trained on.

    ``keys`` is None (every key), a .parquet/.csv path, a table or a sequence of key values, as in
    ``stackers.predict_from_store``. Returns its table (keys, ``prediction``, ``proba_<class>``...); with ``output``
    (a .parquet or .csv path) also writes it there. With ``source`` instead, new rows: see ``serve_stack``.
    """
    import stackers
    from stackers.persist import STACKER_FORMAT, find_model

    if source is not None:
        if keys is not None:
            raise ValidationError("Pass keys (stored rows) or source (new rows), not both.")
        return serve_stack(store, name, source, key=key, text=text, output=output, progress=progress).table
    model = stackers.load(find_model(store, name, formats=(STACKER_FORMAT,)))
    table = stackers.predict_from_store(model, store, keys)
    if output is not None:
        _write_table(table, Path(output))
    return table


def serve_stack(store: featurestore.Store, name: str, source: Any, *, key: str | Sequence[str] | None = None,
                text: str | Mapping[str, str] | None = None, output: str | Path | None = None,
                progress: bool | None = None) -> Served:
    """Score every row of ``source`` with saved model ``name``, embedding first the rows its sets lack
    (``pipelines.predict``); with ``output`` also write the table there."""
    served = serve(name, store, source, key=key, text=text, progress=progress)
    if output is not None:
        _write_table(served.table, Path(output))
    return served


def report_stack(store: featurestore.Store, name: str, *, labels: Any = None,
                 out: str | Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Re-score saved model ``name`` on the rows ``train_stack`` held out; write the report to ``out``.

    The held-out rows come from the model folder, with their labels; ``labels`` (a table or file) replaces those
    labels, and must hold every held-out key. The bootstrap uses the training run's ``n_boot`` and seed, so the
    stack's metrics and intervals are the ones ``train_stack`` reported. The tuned per-set baselines and the concat
    are refitted on the training rows saved with the model (``train.parquet``, always with their saved labels, as
    the stack was), from the stored features; a model saved before that file existed reports the stack and its own
    base learners, and says the baselines are missing.
    """
    import pyarrow.parquet as pq

    import stackers
    from stackers.persist import STACKER_FORMAT, find_model

    with rich_progress(f"stack report {name}", 3, enabled=progress_enabled(progress), unit="steps") as done:
        model_dir = find_model(store, name, formats=(STACKER_FORMAT,))
        split_path = model_dir / SPLIT
        if not split_path.is_file():
            raise ModelNotFoundError(f"{model_dir} has no {SPLIT}: it was not trained with `featurestore stack train`.")
        split = json.loads(split_path.read_text())
        model = stackers.load(model_dir)
        sets = list(model.sources_)
        key = list(model.key_)
        common = dict(key=key, label=split["label"], columns=list(model.columns_) or None,
                    versions={k: v["version"] for k, v in model.sources_.items()})
        heldout_path = model_dir / HELDOUT
        if heldout_path.is_file():
            heldout = pq.read_table(heldout_path)
            if labels is None:
                test = stackers.join(store, sets, labels=heldout, how="error", **common)
            else:
                test = _rows_for_keys(stackers.join(store, sets, labels=labels, **common), heldout.select(key), labels)
        else:  # trained before the held-out rows were saved: cut the split again from the labels, as training did
            labels = labels if labels is not None else split["labels"]
            if labels == "<table>":
                raise ValidationError(f"{model_dir} was trained on an in-memory table and has no {HELDOUT}: pass labels.")
            data = stackers.join(store, sets, labels=labels, groups=split["groups"], **common)
            _, test = data.split(test_size=split["test_size"], random_state=split["seed"])
        done(1)
        train_path = model_dir / TRAIN
        train, notes = None, []
        if train_path.is_file():
            train = stackers.join(store, sets, labels=pq.read_table(train_path), how="error", groups=split["groups"],
                                  **common)
        else:
            notes.append(f"{model_dir} has no {TRAIN} (saved before training rows were kept): retrain it with "
                         "`featurestore stack train` to compare with the tuned baselines.")
        comparison = stackers.Comparison.from_model(model, test, train=train, n_boot=int(split.get("n_boot", 1000)),
                                                    random_state=split.get("seed", 0), notes=notes, n_jobs=-1)
        done(2)
        out = Path(out) if out is not None else model_dir / "report"
        paths = stackers.report(comparison, out=out)
        _write_scored(out / SCORED, test, model.classes_, comparison.probas["stack"], comparison.preds["stack"])
        done(3)
    return {"model": str(model_dir), "report": {k: str(v) for k, v in paths.items()} | {"scored": str(out / SCORED)},
            "comparison": comparison, "n_test": len(test), "keys": test.keys, "text": paths.text}


def _heldout_table(test, label: str, groups: str | None):
    """The held-out rows as a labels table: key columns, the label, the groups and the table columns."""
    table = test.keys
    table = table.append_column(label, pa.array(test.y))
    if groups is not None:
        table = table.append_column(groups, pa.array(test.groups))
    if test.columns is not None:
        extra = to_table(test.columns)
        for field, column in zip(extra.schema, extra.columns):
            table = table.append_column(field, column)
    return table


def _rows_for_keys(data, keys, labels: Any):
    """The rows of TrainingSet ``data`` whose keys are ``keys``, in that order; every key must be there."""
    names = keys.column_names
    position = {k: i for i, k in enumerate(zip(*(data.keys.column(n).to_pylist() for n in names)))}
    wanted = list(zip(*(keys.column(n).to_pylist() for n in names)))
    missing = [k for k in wanted if k not in position]
    if missing:
        where = repr(str(labels)) if isinstance(labels, (str, Path)) else "the labels"
        raise ValidationError(f"{len(missing)} of the {len(wanted)} held-out keys have no row in {where} (joined with "
                         f"the model's feature sets), e.g. {missing[:3]}; the report scores exactly the held-out rows.")
    return data.subset(np.array([position[k] for k in wanted], dtype=np.int64))


def _write_table(table, path: Path) -> None:
    """``table`` as Parquet (a .parquet or .pq path) or else CSV."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if path.suffix.lower() in (".parquet", ".pq"):
        pq.write_table(table, path)
    else:
        pcsv.write_csv(table, path)


def _write_scored(path: Path, test, classes: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> None:
    """Which rows were scored, their label and the stack's prediction (what ``predict`` returns: by its tuned
    threshold when it has one) with its probability: keys, label, prediction, confidence."""
    import pyarrow.parquet as pq

    table = test.keys if test.keys is not None else pa.table({"row": np.arange(len(test))})
    chosen = np.searchsorted(classes, pred)
    table = (table.append_column("label", pa.array(test.y)).append_column("prediction", pa.array(pred))
             .append_column("confidence", pa.array(proba[np.arange(len(chosen)), chosen])))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)

"""Serving: new raw rows in, predictions out.

``predict(model, store, source)`` lets a stacker answer for rows it has never seen. For every feature set the model
was trained on (``model.sources_``: name, version, spec), the source rows whose keys that version lacks are embedded
with the version's recorded spec: the encoder is rebuilt by ``encoder_from_spec`` and run by the ordinary embedding
job (``_runner``), so resume, error rows and provenance are those of any job. Then the model predicts for every source
row from the stored features (``stackers.predict_from_store``), so a prediction made from a source row is the
prediction made from the stored features of its key.

Versions. A feature set version is one encoder spec, not a snapshot of rows: rows of that spec are appended to it,
and the model records the (version, spec) it was trained on. New rows go to that very version, under the same spec,
so the model's record still holds: predicting afterwards, from the source or from stored keys, reads the same version
and neither refuses nor warns (``StaleFeatureSetWarning`` is for a version that is gone or whose spec changed). Rows
already stored are never embedded again, even when the source's text for that key differs: the model's training rows
stay exactly as trained (embed a changed text with ``pipelines.embed`` to replace its row on purpose).

What cannot be served is refused before anything is written: a set whose encoder cannot be rebuilt here (its
registry key is not registered, the encoder found here makes other vectors, a fitted state is missing), or whose
recorded version is gone or holds another spec. A set that lacks none of the source's keys needs no encoder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import featurestore
from featurestore.encoders import RUN_OPTIONS
from featurestore.errors import EncoderNotAvailableError, FeatureSetNotFoundError, SpecMismatchError, ValidationError
from featurestore.storage import check_keys, key_tokens
from pipelines.embedding._job import EmbedResult
from pipelines.embedding._text import run_text
from pipelines.sources import TableSource, open_source

__all__ = ["predict", "NotRecomputableWarning"]

PREDICTION, ERROR, PROBA = "prediction", "error", "proba_"
DEFAULT_TEXT = "text"


class NotRecomputableWarning(UserWarning):
    """A model was trained on a feature set whose vectors cannot be computed again here: it can predict for keys
    already stored, but not for new rows (``pipelines.predict``, ``featurestore stack predict --source``)."""


@dataclass
class Served:
    """What ``serve`` did: the predictions, and the embedding run of each feature set that lacked source rows."""

    table: pa.Table
    embedded: dict[str, EmbedResult] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Source rows without a prediction: some feature set could not embed them (see the ``error`` column)."""
        errors = self.table.column(ERROR)
        return len(errors) - errors.null_count


def predict(model: Any, store: featurestore.Store | str | os.PathLike[str], source: Any, *,
            key: str | Sequence[str] | None = None, text: str | Mapping[str, str] | None = None,
            columns: Sequence[str] = (), progress: bool | None = None, lock_timeout: float = 60.0,
            **encoder_options: Any) -> pa.Table:
    """Predict for every row of ``source`` with a stacker, embedding first the rows its feature sets lack.

    ``model`` is a fitted (or loaded) ``StackingClassifier`` trained on a ``stackers.join`` of ``store``'s sets, or the
    name of a model saved in the store (``featurestore stack train``). ``source`` is a Parquet/CSV/JSONL file or
    folder, an Arrow table or a pandas DataFrame, as ``pipelines.embed`` takes; it holds the key column(s), the text
    and the table columns the model was trained with (``model.columns_``).

    - ``key``: the key column(s); default (and only accepted value) the model's, ``model.key_``.
    - ``text``: the text column, ``"text"`` by default, or a mapping ``{feature set: column}`` for models whose sets
      embed different columns (sets not named there read ``"text"``).
    - ``columns``: more source columns to copy into the output (e.g. the text itself).
    - ``progress``: progress bars of the embedding runs (None: when stderr is a terminal).
    - ``encoder_options``: how the encoders run (``device``, ``batch_size``, ``max_batch_tokens``, ``precision``,
      ``backend``); what they compute comes from each set's spec. ``precision`` defaults to the one the set's version
      was written with.

    For each feature set, the source rows whose keys its trained-on version lacks are embedded into that version
    (exactly those rows: a key already stored keeps its vector, whatever the source's text says) by an ordinary
    embedding job: a rerun after a crash resumes, bad texts become the set's error rows, the run is recorded with the
    source's name. See the module docstring for why the version stays the one the model was trained on.

    Returns a pyarrow Table with one row per source row, in source order: the key column(s), the ``columns``,
    ``prediction`` (the class), ``error`` and one ``proba_<class>`` column per class, ``model.classes_`` order (the
    names ``stackers.predict_from_store`` gives). A row some feature set could not embed (null, empty or non-text
    text) does not stop the others: its prediction and probabilities are null and ``error`` says why and where
    (``"empty: the text is empty or only whitespace (feature set reviews_minilm)"``); ``error`` is null on every
    predicted row.

    Raises, before anything is written: ``EncoderNotAvailableError`` when a set that lacks rows cannot be recomputed
    here (its encoder is not registered, makes other vectors, or misses its fitted state), ``FeatureSetNotFoundError``
    or ``SpecMismatchError`` when its trained-on version is gone or changed, ``ValidationError`` for null or repeated
    source keys or missing columns.
    """
    return serve(model, store, source, key=key, text=text, columns=columns, progress=progress,
                 lock_timeout=lock_timeout, **encoder_options).table


def serve(model: Any, store: featurestore.Store | str | os.PathLike[str], source: Any, *,
          key: str | Sequence[str] | None = None, text: str | Mapping[str, str] | None = None,
          columns: Sequence[str] = (), progress: bool | None = None, lock_timeout: float = 60.0,
          **encoder_options: Any) -> Served:
    """``predict``, also returning each embedding run (what the CLI reports)."""
    store = store if isinstance(store, featurestore.Store) else featurestore.open(store, create=False)
    model = _load_model(model, store)
    keys = _model_key(model, key)
    texts = _text_columns(model, text)
    unknown = sorted(set(encoder_options) - set(RUN_OPTIONS))
    if unknown:
        raise ValidationError(f"Unknown option(s) {unknown} for predict(). Valid encoder options: {list(RUN_OPTIONS)}; "
                         "what an encoder computes (layer, pooling, dtype...) comes from each feature set's spec.")
    extra = [c for c in dict.fromkeys(columns) if c not in keys]
    _check_output_names(model, extra)
    src = open_source(source)
    wanted = list(dict.fromkeys([*keys, *model.columns_, *extra]))
    src.check_columns(wanted)
    rows = src.read_columns(wanted)
    try:
        check_keys(rows, keys)
    except ValidationError as exc:
        raise ValidationError(f"Source {src.description}: {exc}") from None

    plans = [_plan(store, model, name, rows, keys, texts[name], encoder_options) for name in model.sources_]
    todo = [p for p in plans if len(p.missing)]
    problems = [p.problem for p in todo if p.problem is not None]
    if problems:
        kind = problems[0][0]
        raise kind("Cannot serve new rows: " + " ".join(why for _, why in problems) +
                   "\n  Help: embed those rows into the set yourself (store.write), predict for stored keys only "
                   "(`stack predict --keys`), or retrain on sets whose encoders are registered here.")
    src.check_columns(list(dict.fromkeys(p.text for p in todo)))

    embedded: dict[str, EmbedResult] = {}
    for group in _groups(todo):
        lead = group[0]
        subset = _Rows(src, keys, lead.key_schema, lead.missing)
        version = lead.version if len(group) == 1 else None  # a shared pass appends to each latest (= trained) one
        targets = [(p.name, p.encoder, (p.encoder, {})) for p in group]
        results = run_text(store, subset, targets, key=keys, text=lead.text, version=version, chunk_rows=None,
                       partition_rows=10_000, progress=progress, on_progress=None, lock_timeout=lock_timeout,
                       limit=None)
        embedded.update({p.name: r for p, r in zip(group, results)})
    table = _predictions(model, store, rows, keys, extra, plans)
    return Served(table, embedded)


def why_not_recomputable(spec: Mapping[str, Any], store: featurestore.Store | None = None) -> str | None:
    """None when this installation can compute vectors of ``spec`` again, else why not (one line).

    The verdict is ``featurestore.encoders.is_reproducible``: the registry key is registered, its library and files
    (weights, or a fitted state in ``store``) are here, and the encoder rebuilt gives the same spec.
    """
    from featurestore.encoders import is_reproducible

    ok, why = is_reproducible(spec, store=store)
    return None if ok else why.split("\n")[0].rstrip(".")


# -- the parts ----------------------------------------------------------------------------------------------------
@dataclass
class _SetPlan:
    """One feature set of the model: the version to read and append to, and the source keys it lacks."""

    name: str
    version: int
    text: str
    latest: bool = False
    key_schema: pa.Schema | None = None
    missing: pa.Array = field(default_factory=lambda: pa.array([]))  # key tokens, source order
    encoder: Any = None
    problem: tuple[type[Exception], str] | None = None


def _load_model(model: Any, store: featurestore.Store) -> Any:
    from sklearn.utils.validation import check_is_fitted

    import stackers
    from stackers.persist import STACKER_FORMAT, find_model

    if isinstance(model, str):
        model = stackers.load(find_model(store, model, formats=(STACKER_FORMAT,)))
    elif isinstance(model, os.PathLike):
        model = stackers.load(Path(model))
    check_is_fitted(model)
    if not getattr(model, "sources_", None):
        raise ValidationError("This model has no recorded feature sets: fit it on a TrainingSet from stackers.join to "
                         "predict from a store.")
    return model


def _model_key(model: Any, key: str | Sequence[str] | None) -> list[str]:
    keys = list(model.key_)
    if key is not None and ([key] if isinstance(key, str) else list(key)) != keys:
        raise ValidationError(f"The model is keyed by {keys}, so the source must be too; got key={key!r}. "
                         "Help: rename the source's key column(s).")
    return keys


def _text_columns(model: Any, text: str | Mapping[str, str] | None) -> dict[str, str]:
    if text is None or isinstance(text, str):
        return dict.fromkeys(model.sources_, text or DEFAULT_TEXT)
    unknown = sorted(set(text) - set(model.sources_))
    if unknown:
        raise ValidationError(f"text names feature set(s) {unknown} the model does not use. "
                         f"Its sets: {list(model.sources_)}.")
    return {name: text.get(name, DEFAULT_TEXT) for name in model.sources_}


def _check_output_names(model: Any, extra: list[str]) -> None:
    ours = {PREDICTION, ERROR, *(f"{PROBA}{c}" for c in model.classes_)}
    clash = [c for c in extra if c in ours]
    if clash:
        raise ValidationError(f"Source column(s) {clash} would clash with the output's own columns ({PREDICTION!r}, "
                         f"{ERROR!r}, {PROBA}<class>). Help: leave them out of columns=.")


def _plan(store: featurestore.Store, model: Any, name: str, rows: pa.Table, keys: list[str], text: str,
          options: Mapping[str, Any]) -> _SetPlan:
    """Which source keys ``name``'s trained-on version lacks, and the encoder that can embed them (or why none)."""
    from featurestore.encoders import encoder_from_spec

    recorded = model.sources_[name]
    version = int(recorded["version"])
    spec = recorded.get("spec")
    plan = _SetPlan(name, version, text)
    where = f"Feature set {name!r} v{version}, which the model was trained on,"
    try:
        fs = store.get(name, version=version)
    except FeatureSetNotFoundError:
        plan.missing = key_tokens(rows, keys)
        plan.problem = (FeatureSetNotFoundError, f"{where} is not in {store.root}.")
        return plan
    plan.latest = fs.latest
    stored = fs.keys()
    plan.key_schema = stored.schema
    tokens = key_tokens(_cast_keys(rows.select(keys), stored.schema, name), keys)
    plan.missing = tokens.filter(pc.invert(pc.is_in(tokens, value_set=key_tokens(stored, keys))))
    if not len(plan.missing):
        return plan
    spec = dict(spec) if spec is not None else dict(fs.spec)
    if dict(fs.spec) != spec:
        plan.problem = (SpecMismatchError, f"{where} now holds another spec.")
        return plan
    why = why_not_recomputable(spec, store)
    if why is not None:
        plan.problem = (EncoderNotAvailableError,
                        f"{where} lacks {len(plan.missing):,} of the source's keys and cannot be recomputed: {why}.")
        return plan
    run = dict(options)
    if "precision" not in run and fs.manifest.provenance.get("precision"):
        run["precision"] = fs.manifest.provenance["precision"]  # as the set was written (fp32 on CPUs)
    cls = type(encoder_from_spec(spec, store=store))  # the options it takes: a fitted encoder has no precision
    plan.encoder = encoder_from_spec(spec, store=store, **{k: v for k, v in run.items() if k in cls.options})
    return plan


def _groups(plans: list[_SetPlan]) -> list[list[_SetPlan]]:
    """Sets embedded in one pass over the source: same text column, same missing keys, each appending to its latest
    version (a pass takes one ``version``). Layers of one model then share each forward pass."""
    groups: list[list[_SetPlan]] = []
    for p in plans:
        for g in groups:
            if p.latest and g[0].latest and g[0].text == p.text and g[0].missing.equals(p.missing):
                g.append(p)
                break
        else:
            groups.append([p])
    return groups


def _cast_keys(keys: pa.Table | pa.RecordBatch, schema: pa.Schema, name: str) -> Any:
    """The key columns cast to the feature set's key types (a CSV reads every key as text)."""
    arrays = list(keys.columns)
    for i, f in enumerate(keys.schema):
        if f.name in schema.names and f.type != schema.field(f.name).type:
            try:
                arrays[i] = arrays[i].cast(schema.field(f.name).type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValidationError(f"Key column {f.name!r} is {f.type} in the source but "
                                      f"{schema.field(f.name).type} in feature set {name!r}, and cannot be cast: "
                                      f"{exc}") from None
    return type(keys).from_arrays(arrays, schema=pa.schema(
        [schema.field(f.name) if f.name in schema.names else f for f in keys.schema]))


class _Rows(TableSource):
    """The rows of a source whose keys are in ``wanted``, with the feature set's key types: what one serving pass
    embeds. Streams like its source and shows the same name and fingerprint in the run's record."""

    def __init__(self, src: TableSource, keys: list[str], key_schema: pa.Schema, wanted: pa.Array) -> None:
        self.__dict__.update(vars(src))  # the same files and format: nothing is read again to make it
        self._keys, self._key_schema, self._wanted = keys, key_schema, wanted

    def _keep(self, data: Any) -> Any:
        cast = _cast_keys(data.select(self._keys), self._key_schema, "")
        for k in self._keys:
            data = data.set_column(data.schema.get_field_index(k), self._key_schema.field(k), cast.column(k))
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        return data.filter(pc.is_in(key_tokens(table, self._keys), value_set=self._wanted))

    def batches(self, columns: Sequence[str], *, binary: Sequence[str] = (), text: str | None = None):
        for batch in super().batches(columns, binary=binary, text=text):
            yield self._keep(batch)

    def read_columns(self, columns: Sequence[str]) -> pa.Table:
        return self._keep(super().read_columns(columns))

    def count_rows(self) -> int:
        return len(self._wanted)


def _predictions(model: Any, store: featurestore.Store, rows: pa.Table, keys: list[str], extra: list[str],
                 plans: list[_SetPlan]) -> pa.Table:
    """Predict for the source rows every set now holds; the others get nulls and the reason."""
    import stackers

    key_schema = next((p.key_schema for p in plans if p.key_schema is not None), None)
    if key_schema is not None:
        rows = _cast_keys(rows, key_schema, plans[0].name)
    tokens = key_tokens(rows, keys)
    reasons: dict[Any, dict[str, list[str]]] = {}  # token -> reason -> sets
    for p in plans:
        fs = store.get(p.name, version=p.version)
        lacking = pc.invert(pc.is_in(tokens, value_set=key_tokens(fs.keys(), keys)))
        lost = tokens.filter(lacking).to_pylist()
        if not lost:
            continue
        errors = fs.errors()
        known = {}
        if errors.num_rows:
            errors = errors.filter(pc.is_in(key_tokens(errors, keys), value_set=pa.array(lost, tokens.type)))
            known = dict(zip(key_tokens(errors, keys).to_pylist(), errors.column("reason").to_pylist()))
        for t in lost:
            why = known.get(t) or "not embedded"
            reasons.setdefault(t, {}).setdefault(why, []).append(p.name)
    failed = np.array([t in reasons for t in tokens.to_pylist()], dtype=bool)
    good = np.flatnonzero(~failed)
    if len(good):
        pred = stackers.predict_from_store(model, store, rows.take(pa.array(good)).select([*keys, *model.columns_]),
                                           how="error")
    else:
        pred = _no_predictions(model, keys)
    position = np.full(rows.num_rows, -1, dtype=np.int64)
    position[good] = np.arange(len(good))
    index = pa.array(position, mask=position < 0)
    out = rows.select([*keys, *extra])
    out = out.append_column(pred.field(PREDICTION), pred.column(PREDICTION).take(index))
    errors = [None if t not in reasons else "; ".join(_where(why, sets) for why, sets in reasons[t].items())
              for t in tokens.to_pylist()]
    out = out.append_column(pa.field(ERROR, pa.string()), pa.array(errors, pa.string()))
    for c in model.classes_:
        name = f"{PROBA}{c}"
        out = out.append_column(pred.field(name), pred.column(name).take(index))
    return out


def _where(why: str, sets: list[str]) -> str:
    """``empty: the text is empty or only whitespace (feature sets a, b)``."""
    return f"{why} (feature set{'s' if len(sets) > 1 else ''} {', '.join(sets)})"


def _no_predictions(model: Any, keys: list[str]) -> pa.Table:
    """The columns ``predict_from_store`` returns, with no rows (every source row failed to embed)."""
    classes = np.asarray(model.classes_)
    table = pa.table({k: pa.array([], pa.null()) for k in keys})
    table = table.append_column(PREDICTION, pa.array(classes.tolist() if classes.dtype == object else classes)[:0])
    for c in classes:
        table = table.append_column(f"{PROBA}{c}", pa.array([], pa.float64()))
    return table

"""The batch embedding job: source -> screen (set aside bad rows, skip committed ones) -> encoder -> sinks.

Memory stays bounded whatever the input size: rows are read in batches, texts are encoded in chunks, and a partition
is committed as soon as it fills (the commit runs in a background thread while the next chunk is encoded). A rerun
skips every row whose (key, content_hash) is already committed, so a job killed at any moment and started again ends
with exactly the source's rows.

This module holds the public calls, their checks and the loop; ``_screen`` decides which rows to encode and
``_sinks`` buffers and commits partitions.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

import featurestore
from featurestore.encoders import TEXT_OPTIONS
from featurestore.storage import _format as fmt
from featurestore.storage._error_rows import COLUMNS as ERROR_COLUMNS, REASON
from featurestore.storage._names import validate_name
from featurestore.utils._progress import ProgressCallback, progress_enabled, rich_progress
from featurestore.errors import InvalidTypeError, ValidationError

from pipelines.embedding._screen import Screen
from pipelines.embedding._sinks import Sink, Sinks
from pipelines.embedding._source_keys import SourceKeys
from pipelines.sources import TableSource, open_source
from pipelines.sources._errors import RESERVED

ENCODER_OPTIONS = TEXT_OPTIONS  # what a text job passes on to its encoder (the encoders' own list, one home)


@dataclass
class EmbedResult:
    """What a job did: the run record plus where it wrote."""

    name: str
    version: int | None
    rows_read: int
    rows_written: int
    rows_skipped: int
    rows_failed: int
    seconds: float
    run_id: str
    #: failed rows by error kind (null, empty, non-string, undecodable, invalid-json), as in the errors view
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    #: how the encoder ran (device, backend, precision, versions), as stored with the partitions
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        return d


def embed(store: featurestore.Store | str | os.PathLike[str], source: Any, *, key: str | Sequence[str] = "id",
          text: str = "text", encoder: str | Any = "sentence-transformers:all-MiniLM-L6-v2", name: str,
          version: int | str = "auto", chunk_rows: int | None = None, partition_rows: int = 10_000,
          progress: bool | None = None, on_progress: ProgressCallback | None = None, lock_timeout: float = 60.0,
          limit: int | None = None, keep: Sequence[str] = (), engine: str = "local", address: str | None = None,
          num_gpus_per_worker: float | None = None, concurrency: int | None = None, staging: str | None = None,
          **encoder_options: Any) -> EmbedResult:
    """Embed the ``text`` column of ``source`` with ``encoder`` into feature set ``name``, keyed by ``key``.

    ``source`` is a Parquet/CSV/JSONL file or folder, or an Arrow/pandas table. Encoder options (``device``,
    ``batch_size``, ``max_seq_length``, ``normalize``, ``layer``, ``pooling``, ``dtype``, ``backend``, ``precision``)
    go to the encoder when it is given by name; an Encoder object comes configured, and options beside it are an
    error. ``version="auto"`` appends to the version with the same encoder spec or starts a new one.
    ``keep``: source columns stored beside the vectors (the text itself may be one), so search results and SQL can
    show them; they are not part of the encoder spec, and a version keeps the same columns in every partition.
    ``engine="ray"`` runs the encoder as Ray Data actors (``pipelines/embedding/engines/_ray.py``): ``address`` of the cluster
    (default: the running one, else a local one), ``num_gpus_per_worker`` per actor, ``concurrency`` actors, and a
    ``staging`` folder every node can read (any pyarrow filesystem URI; default a local temporary folder). The store,
    its format, provenance, resume and idempotence are the local engine's.
    """
    _check_options(encoder_options)
    ray_options = _engine_options(engine, address=address, num_gpus_per_worker=num_gpus_per_worker,
                                  concurrency=concurrency, staging=staging)
    targets = [(name, _build_encoder(encoder, encoder_options, store), (encoder, encoder_options))]
    return _run(store, source, targets, key=key, text=text, version=version, chunk_rows=chunk_rows,
                partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                lock_timeout=lock_timeout, limit=limit, keep=keep, ray_options=ray_options)[0]


def _engine_options(engine: str, **ray_options: Any) -> dict[str, Any] | None:
    """The Ray options of ``engine="ray"`` (None for the local engine, which refuses them)."""
    if engine == "ray":
        from pipelines.embedding.engines._ray import check_ray_options

        check_ray_options(ray_options["num_gpus_per_worker"], ray_options["concurrency"])
        return ray_options
    if engine != "local":
        raise ValidationError(f"The 'engine' parameter must be 'local' or 'ray'. Got {engine!r} instead.")
    given = sorted(k for k, v in ray_options.items() if v is not None)
    if given:
        raise ValidationError(f"Option(s) {given} apply to engine='ray' only; this job runs on engine='local'.")
    return None


def embed_layers(store: featurestore.Store | str | os.PathLike[str], source: Any, *, name: str,
                 layers: Sequence[int | None], key: str | Sequence[str] = "id", text: str = "text",
                 encoder: str = "sentence-transformers:all-MiniLM-L6-v2", version: int | str = "auto",
                 chunk_rows: int | None = None, partition_rows: int = 10_000, progress: bool | None = None,
                 on_progress: ProgressCallback | None = None, lock_timeout: float = 60.0, limit: int | None = None,
                 keep: Sequence[str] = (), engine: str = "local", address: str | None = None,
                 num_gpus_per_worker: float | None = None, concurrency: int | None = None, staging: str | None = None,
                 **encoder_options: Any) -> list[EmbedResult]:
    """Embed several hidden layers of one model into one feature set each, in a single pass over the source.

    Layer ``k`` goes to ``layer_name(name, k)`` (``reviews_minilm_layer3``, ``reviews_minilm_layer_m1`` for -1), and
    ``None`` to ``name`` itself (the model's own output, which ignores ``pooling``). The sentence-transformers
    encoder computes every layer in one forward pass per batch, so N layers cost about one. Each set resumes on its
    own: a rerun encodes only rows some set still lacks. Returns one result per layer, in order. ``engine="ray"``
    and its options as for :func:`embed`: each actor computes every layer in one pass.
    """
    _check_options(encoder_options)
    layers = check_layers("embed_layers", encoder, encoder_options, layers, "sentence-transformers:all-MiniLM-L6-v2")
    ray_options = _engine_options(engine, address=address, num_gpus_per_worker=num_gpus_per_worker,
                                  concurrency=concurrency, staging=staging)
    own = {k: v for k, v in encoder_options.items() if k != "pooling"}  # the model's output has its own pooling
    built = [(name, own) if k is None else (layer_name(name, k), {**encoder_options, "layer": k}) for k in layers]
    targets = [(set_name, _build_encoder(encoder, options, store), (encoder, options)) for set_name, options in built]
    return _run(store, source, targets, key=key, text=text, version=version, chunk_rows=chunk_rows,
                partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                lock_timeout=lock_timeout, limit=limit, keep=keep, ray_options=ray_options)


def check_layers(caller: str, encoder: Any, options: dict[str, Any], layers: Sequence[Any], example: str) -> list[Any]:
    """The layers (or stages) of a one-pass job as a list: named encoder, no ``layer=`` beside, none repeated."""
    if "layer" in options:
        raise ValidationError(f"{caller}() takes the layers as `layers=[...]`, not `layer=`.")
    if not isinstance(encoder, str):
        raise InvalidTypeError(f"{caller}() needs an encoder name such as {example!r}, got {type(encoder).__name__}.")
    layers = list(layers)
    if not layers:
        raise ValidationError(f"{caller}() needs at least one layer.")
    if len(set(layers)) != len(layers):
        raise ValidationError(f"Repeated layer in {layers}: each layer is one feature set.")
    return layers


#: in a list of layers, the model's own output (its own pooling and normalisation), beside hidden layers
MODEL_OUTPUT = "model"


def layer_name(name: str, layer: int) -> str:
    """``reviews_minilm`` + layer 3 -> ``reviews_minilm_layer3``; layer -1 -> ``reviews_minilm_layer_m1``.

    ``m`` stands for minus: a feature set name is an SQL identifier, so it cannot hold ``-``.
    """
    return f"{name}_layer{layer}" if layer >= 0 else f"{name}_layer_m{-layer}"


def parse_layer(value: Any) -> int | None:
    """A layer as written in a flag or a spec: an int (negative counts from the end), or ``"model"`` (None)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == MODEL_OUTPUT:
        return None
    if isinstance(value, bool):
        raise ValidationError(f"A layer is an int or {MODEL_OUTPUT!r} (the model's own output). Got {value!r} instead.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"A layer is an int or {MODEL_OUTPUT!r} (the model's own output). Got {value!r} "
                         "instead.") from None


def _check_options(encoder_options: dict[str, Any]) -> None:
    unknown = sorted(set(encoder_options) - set(ENCODER_OPTIONS))
    if unknown:
        raise ValidationError(f"Unknown option(s) {unknown} for embed(). Valid encoder options: {list(ENCODER_OPTIONS)}")


def _build_encoder(encoder: str | Any, options: dict[str, Any], store: Any) -> Any:
    from featurestore.encoders import get_encoder

    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(encoder, str):  # a fitted encoder ("tfidf-svd:<id>") reads its state from the store
        return get_encoder(encoder, store=store, **options)
    if options:
        raise ValidationError(f"Encoder option(s) {sorted(options)} given with a {type(encoder).__name__} object: options "
                         "apply only when the encoder is given by name; configure the Encoder object instead.")
    return encoder


def _run(store: featurestore.Store | str | os.PathLike[str], source: Any, targets: list[tuple[str, Any, Any]], *,
         key: str | Sequence[str], text: str, version: int | str, chunk_rows: int | None, partition_rows: int,
         progress: bool | None, on_progress: ProgressCallback | None, lock_timeout: float,
         limit: int | None, keep: Sequence[str] = (), ray_options: dict[str, Any] | None = None) -> list[EmbedResult]:
    """One pass over ``source`` writing each (feature set, encoder, how it was asked for) target; the first encoder
    leads the pass."""
    store, keys, keep = check_job(store, targets, key, {"text": text}, keep)
    src = open_source(source)
    src.check_columns([*keys, text, *keep])
    chunk_rows = chunk_rows or _default_chunk_rows(targets[0][1])
    return run_indexed(store, src, targets, keys=keys, keep=keep, text=text, limit=limit, version=version,
                       partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                       lock_timeout=lock_timeout, ray_options=ray_options,
                       job=lambda sinks, report: _Job(sinks, keys, text, chunk_rows, report, keep))


def run_indexed(store: featurestore.Store, src: Any, targets: list[tuple[str, Any, Any]], *, keys: list[str],
                keep: list[str], text: str | None, limit: int | None, job: Callable[[Sinks, Callable[[int], None]], Any],
                ray_options: dict[str, Any] | None = None, **write_options: Any) -> list[EmbedResult]:
    """Every embedding job's frame: its source keys indexed on disk (``SourceKeys``: nulls and duplicates refused,
    resume looked up there, so memory stays flat whatever the source's size), the writers, then ``job(sinks, report)``
    run over ``src``; on Ray (``ray_options``) the same job with its encoding done by actors.

    ``targets``: (feature set, encoder, (encoder as asked for, its options)): the last says how a Ray actor builds it.
    ``text``: the text column (a JSONL line's keys are read as the job reads them); None for images.
    """
    facts = None
    with SourceKeys(keys, src.description) as index:
        total = index.scan(src, text, limit)
        index.check_duplicates()
        if ray_options is not None:  # after the checks: a bad source is refused before a cluster starts
            from pipelines.embedding.engines._ray import ray_job, recipe  # only here: the local engine never imports ray

            recipes = [recipe(asked, options, store) for _, _, (asked, options) in targets]
            job, facts = ray_job(job, recipes, progress=write_options.get("progress"), **ray_options)

        def work(sinks: Sinks, report: Callable[[int], None]) -> tuple[int, dict[str, int]]:
            for sink in sinks.sinks:
                sink.attach(index.committed(sink.writer))
            if not any(sink.committed for sink in sinks.sinks):
                index.close()  # nothing to look up: DuckDB's buffers (up to its cap) are not kept through the job
            running = job(sinks, report)
            running.run(src, limit)
            return running.rows_read, running.screen.error_counts

        return write_targets(store, src, [(n, e) for n, e, _ in targets], keys=keys, keep=keep, total=total,
                             work=work, facts=facts, **write_options)


def check_job(store: featurestore.Store | str | os.PathLike[str], targets: list[tuple[str, Any]],
              key: str | Sequence[str], payload: dict[str, str | None],
              keep: Sequence[str]) -> tuple[featurestore.Store, list[str], list[str]]:
    """The checks every embedding job makes before reading a row: (store, keys, keep columns).

    ``payload`` names the embedded column by role (``{"text": "review"}``, ``{"image": "path"}``); it may not be a
    key, and no key or payload column may use a reserved name or clash with the error rows' columns.
    """
    store = store if isinstance(store, featurestore.Store) else featurestore.open(store)
    names = [t[0] for t in targets]
    for n in names:
        validate_name(n)
    if len(set(names)) != len(names):
        raise ValidationError(f"Two targets write the same feature set: {names}")
    keys = [key] if isinstance(key, str) else list(key)
    for role, column in payload.items():
        if column in keys:
            raise ValidationError(f"The {role} column {column!r} cannot also be a key column.")
    reserved = [c for c in [*keys, *payload.values()] if c is not None and c.startswith(RESERVED)]
    if reserved:
        raise ValidationError(f"Column name(s) {reserved} start with {RESERVED!r}, which embedding jobs reserve.")
    clash = [k for k in keys if k in (*ERROR_COLUMNS, REASON)]
    if clash:  # checked here, not when the first bad row is recorded at the end of the job
        raise ValidationError(f"Key column(s) {clash} clash with the columns of the error rows a job records "
                              f"{[*ERROR_COLUMNS, REASON]}. Help: rename them in the source.")
    return store, keys, _check_keep(keep, keys)


def write_targets(store: featurestore.Store, src: Any, targets: list[tuple[str, Any]], *, keys: list[str],
                  keep: list[str], version: int | str, partition_rows: int, progress: bool | None,
                  on_progress: ProgressCallback | None, lock_timeout: float, total: int,
                  work: Callable[[Sinks, Callable[[int], None]], tuple[int, dict[str, int]]],
                  facts: dict[str, Any] | None = None) -> list[EmbedResult]:
    """Open a writer per (feature set, encoder) target, run ``work(sinks, report)``, finish each run: the results.

    ``work`` is the pass over the source (text here, images in ``_image_job``); it returns the rows it read and its
    failed rows by kind. Every embedding job writes, records its run and reports progress through this one path.
    ``facts``: how the job ran (``{"engine": "ray", ...}``), kept in the provenance and the run record.
    """
    names = [n for n, _ in targets]
    t0 = time.perf_counter()
    label = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
    source_facts = {"source": src.description, "source_fingerprint": src.fingerprint()}
    with contextlib.ExitStack() as stack:
        sinks: list[Sink] = []
        for set_name, enc in targets:
            if getattr(enc, "stored_state", False):  # fitted state goes with its vectors (idempotent)
                enc.save(store)
            spec = enc.spec()
            provenance = {**enc.provenance(), **source_facts, **(facts or {})}
            run_info = {"source": src.description, "encoder": spec.get("encoder"), **(facts or {})}
            writer = stack.enter_context(store.writer(set_name, key=keys, spec=spec, version=version,
                                                      provenance=provenance, lock_timeout=lock_timeout,
                                                      run_info=run_info))
            _check_kept_columns(writer, keep)
            sinks.append(Sink(writer, enc, fmt.spec_fingerprint(spec), keep))
        bar = stack.enter_context(rich_progress(f"embed {label}", total, enabled=progress_enabled(progress)))

        def report(done: int) -> None:
            bar(done)
            if on_progress is not None:
                on_progress(done, total)

        rows_read, error_counts = work(Sinks(sinks, keys, partition_rows), report)
        runs = [sink.writer.finish("ok", rows_read=rows_read) for sink in sinks]
    seconds = time.perf_counter() - t0
    return [EmbedResult(name=n, version=sink.writer.manifest.version if sink.writer.manifest else None,
                        rows_read=rows_read, rows_written=run.get("rows_written", 0),
                        rows_skipped=run.get("rows_skipped", 0), rows_failed=run.get("rows_failed", 0),
                        seconds=seconds, run_id=sink.writer.run_id, errors_by_reason=dict(error_counts),
                        provenance=sink.encoder.provenance())
            for n, sink, run in zip(names, sinks, runs)]


def _check_keep(keep: Sequence[str], keys: list[str]) -> list[str]:
    """The ``keep`` columns as a list, refusing names the partitions already use or the job reserves."""
    if isinstance(keep, str) or not all(isinstance(c, str) and c for c in keep):
        raise ValidationError(f"keep must be a list of source column names. Got {keep!r} instead.")
    keep = list(keep)
    repeated = sorted({c for c in keep if keep.count(c) > 1})
    if repeated:
        raise ValidationError(f"Column(s) {repeated} are given twice in keep={keep}.")
    clash = [c for c in keep if c in keys or c in fmt.SYSTEM_COLUMNS or c.startswith(RESERVED)]
    if clash:
        raise ValidationError(
            f"Cannot keep column(s) {clash}: keys are stored anyway, and {list(fmt.SYSTEM_COLUMNS)} (and names "
            f"starting with {RESERVED!r}) are written by the store itself. Help: rename them in the source.")
    return keep


def _check_kept_columns(writer: Any, keep: list[str]) -> None:
    """A version holds the same columns in every partition: a rerun must keep what its first run kept."""
    m = writer.manifest
    if m is None or not m.columns:  # a new version: its first partition sets the layout
        return
    stored = [c for c in m.columns if c not in m.key and c not in fmt.SYSTEM_COLUMNS]
    if sorted(stored) != sorted(keep):
        raise ValidationError(
            f"Cannot append to {m.name!r} v{m.version} keeping {keep}: its partitions keep {stored}. The kept "
            "columns are part of a version's layout.\n  Help: keep the same columns, or write a new version "
            "(version='new', `--version new`).")


def _default_chunk_rows(enc: Any) -> int:
    batch = getattr(enc, "batch_size", None) or 32
    return max(512, min(8192, batch * 64))


def _check_source_keys(src: TableSource, keys: list[str], limit: int | None) -> int:
    """Null or duplicate keys in the source are an error before any model is loaded; returns the rows checked.

    The keys go through a DuckDB table on disk (``SourceKeys``), not a table in memory.
    """
    with SourceKeys(keys, src.description) as index:
        total = index.scan(src, None, limit)
        index.check_duplicates()
    return total


class _Job:
    """One pass over the source: screened rows flow through the lead encoder's pass into the sinks.

    Each sink takes the rows it lacks (its own content hash, so a set that is complete skips them while another set
    still gets them).
    """

    def __init__(self, sinks: Sinks, keys: list[str], text: str, chunk_rows: int, report: Any,
                 keep: Sequence[str] = ()) -> None:
        self.sinks, self.keys, self.text, self.chunk_rows, self.report = sinks, keys, text, chunk_rows, report
        self.carry = [c for c in keep if c != text]  # kept columns other than the text, carried beside the keys
        self.screen = Screen(sinks.sinks, keys, text, self.carry)
        self.rows_read = 0
        self.done = 0

    def run(self, src: TableSource, limit: int | None) -> None:
        try:
            chunks = self._chunks(src, limit)
            meta: list[pa.Table] = []

            def texts() -> Iterator[list[str]]:
                for chunk in chunks:
                    meta.append(chunk)
                    yield chunk.column(self.text).to_pylist()

            lead, *others = [sink.encoder for sink in self.sinks.sinks]
            stream = (lead.encode_batches_with(others, texts()) if others
                      else ([v] for v in lead.encode_batches(texts())))
            for vectors in stream:
                chunk = meta.pop(0)
                self.sinks.add(chunk, vectors)
                self._advance(chunk.num_rows)
            self._finish()
        finally:
            self.sinks.close()

    def _finish(self) -> None:
        """Commit what is pending, then the error rows still held."""
        self.sinks.flush(force=True)
        self.sinks.wait()
        self.sinks.record_errors(self.screen.errors())

    def _advance(self, rows: int) -> None:
        self.done += rows
        self.report(self.done)

    def _source_batches(self, src: Any) -> Iterator[pa.RecordBatch]:
        """The source's batches as the screen takes them (an image job reads an ``ImageSource`` instead)."""
        binary = [self.text] if src.format == "csv" else []
        return src.batches([*self.keys, *self.carry, self.text], binary=binary, text=self.text)

    def _chunks(self, src: TableSource, limit: int | None) -> Iterator[pa.Table]:
        """Screened rows that still need encoding (see ``Screen``), re-cut to ``chunk_rows``."""
        buf: list[pa.Table] = []
        rows = 0
        for batch in self._source_batches(src):
            if limit is not None:
                if self.rows_read >= limit:
                    break
                batch = batch.slice(0, limit - self.rows_read)
            todo, settled = self.screen(pa.Table.from_batches([batch]), self.rows_read)
            self.rows_read += batch.num_rows
            if self.screen.error_rows >= self.sinks.partition_rows:  # stored as they fill a partition, not held
                self.sinks.record_errors(self.screen.take_errors())
            self._advance(settled)
            if todo.num_rows:
                buf.append(todo)
                rows += todo.num_rows
            while rows >= self.chunk_rows:
                table = pa.concat_tables(buf)
                yield table.slice(0, self.chunk_rows)
                rest = table.slice(self.chunk_rows)
                buf, rows = ([rest] if rest.num_rows else []), rest.num_rows
        if rows:
            yield pa.concat_tables(buf)

"""Every embedding job's frame: checks, the source keys indexed on disk, the writers, the engine, the local pass.

Memory stays bounded whatever the input size: rows are read in batches, texts are encoded in chunks, and a partition
is committed as soon as it fills (the commit runs in a background thread while the next chunk is encoded). A rerun
skips every row whose (key, content_hash) is already committed, so a job killed at any moment and started again ends
with exactly the source's rows.

Text jobs (``_text``) and image jobs (``_images``) run through :func:`run_indexed`; ``_screen`` decides which rows to
encode and ``_sinks`` buffers and commits partitions. An engine other than this process (``engines``: Ray) registers
itself here and drives the same :class:`Job`; the job never imports it.
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
from featurestore.errors import InvalidTypeError, ValidationError
from featurestore.storage import ERROR_COLUMNS, REASON, SYSTEM_COLUMNS, spec_fingerprint, validate_name
from featurestore.utils import ProgressCallback, progress_enabled, rich_progress
from pipelines.embedding._screen import Screen
from pipelines.embedding._sinks import Sink, Sinks
from pipelines.embedding._source_keys import SourceKeys
from pipelines.sources import TableSource
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


@dataclass(frozen=True)
class Engine:
    """Where an embedding job's encoding runs when it is not this process (registered by ``engines``).

    ``check(**options)`` refuses bad options before any work; ``wrap(job_factory, recipes, progress=, **options)``
    returns (a factory of jobs that encode there, the facts kept in provenance); ``recipe(asked, options, store)``
    says how a remote worker builds one target's encoder. The job never imports an engine: it looks it up here.
    """

    check: Callable[..., Any]
    wrap: Callable[..., tuple[Callable[..., Any], dict[str, Any]]]
    recipe: Callable[[Any, dict[str, Any], Any], Any]


ENGINES: dict[str, Engine] = {}
LOCAL = "local"


def register_engine(name: str, engine: Engine) -> Engine:
    """Make ``engine="<name>"`` run through ``engine`` (the ``engines`` package registers its engines on import)."""
    ENGINES[name] = engine
    return engine


def engine_options(engine: str, **options: Any) -> dict[str, Any] | None:
    """The options of a non-local ``engine``, checked (None for the local engine, which refuses them)."""
    if engine != LOCAL:
        if engine not in ENGINES:
            known = " or ".join(map(repr, [LOCAL, *sorted(ENGINES)]))
            raise ValidationError(f"The 'engine' parameter must be {known}. Got {engine!r} instead.")
        ENGINES[engine].check(**options)
        return {"engine": engine, **options}
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise ValidationError(f"Option(s) {given} apply to engine='ray' only; this job runs on engine='local'.")
    return None


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


def check_options(encoder_options: dict[str, Any]) -> None:
    unknown = sorted(set(encoder_options) - set(ENCODER_OPTIONS))
    if unknown:
        raise ValidationError(f"Unknown option(s) {unknown} for embed(). Valid encoder options: {list(ENCODER_OPTIONS)}")


def build_encoder(encoder: str | Any, options: dict[str, Any], store: Any) -> Any:
    from featurestore.encoders import get_encoder

    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(encoder, str):  # a fitted encoder ("tfidf-svd:<id>") reads its state from the store
        return get_encoder(encoder, store=store, **options)
    if options:
        raise ValidationError(f"Encoder option(s) {sorted(options)} given with a {type(encoder).__name__} object: options "
                         "apply only when the encoder is given by name; configure the Encoder object instead.")
    return encoder


def run_indexed(store: featurestore.Store, src: Any, targets: list[tuple[str, Any, Any]], *, keys: list[str],
                keep: list[str], text: str | None, limit: int | None, job: Callable[[Sinks, Callable[[int], None]], Any],
                engine: dict[str, Any] | None = None, **write_options: Any) -> list[EmbedResult]:
    """Every embedding job's frame: its source keys indexed on disk (``SourceKeys``: nulls and duplicates refused,
    resume looked up there, so memory stays flat whatever the source's size), the writers, then ``job(sinks, report)``
    run over ``src``; with ``engine`` (``engine_options``: a registered engine and its options) the same job with its
    encoding done there.

    ``targets``: (feature set, encoder, (encoder as asked for, its options)): the last says how a remote worker
    builds it.
    ``text``: the text column (a JSONL line's keys are read as the job reads them); None for images.
    """
    facts = None
    with SourceKeys(keys, src.description) as index:
        total = index.scan(src, text, limit)
        index.check_duplicates()
        if engine is not None:  # after the checks: a bad source is refused before a cluster starts
            options = dict(engine)
            remote = ENGINES[options.pop("engine")]
            recipes = [remote.recipe(asked, opts, store) for _, _, (asked, opts) in targets]
            job, facts = remote.wrap(job, recipes, progress=write_options.get("progress"), **options)

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
            sinks.append(Sink(writer, enc, spec_fingerprint(spec), keep))
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
    clash = [c for c in keep if c in keys or c in SYSTEM_COLUMNS or c.startswith(RESERVED)]
    if clash:
        raise ValidationError(
            f"Cannot keep column(s) {clash}: keys are stored anyway, and {list(SYSTEM_COLUMNS)} (and names "
            f"starting with {RESERVED!r}) are written by the store itself. Help: rename them in the source.")
    return keep


def _check_kept_columns(writer: Any, keep: list[str]) -> None:
    """A version holds the same columns in every partition: a rerun must keep what its first run kept."""
    m = writer.manifest
    if m is None or not m.columns:  # a new version: its first partition sets the layout
        return
    stored = [c for c in m.columns if c not in m.key and c not in SYSTEM_COLUMNS]
    if sorted(stored) != sorted(keep):
        raise ValidationError(
            f"Cannot append to {m.name!r} v{m.version} keeping {keep}: its partitions keep {stored}. The kept "
            "columns are part of a version's layout.\n  Help: keep the same columns, or write a new version "
            "(version='new', `--version new`).")


def default_chunk_rows(enc: Any) -> int:
    batch = getattr(enc, "batch_size", None) or 32
    return max(512, min(8192, batch * 64))


def check_source_keys(src: TableSource, keys: list[str], limit: int | None) -> int:
    """Null or duplicate keys in the source are an error before any model is loaded; returns the rows checked.

    The keys go through a DuckDB table on disk (``SourceKeys``), not a table in memory.
    """
    with SourceKeys(keys, src.description) as index:
        total = index.scan(src, None, limit)
        index.check_duplicates()
    return total


class Job:
    """One local pass over a text source: screened rows flow through the lead encoder's pass into the sinks.

    An engine drives the same job with its encoding done elsewhere, through :meth:`chunks` (screened rows that need
    encoding), the sinks, :meth:`advance` and :meth:`finish`; ``image`` says whether ``payload`` holds image
    references (``IMAGE``) or texts.

    Each sink takes the rows it lacks (its own content hash, so a set that is complete skips them while another set
    still gets them).
    """

    image = False

    def __init__(self, sinks: Sinks, keys: list[str], text: str, chunk_rows: int, report: Any,
                 keep: Sequence[str] = ()) -> None:
        self.sinks, self.keys, self.text, self.chunk_rows, self.report = sinks, keys, text, chunk_rows, report
        self.payload = text
        self.carry = [c for c in keep if c != text]  # kept columns other than the text, carried beside the keys
        self.screen = Screen(sinks.sinks, keys, text, self.carry)
        self.rows_read = 0
        self.done = 0

    def run(self, src: TableSource, limit: int | None) -> None:
        try:
            chunks = self.chunks(src, limit)
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
                self.advance(chunk.num_rows)
            self.finish()
        finally:
            self.sinks.close()

    def finish(self) -> None:
        """Commit what is pending, then the error rows still held."""
        self.sinks.flush(force=True)
        self.sinks.wait()
        self.sinks.record_errors(self.screen.errors())

    def advance(self, rows: int) -> None:
        self.done += rows
        self.report(self.done)

    def _source_batches(self, src: Any) -> Iterator[pa.RecordBatch]:
        """The source's batches as the screen takes them (an image job reads an ``ImageSource`` instead)."""
        binary = [self.text] if src.format == "csv" else []
        return src.batches([*self.keys, *self.carry, self.text], binary=binary, text=self.text)

    def chunks(self, src: TableSource, limit: int | None) -> Iterator[pa.Table]:
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
            self.advance(settled)
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

"""The batch embedding job: source -> (skip committed, set aside bad rows) -> encoder -> partitions -> commit.

Memory stays bounded whatever the input size: rows are read in batches, texts are encoded in chunks, and a partition
is committed as soon as it fills (the commit runs in a background thread while the next chunk is encoded). A rerun
skips every row whose (key, content_hash) is already committed, so a job killed at any moment and started again ends
with exactly the source's rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore import _format as fmt
from featurestore._featureset import key_tokens
from featurestore._names import validate_name
from featurestore.errors import ValidationError

from ._progress import ProgressCallback, progress_enabled, rich_progress
from .sources import TableSource, open_source
from .sources._tables import NON_STRING

ENCODER_OPTIONS = ("device", "batch_size", "max_batch_tokens", "max_seq_length", "normalize", "layer", "pooling", "dtype", "backend",
                   "precision", "allow_download")


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
    errors_by_reason: dict[str, int] = field(default_factory=dict)

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
          limit: int | None = None, **encoder_options: Any) -> EmbedResult:
    """Embed the ``text`` column of ``source`` with ``encoder`` into feature set ``name``, keyed by ``key``.

    ``source`` is a Parquet/CSV/JSONL file or folder, or an Arrow/pandas table. Encoder options (``device``,
    ``batch_size``, ``max_seq_length``, ``normalize``, ``layer``, ``pooling``, ``dtype``, ``backend``, ``precision``)
    go to the encoder. ``version="auto"`` appends to the version with the same encoder spec or starts a new one.
    """
    from featurestore.encoders import get_encoder

    unknown = sorted(set(encoder_options) - set(ENCODER_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for embed(). Valid encoder options: {list(ENCODER_OPTIONS)}")
    store = store if isinstance(store, featurestore.Store) else featurestore.open(store)
    validate_name(name)
    keys = [key] if isinstance(key, str) else list(key)
    if text in keys:
        raise ValidationError(f"The text column {text!r} cannot also be a key column.")
    src = open_source(source)
    src.check_columns([*keys, text])
    total = _check_source_keys(src, keys, limit)
    options = {k: v for k, v in encoder_options.items() if v is not None}
    enc = get_encoder(encoder, **options) if isinstance(encoder, str) else encoder
    spec = enc.spec()
    fingerprint = fmt.spec_fingerprint(spec)
    provenance = {**enc.provenance(), "source": src.description, "source_fingerprint": src.fingerprint()}
    chunk_rows = chunk_rows or _default_chunk_rows(enc)
    run_info = {"source": src.description, "encoder": spec.get("encoder")}
    t0 = time.perf_counter()
    with store.writer(name, key=keys, spec=spec, version=version, provenance=provenance,
                      lock_timeout=lock_timeout, run_info=run_info) as writer, \
            rich_progress(f"embed {name}", total, enabled=progress_enabled(progress)) as bar:
        def report(done: int) -> None:
            bar(done)
            if on_progress is not None:
                on_progress(done, total)

        job = _Job(writer, enc, keys, text, fingerprint, chunk_rows, partition_rows, report)
        job.run(src, limit)
        run = writer.finish("ok", rows_read=job.rows_read)
    return EmbedResult(name=name, version=writer.manifest.version if writer.manifest else None,
                       rows_read=job.rows_read, rows_written=run.get("rows_written", 0),
                       rows_skipped=run.get("rows_skipped", 0), rows_failed=run.get("rows_failed", 0),
                       seconds=time.perf_counter() - t0, run_id=writer.run_id, errors_by_reason=job.error_counts)


def _default_chunk_rows(enc: Any) -> int:
    batch = getattr(enc, "batch_size", None) or 32
    return max(512, min(8192, batch * 64))


def _check_source_keys(src: TableSource, keys: list[str], limit: int | None) -> int:
    """Null or duplicate keys in the source are an error before any model is loaded."""
    table = src.read_columns(keys)
    if limit is not None:
        table = table.slice(0, limit)
    try:
        fmt.check_keys(table, keys)
    except ValidationError as exc:
        raise ValidationError(f"Source {src.description}: {exc}") from None
    return table.num_rows


class _Job:
    """One run's moving parts; ``run`` is the loop, the rest are its steps."""

    def __init__(self, writer: featurestore.Writer, enc: Any, keys: list[str], text: str, fingerprint: str,
                 chunk_rows: int, partition_rows: int, report: Any) -> None:
        self.writer, self.enc, self.keys, self.text = writer, enc, keys, text
        self.fingerprint, self.chunk_rows, self.partition_rows, self.report = fingerprint, chunk_rows, partition_rows, report
        self.committed = writer.committed_hashes()
        self.rows_read = 0
        self.done = 0
        self.error_counts: dict[str, int] = {}
        self._errors: list[pa.Table] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featurestore-commit")
        self._inflight: Future | None = None

    def run(self, src: TableSource, limit: int | None) -> None:
        try:
            chunks = self._chunks(src, limit)
            meta: list[pa.Table] = []

            def texts() -> Iterator[list[str]]:
                for chunk in chunks:
                    meta.append(chunk)
                    yield chunk.column(self.text).to_pylist()

            for vectors in self.enc.encode_batches(texts()):
                chunk = meta.pop(0)
                self._add(chunk, vectors)
            self._flush(force=True)
            self._wait()
            if self._errors:
                self.writer.record_errors(pa.concat_tables(self._errors))
        finally:
            self._commits.shutdown(wait=True)

    def _chunks(self, src: TableSource, limit: int | None) -> Iterator[pa.Table]:
        """Batches of (keys, content_hash, text) that still need encoding, re-cut to ``chunk_rows``."""
        buf: list[pa.Table] = []
        rows = 0
        binary = [self.text] if src.format == "csv" else []
        for batch in src.batches([*self.keys, self.text], binary=binary):
            if limit is not None:
                if self.rows_read >= limit:
                    break
                batch = batch.slice(0, limit - self.rows_read)
            self.rows_read += batch.num_rows
            todo = self._screen(pa.Table.from_batches([batch]))
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

    def _screen(self, table: pa.Table) -> pa.Table:
        """Set aside bad rows, hash the good ones, drop those already committed; returns rows to encode."""
        texts, reasons = _clean_texts(table.column(self.text))
        bad = np.flatnonzero(reasons != None)  # noqa: E711 - object array comparison
        if len(bad):
            errs = table.select(self.keys).take(pa.array(bad))
            errs = errs.append_column("reason", pa.array(reasons[bad].tolist(), pa.string()))
            self._errors.append(errs)
            for r in reasons[bad].tolist():
                kind = r.split(":")[0]
                self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        good = np.flatnonzero(reasons == None)  # noqa: E711
        table = table.select(self.keys).take(pa.array(good))
        good_texts = [texts[i] for i in good.tolist()]
        hashes = fmt.text_hashes(good_texts, self.fingerprint)
        table = table.append_column(fmt.CONTENT_HASH, hashes).append_column(self.text, pa.array(good_texts, pa.string()))
        skipped = len(bad)
        if self.committed and table.num_rows:
            tokens = key_tokens(table, self.keys).to_pylist()
            keep = np.fromiter((self.committed.get(t) != h for t, h in zip(tokens, hashes.to_pylist())), bool, len(tokens))
            skipped += int((~keep).sum())
            self.writer.stats["rows_skipped"] += int((~keep).sum())
            table = table.filter(pa.array(keep))
        self.done += skipped
        self.report(self.done)
        return table

    def _add(self, chunk: pa.Table, vectors: np.ndarray) -> None:
        if vectors.shape[0] != chunk.num_rows:
            raise RuntimeError(f"The encoder returned {vectors.shape[0]} vectors for {chunk.num_rows} texts.")
        part = chunk.drop_columns([self.text]).append_column(fmt.EMBEDDING, fmt.fixed_size_list(vectors))
        self._pending.append(part)
        self._pending_rows += part.num_rows
        self.done += part.num_rows
        self._flush(force=False)
        self.report(self.done)

    def _flush(self, *, force: bool) -> None:
        if not self._pending or (not force and self._pending_rows < self.partition_rows):
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self._wait()  # at most one commit in flight: bounded memory, ordered partitions
        self._inflight = self._commits.submit(self.writer.append, table)

    def _wait(self) -> None:
        if self._inflight is not None:
            self._inflight.result()
            self._inflight = None


def _clean_texts(column: pa.ChunkedArray) -> tuple[list[Any], np.ndarray]:
    """Texts as Python strings plus a reason per row (None when the row is fine)."""
    typ = column.type
    values = column.to_pylist()
    reasons = np.full(len(values), None, dtype=object)
    is_binary = pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    for i, v in enumerate(values):
        if v is None:
            reasons[i] = "null: the text is null"
        elif is_binary:
            try:
                v = values[i] = v.decode("utf-8")
            except UnicodeDecodeError as exc:
                reasons[i] = f"undecodable: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                continue
        elif not is_text:
            reasons[i] = f"non-string: a {typ} value, not text"
            continue
        if reasons[i] is None:
            if v.startswith(NON_STRING):
                reasons[i] = f"non-string: a {v[len(NON_STRING):]} value, not text"
            elif not v.strip():
                reasons[i] = "empty: the text is empty or only whitespace"
    return values, reasons

"""Image embedding jobs: image source -> screen (hash each file, skip committed, set aside bad rows) -> decode and
preprocess in DataLoader worker processes -> the encoder's forward pass -> the same sinks, runs and errors as text.

The main process reads each image's bytes once to hash them (the content hash is the bytes under the encoder spec,
so a changed file is embedded again and an unchanged one skipped), and hands the workers references (paths, or the
bytes a table holds), never decoded pixels. Workers run ``load_image`` and the encoder's ``preprocess`` and return
each image's tensor or the reason it failed, so a corrupt, truncated, missing or oversized image becomes an error row
(kind ``bad-image``, message ``<path>: <reason>``) and the job goes on. Batches come back in order (the DataLoader is
in-order), so rows, partitions and resume are deterministic; while the model runs on one batch the workers decode the
next ones.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
import pipelines.embedding._job as job  # the frame every embedding job shares
from featurestore.encoders.image import read_image_bytes
from featurestore.errors import ImageDecodeError, ValidationError
from featurestore.storage import text_hashes
from featurestore.utils import ProgressCallback
from pipelines.embedding._screen import Screen, settle_rows
from pipelines.embedding._sinks import Sinks
from pipelines.sources._errors import ERROR_KIND, ERROR_MESSAGE
from pipelines.sources._images import IMAGE, WHERE, ImageSource, open_images

#: the error kind of an image that cannot be read or decoded; the message is ``<path>: <reason>``
BAD_IMAGE = "bad-image"
#: options of the image job itself (the rest go to the encoder)
JOB_OPTIONS = ("num_workers", "batch_size")


def embed_images(store: featurestore.Store | str | os.PathLike[str], source: Any, *, name: str,
                 encoder: str | Any = "torchvision:mobilenet_v2", key: str | Sequence[str] | None = None,
                 image: str | None = None, label: str | None = "label", layers: Sequence[str | None] | None = None,
                 keep: Sequence[str] = (), version: int | str = "auto", num_workers: int | None = None,
                 batch_size: int | None = None, partition_rows: int = 10_000, progress: bool | None = None,
                 on_progress: ProgressCallback | None = None, lock_timeout: float = 60.0, limit: int | None = None,
                 engine: str = "local", address: str | None = None, num_gpus_per_worker: float | None = None,
                 concurrency: int | None = None, staging: str | None = None,
                 **encoder_options: Any) -> list[job.EmbedResult]:
    """Embed images into feature set ``name``: one result per set written (one, or one per entry of ``layers``).

    ``source`` is a folder (every image file below it, keyed by its relative path ``cats/001.jpg``, its first-level
    sub-folder stored as the ``label`` column), a glob pattern (``"photos/**/*.jpg"``, keyed by the path under the
    pattern's fixed folder), or a table (Parquet/CSV/JSONL file or folder, Arrow/pandas table) whose ``image``
    column holds paths (relative to the table's folder) or the images' bytes, keyed by ``key`` (default ``id``).
    An ``ImageSource`` object gives the finer options (``root``, ``extensions``, ``path_column``).

    ``layers``: stages of the model (``"features.6"``; ``None`` for the model's own output), each written to
    ``<name>_<stage>`` (``None`` to ``name``) from one forward pass, as ``embed_layers`` does for text.
    ``num_workers``: decoding processes (default ``min(4, cores - 1)``; 0 decodes in this process).
    ``batch_size``: images per forward pass (default: the encoder's). Other keyword options (``device``,
    ``precision``, ``normalize``, ``pooling``, ``dtype``, ``max_pixels``...) go to the encoder when it is given by
    name. Resume, error rows, progress and run records work as for text: a rerun embeds only new or changed images.
    ``engine="ray"`` and its options as for ``embed``: the actors decode, preprocess and encode (so image paths must
    be readable where the actors run: one node, or a shared mount); ``num_workers`` is then unused.
    """
    engine_spec = job.engine_options(engine, address=address, num_gpus_per_worker=num_gpus_per_worker,
                                  concurrency=concurrency, staging=staging)
    src = open_images(source, image=image, label=label) if not isinstance(source, ImageSource) else source
    if isinstance(source, ImageSource) and (image is not None or label != "label"):
        raise ValidationError("image= and label= configure a new source; an ImageSource object comes configured.")
    _check_workers(num_workers)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValidationError(f"The 'batch_size' parameter of embed_images must be a positive int or None. Got "
                              f"{batch_size!r} instead.")
    targets = _targets(name, encoder, layers, encoder_options, store)
    if src.kind == "table":
        key = "id" if key is None else key
    else:
        key = src.path_column if key is None else key
        if key not in (src.path_column, [src.path_column]):
            raise ValidationError(f"An image {src.kind} is keyed by its relative paths, the column "
                                  f"{src.path_column!r}. Got key={key!r}.")
        if src.label is not None and src.label not in keep:
            keep = [src.label, *keep]
    store, keys, keep = job.check_job(store, targets, key, {"image": src.image}, keep)
    src.check_columns([*keys, *keep])
    step = batch_size or targets[0][1].default_batch_size()
    workers = default_workers() if num_workers is None else num_workers
    return job.run_indexed(store, src, targets, keys=keys, keep=keep, text=None, limit=limit, version=version,
                       partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                       lock_timeout=lock_timeout, engine=engine_spec,
                       job=lambda sinks, report: ImageJob(sinks, keys, keep, report, step, workers))


def default_workers() -> int:
    """Decoding processes when none is given: one core stays for the model and the writer; at most 4.

    Measured only on 2 cores (1 worker, see ``benchmarks/bench_embed_images.py --workers 0,1,3``): there the model is
    the bottleneck and one worker keeps it fed; the cap of 4 is untested guesswork for larger machines.
    """
    from featurestore.encoders.runtime import cpu_threads

    return max(0, min(4, cpu_threads() - 1))


def stage_name(name: str, stage: str) -> str:
    """``photos`` + stage ``features.6`` -> ``photos_features_6``: a feature set name is an SQL identifier."""
    return f"{name}_{re.sub(r'[^0-9A-Za-z_]+', '_', str(stage)).strip('_')}"


def parse_stage(value: Any) -> str | None:
    """A stage as written in a flag or a spec: a module name (``features.6``), or ``"model"`` (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == job.MODEL_OUTPUT):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"A stage of an image model is a module name such as 'features.6', or {job.MODEL_OUTPUT!r} "
                         f"(the model's own output). Got {value!r} instead.")
    return value.strip()


def image_job_options() -> tuple[str, ...]:
    """What a job spec's ``[options]`` may hold for images: the image encoders' options and the job's own."""
    from featurestore.encoders.image import IMAGE_OPTIONS

    return (*IMAGE_OPTIONS, *(o for o in JOB_OPTIONS if o not in IMAGE_OPTIONS))


def run_image_job(spec: Any, **overrides: Any) -> list[job.EmbedResult]:
    """A ``JobSpec`` with ``images`` or ``image`` (see ``_spec``): its image job, every stage in one pass."""
    from pipelines.sources import TableSource

    label = spec.label if isinstance(spec.label, str) else None  # `label = false` in a spec: no label column
    source: Any = spec.source
    if spec.image is not None and spec.key_types:
        source = ImageSource(TableSource(spec.source, key_types=spec.key_types), image=spec.image)
    options = {**spec.options, **overrides}
    stages = [parse_stage(s) for s in spec.layers]
    if len(stages) == 1:  # one stage keeps the name the user gave
        options["layer"], stages = stages[0], []
    return embed_images(spec.store, source, name=spec.name, encoder=spec.encoder,
                        key=None if spec.images and spec.key == ["id"] else spec.key,
                        image=None if isinstance(source, ImageSource) else spec.image,
                        label=label if not isinstance(source, ImageSource) else "label",
                        layers=stages or None, keep=spec.keep, version=spec.version, limit=spec.limit, **options)


def _check_workers(num_workers: Any) -> None:
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 0):
        raise ValidationError(f"The 'num_workers' parameter of embed_images must be an int >= 0 or None. Got "
                              f"{num_workers!r} instead.")


def _targets(name: str, encoder: str | Any, layers: Sequence[str | None] | None, options: dict[str, Any],
             store: Any) -> list[tuple[str, Any, Any]]:
    """(feature set, encoder, (encoder as asked for, options)): one, or one per stage of one model; every encoder must
    embed images."""
    if layers is None:
        targets = [(name, job.build_encoder(encoder, options, store), (encoder, options))]
    else:
        stages = job.check_layers("embed_images", encoder, options, layers, "torchvision:mobilenet_v2")
        asked = [(name if s is None else stage_name(name, s), options if s is None else {**options, "layer": s})
                 for s in stages]
        targets = [(set_name, job.build_encoder(encoder, o, store), (encoder, o)) for set_name, o in asked]
    for _, enc, _ in targets:
        if getattr(enc, "modality", "text") != "image":
            raise ValidationError(f"The encoder {getattr(enc, 'name', enc)!r} embeds {enc.modality}, not images. "
                                  "Help: use an image encoder such as 'torchvision:mobilenet_v2' or "
                                  "'open_clip:<arch>/<weights>'.")
    lead = targets[0][1]
    others = [e for _, e, _ in targets[1:] if not lead.shares_preprocess(e)]
    if others:
        raise ValidationError(f"The stages of one pass must share the model's preprocessing; {others[0]!r} does not. "
                              "Help: run a job per encoder.")
    return targets


class ImageScreen(Screen):
    """The text screen's bookkeeping (error rows, skips, hash and "needs it" columns) over image references.

    Each good row's bytes are read here, once, to hash them; a file that cannot be read is an error row at once.
    """

    def __call__(self, table: pa.Table, start: int | None = None) -> tuple[pa.Table, int]:
        """(rows to decode: keys, kept columns, hash and need columns, ``IMAGE``, ``WHERE``; rows settled here).

        ``start``: the batch's first row number in the source (how committed hashes are looked up, see ``Screen``).
        """
        kinds = np.array(table.column(ERROR_KIND).to_pylist(), dtype=object)
        messages = np.array(table.column(ERROR_MESSAGE).to_pylist(), dtype=object)
        refs, where = table.column(IMAGE).to_pylist(), table.column(WHERE).to_pylist()
        hashes: list[list[str]] = [[] for _ in self.sinks]

        def check(i: int, ref: Any) -> tuple[str, str] | None:
            try:
                data = read_image_bytes(ref) if isinstance(ref, str) else ref
            except ImageDecodeError as exc:
                return BAD_IMAGE, f"{where[i]}: {exc.reason}"
            for j, sink in enumerate(self.sinks):  # one definition of a content hash: text_hashes, over the bytes
                hashes[j].append(text_hashes([data], sink.fingerprint)[0].as_py())
            return None

        settle_rows(refs, kinds, messages, "no image: the path or bytes are null or empty", check)
        bad = self.set_aside(table, kinds, messages)
        good = np.flatnonzero(kinds == None)  # noqa: E711 - object array comparison
        numbers = None if start is None else good + start
        rows = table.select([*self.keys, *self.carry]).take(pa.array(good))
        rows, needed = self.mark(rows, [pa.array(h, pa.string()) for h in hashes], numbers)
        rows = rows.append_column(IMAGE, table.column(IMAGE).take(pa.array(good)))
        rows = rows.append_column(WHERE, table.column(WHERE).take(pa.array(good)))
        return rows.filter(pa.array(needed)), bad + int((~needed).sum())

    def set_aside_failed(self, chunk: pa.Table, reasons: Sequence[str | None]) -> None:
        """Rows of an encoded chunk whose image did not decode: error rows ``<where>: <reason>``."""
        where = chunk.column(WHERE).to_pylist()
        kinds = np.array([None if r is None else BAD_IMAGE for r in reasons], dtype=object)
        messages = np.array([None if r is None else f"{w}: {r}" for r, w in zip(reasons, where)], dtype=object)
        self.set_aside(chunk, kinds, messages)


class ImageJob(job.Job):
    """One pass over an image source: screened rows go to the DataLoader, vectors to the sinks, in source order.

    The text job's reading and re-cutting (``Job.chunks``) with an image screen; ``chunk_rows`` is the batch size.
    """

    def __init__(self, sinks: Sinks, keys: list[str], keep: Sequence[str], report: Callable[[int], None],
                 batch_size: int, num_workers: int = 0) -> None:
        super().__init__(sinks, keys, IMAGE, batch_size, report, keep)
        self.screen = ImageScreen(sinks.sinks, keys, IMAGE, self.carry)
        self.image = True
        self.num_workers = num_workers

    def _source_batches(self, src: ImageSource) -> Iterator[pa.RecordBatch]:
        return src.batches([*self.keys, *self.carry])

    def run(self, src: ImageSource, limit: int | None) -> None:  # type: ignore[override]
        lead, *others = [sink.encoder for sink in self.sinks.sinks]
        num_workers = self.num_workers
        pending: deque[pa.Table] = deque()  # the chunks handed to the loader, waiting for their pixels
        batches = None
        try:
            batches = iter(decode_loader(_Feed(self.chunks(src, limit), pending), lead.preprocess,
                                         max_pixels=lead.max_pixels, num_workers=num_workers,
                                         pin_memory=str(lead.plan().device).startswith("cuda")))
            for pixels, reasons in batches:
                chunk = pending.popleft()
                ok = np.array([r is None for r in reasons], dtype=bool)
                if not ok.all():
                    self.screen.set_aside_failed(chunk, reasons)
                    chunk = chunk.filter(pa.array(ok))
                if chunk.num_rows:
                    self.sinks.add(chunk, encode_pixels(lead, others, pixels))
                self.advance(len(reasons))
                self._store_errors(force=False)
            self.sinks.flush(force=True)
            self.sinks.wait()
            self._store_errors(force=True)
        finally:
            del batches  # stops the worker processes
            self.sinks.close()

    def _store_errors(self, *, force: bool) -> None:
        """Error rows are stored as they fill a partition (and at the end), never all held, as for text."""
        if force or self.screen.error_rows >= self.sinks.partition_rows:
            self.sinks.record_errors(self.screen.take_errors())


# -- decoding in worker processes ---------------------------------------------------------------------------------


class _Feed:
    """The loader's batch sampler: each chunk's image references, the chunk itself kept in ``pending`` (in order).

    The DataLoader draws from it in the main process as workers free up, so reading and hashing stay a few batches
    ahead of decoding, and decoding a few batches ahead of the model.
    """

    def __init__(self, chunks: Iterable[pa.Table], pending: deque[pa.Table]) -> None:
        self.chunks, self.pending = chunks, pending

    def __iter__(self) -> Iterator[list[Any]]:
        for chunk in self.chunks:
            self.pending.append(chunk)
            yield chunk.column(IMAGE).to_pylist()


class _Decode:
    """What a worker does with a batch of references: ``load_image`` + the encoder's ``preprocess`` for each.

    A failure is returned as its reason, never raised, so one bad image cannot stop the job.
    """

    def __init__(self, preprocess: Callable[[Any], Any], max_pixels: int) -> None:
        self.preprocess, self.max_pixels = preprocess, max_pixels

    def __getitems__(self, payloads: list[Any]) -> list[tuple[Any, str | None]]:
        return [self[payload] for payload in payloads]

    def __getitem__(self, payload: Any) -> tuple[Any, str | None]:
        """(pixels, None), or (None, why not) for a path or the image's bytes."""
        from featurestore.encoders.image import load_image

        try:
            image = load_image(payload, max_pixels=self.max_pixels)
        except ImageDecodeError as exc:
            return None, exc.reason
        except Exception as exc:  # noqa: BLE001 - a decoder library's own bug on an odd file must not stop the job
            return None, f"cannot decode ({type(exc).__name__}: {exc})"
        try:
            return self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001 - the model's transforms may raise anything on an odd image
            return None, f"preprocessing failed ({type(exc).__name__}: {exc})"


def encode_pixels(lead: Any, others: Sequence[Any], pixels: Any) -> list[np.ndarray]:
    """One block of vectors per target for a decoded batch: the lead's pass, shared with the other stages if any."""
    return lead.encode_pixels_with(others, pixels) if others else [lead.encode_pixels(pixels)]


def decode_batch(payloads: list[Any], preprocess: Callable[[Any], Any], max_pixels: int) -> tuple[Any, list[str | None]]:
    """Decode and preprocess a batch here, in this process (a Ray actor): the pixels of the images that decoded and
    each payload's failure reason, as a loader batch."""
    return _collate(_Decode(preprocess, max_pixels).__getitems__(payloads))


def _collate(items: list[tuple[Any, str | None]]) -> tuple[Any, list[str | None]]:
    """One ``(n_ok, C, H, W)`` tensor of the images that decoded, and each item's failure reason (None: decoded).

    The batch is laid out channels-last (NHWC), in the worker: oneDNN's convolutions take it without reordering,
    which ran MobileNetV2's forward pass 1.7x faster than the default NCHW batch (14.0 vs 8.2 img/s, 2 shared AMD
    EPYC cores, benchmarks/bench_embed_images.py; the same vectors, cos to the NCHW loop 1.000000). Models that are
    not convolutional read it as any other tensor.
    """
    import torch

    tensors = [t for t, reason in items if reason is None]
    pixels = torch.stack(tensors) if tensors else torch.empty((0,))
    if pixels.ndim == 4:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    return pixels, [reason for _, reason in items]


def decode_loader(feed: Iterable[list[Any]], preprocess: Callable[[Any], Any], *, max_pixels: int,
                  num_workers: int, pin_memory: bool) -> Any:
    """A DataLoader over ``feed`` (batches of paths or bytes) giving (pixels, reasons) per batch, in order.

    A job draws one iterator from it, so its workers live for the whole job (``persistent_workers`` would only keep
    them across iterators); ``prefetch_factor`` 2 keeps two batches per worker decoded ahead of the model.
    """
    from torch.utils.data import DataLoader

    return DataLoader(_Decode(preprocess, max_pixels), batch_sampler=feed, collate_fn=_collate,  # type: ignore[arg-type]
                      num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=2 if num_workers else None)

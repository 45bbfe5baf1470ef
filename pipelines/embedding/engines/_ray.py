"""The batch embedding job on Ray Data: the encoder runs as a pool of actors, the driver screens and commits.

The driver does what the local engine does before and after the model: the same checks, the same key index
(``_source_keys``), the same screen (error rows; rows whose (key, content_hash) is committed are skipped), the same
sinks and writer (partitions, manifest, provenance, runs). Only the encoding moves out:

1. the driver streams the screened rows that need encoding into a staging folder of Parquet files (one per chunk),
   on any pyarrow filesystem (a local temp folder by default; on a multi-node cluster a path every node can read,
   ``s3://bucket/tmp`` or a shared mount, given as ``staging=``), a window of ``WINDOW_ROWS`` rows at a time;
2. Ray Data reads them (``read_parquet``) and runs ``map_batches`` with an actor class: each actor builds the encoder
   once (one model load per actor; ``num_gpus`` per actor where there are GPUs); actors that die are restarted and
   their batches retried;
3. batches stream back to the driver (``iter_batches``), which commits them through the sinks as they come; then
   the window's files are deleted and the next window is staged.

So resume and idempotence are the local engine's: a killed worker's batch is retried by Ray, a killed driver leaves
whole partitions only, and a rerun encodes only what is missing. Memory stays flat on the driver (the key index is on
disk, the staging is streamed) and on each actor (one batch at a time). Ray is imported here only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

import featurestore
from featurestore.errors import ValidationError
from featurestore.storage import fixed_size_list, to_matrix
from featurestore.utils import import_optional, library_version
from pipelines.embedding._job import Engine, Job, register_engine
from pipelines.embedding._scratch import scratch_dir
from pipelines.embedding._sinks import Sinks
from pipelines.sources._errors import RESERVED

#: an image that did not decode in an actor: why (null when it did)
FAILED = RESERVED + "failed"


def vectors_column(target: int) -> str:
    """The column target ``target``'s vectors travel back from the actors in."""
    return f"{RESERVED}vectors_{target}"


#: rows staged and encoded per Ray Data execution. Ray Data (2.60) does not hold its actors back when the driver
#: consumes their output more slowly than they make it (an instant encoder, a fast GPU): the whole job's vectors then
#: waited in the object store (300k rows of 384 floats: +635 MB on the driver, +643 MB on the actor, from 30k rows).
#: A window bounds that at ~100 MB of float32 vectors at 384 dims; each window starts the actor pool again (one
#: model load per actor per window, small beside encoding 65k rows).
WINDOW_ROWS = 65_536


def ray_job(local: Callable[[Sinks, Callable[[int], None]], Job], recipes: Sequence[Any], *,
            address: str | None = None, num_gpus_per_worker: float | None = None, concurrency: int | None = None,
            staging: str | None = None, progress: bool | None = None
            ) -> tuple[Callable[[Sinks, Callable[[int], None]], "RayEncoding"], dict[str, Any]]:
    """``engine="ray"`` for any embedding job: (a factory of jobs that encode on Ray, the facts kept in provenance).

    ``local`` makes the local job (text or image: its screen, chunking and sinks); ``recipes`` say how an actor
    builds each target's encoder (see :func:`recipe`). Joins or starts the cluster now, before any row is read.
    """
    ray = check_ray_options(num_gpus_per_worker, concurrency)
    _connect(ray, address)
    facts = {"engine": "ray", "ray_version": library_version("ray") or ray.__version__}

    def make(sinks: Sinks, report: Callable[[int], None]) -> RayEncoding:
        return RayEncoding(local(sinks, report), list(recipes), staging=staging, num_gpus=num_gpus_per_worker or 0,
                           concurrency=concurrency, progress=progress)

    return make, facts


def recipe(encoder: str | Any, options: dict[str, Any], store: featurestore.Store) -> Any:
    """How an actor builds an encoder: by name (each actor loads its own model), or the object itself, pickled."""
    if isinstance(encoder, str):
        return encoder, {k: v for k, v in options.items() if v is not None}, str(store.root)
    return encoder


def check_ray_options(num_gpus: float | None, concurrency: int | None) -> Any:
    """Ray itself (the ``ray`` extra), once the options are known to be valid: both checked before any work."""
    if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0):
        raise ValidationError(f"The 'num_gpus_per_worker' parameter of embed must be a number >= 0. Got "
                              f"{num_gpus!r} instead.")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValidationError(f"The 'concurrency' parameter of embed must be an int >= 1. Got {concurrency!r} "
                              "instead.")
    return import_optional("ray", extra="ray", what="The Ray engine (engine='ray')")


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (``ray://host:10001``, ``auto``), else the one already started, else a local one."""
    if ray.is_initialized():
        return
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)


class RayEncoding:
    """A local job (its screen, chunks, sinks and error rows) whose encoding is done by Ray Data actors on staged
    Parquet, a window at a time."""

    def __init__(self, job: Job, recipes: list[Any], *, staging: str | None, num_gpus: float,
                 concurrency: int | None, progress: bool | None) -> None:
        self.job, self.recipes, self.staging, self.num_gpus = job, recipes, staging, num_gpus
        self.concurrency, self.progress = concurrency, progress
        self.image = job.image
        self._staged = 0  # chunk files written so far (their numbers)

    @property
    def rows_read(self) -> int:
        return self.job.rows_read

    @property
    def screen(self) -> Any:
        return self.job.screen

    def run(self, src: Any, limit: int | None) -> None:
        fs, folder, owned = _staging(self.staging)
        job = self.job
        try:
            chunks = job.chunks(src, limit)
            while files := self._stage(chunks, fs, folder):  # one window at a time, see WINDOW_ROWS
                for batch in self._encoded(fs, files):
                    self._commit(batch)
                for path in files:
                    fs.delete_file(path)
            job.finish()
        finally:
            job.sinks.close()
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                fs.delete_dir_contents(folder, missing_dir_ok=True)
                fs.delete_dir(folder)

    def _commit(self, batch: pa.Table) -> None:
        """An encoded batch to the sinks; an image that did not decode in an actor becomes an error row."""
        job, rows = self.job, batch.num_rows
        outputs = [vectors_column(i) for i in range(len(self.recipes))] + ([FAILED] if self.image else [])
        if self.image:
            reasons = batch.column(FAILED).to_pylist()
            ok = np.array([r is None for r in reasons], dtype=bool)
            if not ok.all():
                job.screen.set_aside_failed(batch, reasons)
                batch = batch.filter(pa.array(ok))
                if job.screen.error_rows >= job.sinks.partition_rows:
                    job.sinks.record_errors(job.screen.take_errors())
        if batch.num_rows:
            vectors = [batch.column(c) for c in outputs[:len(self.recipes)]]
            job.sinks.add(batch.drop_columns(outputs), [to_matrix(v, v.type.list_size) for v in vectors])
        job.advance(rows)

    def _stage(self, chunks: Iterator[pa.Table], fs: Any, folder: str) -> list[str]:
        """Write the next window of screened rows that need encoding to ``folder`` (one Parquet file per chunk, at
        least one chunk, up to ``WINDOW_ROWS`` rows); their paths, none when the source is done."""
        import pyarrow.parquet as pq

        files: list[str] = []
        rows = 0
        while rows < WINDOW_ROWS and (chunk := next(chunks, None)) is not None:
            path = f"{folder}/chunk-{self._staged:06d}.parquet"
            pq.write_table(chunk, path, filesystem=fs, compression="zstd")
            files.append(path)
            self._staged += 1
            rows += chunk.num_rows
        return files

    def _encoded(self, fs: Any, files: list[str]):
        """The staged rows with each target's vectors appended, as Arrow tables, in whatever order the actors finish."""
        import ray

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = bool(self.progress)
        context.execution_options.preserve_order = False
        gpus = self.num_gpus
        concurrency = self.concurrency or _default_concurrency(gpus)
        # Ray pins a 1-CPU actor to one math thread (OMP_NUM_THREADS=1): a CPU encoder then used one core of two
        # (156 rows/s vs 416 locally, MiniLM on 2 cores). Its node's cores are shared among the actors instead.
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // concurrency)
        # One block per staged file (a chunk): left alone, Ray reads small files together into one block, and an
        # actor returns a whole block's vectors at once, so results would come back in bursts as large as the job.
        ds = ray.data.read_parquet(files, filesystem=fs, override_num_blocks=len(files))
        # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1, max_task_retries=-1).
        payload = self.job.payload
        ds = ds.map_batches(_EncodeActor, fn_constructor_kwargs={"recipes": self.recipes, "payload": payload,
                                                                 "image": self.image},
                            batch_format="pyarrow", batch_size=self.job.chunk_rows,  # Ray merges small files
                            compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_gpus=gpus or None, num_cpus=None if gpus else 1,
                            runtime_env=None if gpus else {"env_vars": {"OMP_NUM_THREADS": str(threads)}})
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=self.job.chunk_rows, prefetch_batches=1)


def _default_concurrency(gpus: float) -> int:
    """One actor per GPU share when GPUs are asked for, else one per node (a CPU encoder uses every core)."""
    import ray

    if gpus:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus))
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


class _EncodeActor:
    """A Ray Data actor: builds the targets' encoders once (a model loads on the first batch), then appends each
    target's vectors to every batch it is given (of an image job: decoded and preprocessed here, in the actor; an
    image that does not decode gets its reason in ``FAILED`` and zero vectors, which the driver drops)."""

    def __init__(self, recipes: list[Any], payload: str, image: bool) -> None:
        from featurestore.encoders import get_encoder

        self.encoders = [get_encoder(r[0], store=r[2], **r[1]) if isinstance(r, tuple) else r for r in recipes]
        self.payload, self.image = payload, image

    def __call__(self, batch: pa.Table) -> pa.Table:
        lead, *others = self.encoders
        values = batch.column(self.payload).to_pylist()
        if not self.image:
            blocks = next(iter(lead.encode_batches_with(others, [values])))
            for i, block in enumerate(blocks):
                batch = batch.append_column(vectors_column(i), fixed_size_list(block))
            return batch
        from pipelines.embedding._images import decode_batch, encode_pixels

        pixels, reasons = decode_batch(values, lead.preprocess, lead.max_pixels)
        ok = np.flatnonzero([r is None for r in reasons])
        blocks = encode_pixels(lead, others, pixels) if len(ok) else [None] * len(self.encoders)
        for i, (encoder, block) in enumerate(zip(self.encoders, blocks)):
            # zeros where the image did not decode: the driver drops those rows (FAILED says why)
            dtype = block.dtype if block is not None else np.dtype(encoder.spec().get("dtype", "float32"))
            full = np.zeros((len(values), encoder.dim if block is None else block.shape[1]), dtype)
            if block is not None:
                full[ok] = block
            batch = batch.append_column(vectors_column(i), fixed_size_list(full))
        return batch.append_column(FAILED, pa.array(reasons, pa.string()))


def _staging(staging: str | None) -> tuple[Any, str, bool]:
    """(filesystem, folder, whether we made it locally): a fresh folder under ``staging`` (any pyarrow filesystem
    URI or local path), or a local temporary one."""
    from pyarrow import fs as pafs

    if staging is None:
        folder = str(scratch_dir("ray"))
        return pafs.LocalFileSystem(), folder, True
    filesystem, base = pafs.FileSystem.from_uri(staging) if "://" in staging else \
        (pafs.LocalFileSystem(), os.path.abspath(staging))
    folder = f"{base.rstrip('/')}/featurestore-ray-{uuid.uuid4().hex[:12]}"
    filesystem.create_dir(folder, recursive=True)
    return filesystem, folder, False


def _check(*, address: str | None = None, num_gpus_per_worker: float | None = None, concurrency: int | None = None,
           staging: str | None = None) -> None:
    check_ray_options(num_gpus_per_worker, concurrency)


register_engine("ray", Engine(check=_check, wrap=ray_job, recipe=recipe))

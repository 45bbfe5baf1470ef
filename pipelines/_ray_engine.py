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
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

import featurestore
from featurestore import _format as fmt
from featurestore._optional import import_optional, library_version
from featurestore._progress import ProgressCallback
from featurestore.errors import ValidationError

from ._runner import EmbedResult, _build_encoder, _default_chunk_rows, _Job, check_job, write_targets
from ._sinks import Sinks
from ._source_keys import SourceKeys
from .sources import open_source
from .sources._errors import RESERVED

#: the vectors travel back from the actors in this column
VECTORS = RESERVED + "vectors"
#: rows staged and encoded per Ray Data execution. Ray Data (2.60) does not hold its actors back when the driver
#: consumes their output more slowly than they make it (an instant encoder, a fast GPU): the whole job's vectors then
#: waited in the object store (300k rows of 384 floats: +635 MB on the driver, +643 MB on the actor, from 30k rows).
#: A window bounds that at ~100 MB of float32 vectors at 384 dims; each window starts the actor pool again (one
#: model load per actor per window, small beside encoding 65k rows).
WINDOW_ROWS = 65_536


def embed_ray(store: featurestore.Store | str | os.PathLike[str], source: Any, *, name: str, encoder: str | Any,
              encoder_options: dict[str, Any], key: str | Sequence[str], text: str, version: int | str,
              chunk_rows: int | None, partition_rows: int, progress: bool | None,
              on_progress: ProgressCallback | None, lock_timeout: float, limit: int | None, keep: Sequence[str],
              address: str | None = None, num_gpus_per_worker: float | None = None, concurrency: int | None = None,
              staging: str | None = None) -> EmbedResult:
    """``pipelines.embed(..., engine="ray")``: see the module docstring and ``embed`` for the arguments."""
    ray = import_optional("ray", extra="ray", what="The Ray engine (engine='ray')")
    _check_ray_options(num_gpus_per_worker, concurrency)
    lead = _build_encoder(encoder, encoder_options, store)
    store, keys, keep = check_job(store, [(name, lead)], key, {"text": text}, keep)
    recipe = (encoder, {k: v for k, v in encoder_options.items() if v is not None}, str(store.root)) \
        if isinstance(encoder, str) else lead  # by name: each actor builds its own; an object travels pickled
    src = open_source(source)
    src.check_columns([*keys, text, *keep])
    chunk_rows = chunk_rows or _default_chunk_rows(lead)
    with SourceKeys(keys, src.description) as index:
        total = index.scan(src, text, limit)
        index.check_duplicates()
        _connect(ray, address)
        facts = {"engine": "ray", "ray_version": library_version("ray") or ray.__version__}

        def work(sinks: Sinks, report: Callable[[int], None]) -> tuple[int, dict[str, int]]:
            for sink in sinks.sinks:
                sink.attach(index.committed(sink.writer))
            if not any(sink.committed for sink in sinks.sinks):
                index.close()  # nothing to look up: DuckDB's buffers (up to its cap) are not kept through the job
            job = _RayJob(sinks, keys, text, chunk_rows, report, keep, recipe=recipe, staging=staging,
                          num_gpus=num_gpus_per_worker or 0, concurrency=concurrency, progress=progress)
            job.run(src, limit)
            return job.rows_read, job.screen.error_counts

        return write_targets(store, src, [(name, lead)], keys=keys, keep=keep, version=version,
                             partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                             lock_timeout=lock_timeout, total=total, work=work, facts=facts)[0]


def _check_ray_options(num_gpus: float | None, concurrency: int | None) -> None:
    if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0):
        raise ValidationError(f"The 'num_gpus_per_worker' parameter of embed must be a number >= 0. Got "
                              f"{num_gpus!r} instead.")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValidationError(f"The 'concurrency' parameter of embed must be an int >= 1. Got {concurrency!r} "
                              "instead.")


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (``ray://host:10001``, ``auto``), else the one already started, else a local one."""
    if ray.is_initialized():
        return
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)


class _RayJob(_Job):
    """The local job's screen and sinks, with the encoding done by Ray Data actors on staged Parquet."""

    def __init__(self, sinks: Sinks, keys: list[str], text: str, chunk_rows: int, report: Any,
                 keep: Sequence[str], *, recipe: Any, staging: str | None, num_gpus: float,
                 concurrency: int | None, progress: bool | None) -> None:
        super().__init__(sinks, keys, text, chunk_rows, report, keep)
        self._staged = 0  # chunk files written so far (their numbers)
        self.recipe, self.staging, self.num_gpus = recipe, staging, num_gpus
        self.concurrency, self.progress = concurrency, progress

    def run(self, src: Any, limit: int | None) -> None:
        fs, folder, owned = _staging(self.staging)
        try:
            chunks = self._chunks(src, limit)
            while files := self._stage(chunks, fs, folder):  # one window at a time, see WINDOW_ROWS
                for batch in self._encoded(fs, files):
                    column = batch.column(VECTORS)
                    self.sinks.add(batch.drop_columns([VECTORS]), [fmt.to_matrix(column, column.type.list_size)])
                    self._advance(batch.num_rows)
                for path in files:
                    fs.delete_file(path)
            self._finish()
        finally:
            self.sinks.close()
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                fs.delete_dir_contents(folder, missing_dir_ok=True)
                fs.delete_dir(folder)

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
        """The staged rows with each sink's vectors appended, as Arrow tables, in whatever order the actors finish."""
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
        ds = ds.map_batches(_EncodeActor, fn_constructor_kwargs={"recipe": self.recipe, "text": self.text},
                            batch_format="pyarrow", batch_size=self.chunk_rows,  # Ray merges small files
                            compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_gpus=gpus or None, num_cpus=None if gpus else 1,
                            runtime_env=None if gpus else {"env_vars": {"OMP_NUM_THREADS": str(threads)}})
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=self.chunk_rows, prefetch_batches=1)


def _default_concurrency(gpus: float) -> int:
    """One actor per GPU share when GPUs are asked for, else one per node (a CPU encoder uses every core)."""
    import ray

    if gpus:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus))
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


class _EncodeActor:
    """A Ray Data actor: builds the encoder once (its model loads on the first batch), then appends the vectors of
    every batch it is given."""

    def __init__(self, recipe: Any, text: str) -> None:
        if isinstance(recipe, tuple):
            from featurestore.encoders import get_encoder

            name, options, root = recipe
            recipe = get_encoder(name, store=root, **options)
        self.encoder, self.text = recipe, text

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = next(iter(self.encoder.encode_batches([batch.column(self.text).to_pylist()])))
        return batch.append_column(VECTORS, fmt.fixed_size_list(vectors))


def _staging(staging: str | None) -> tuple[Any, str, bool]:
    """(filesystem, folder, whether we made it locally): a fresh folder under ``staging`` (any pyarrow filesystem
    URI or local path), or a local temporary one."""
    from pyarrow import fs as pafs

    if staging is None:
        folder = tempfile.mkdtemp(prefix="featurestore-ray-")
        return pafs.LocalFileSystem(), folder, True
    filesystem, base = pafs.FileSystem.from_uri(staging) if "://" in staging else \
        (pafs.LocalFileSystem(), os.path.abspath(staging))
    folder = f"{base.rstrip('/')}/featurestore-ray-{uuid.uuid4().hex[:12]}"
    filesystem.create_dir(folder, recursive=True)
    return filesystem, folder, False

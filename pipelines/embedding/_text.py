"""Text embedding jobs: a text column of a source, through one model (or several of its layers in one pass).

Memory stays bounded whatever the input size: rows are read in batches, texts are encoded in chunks, and a partition
is committed as soon as it fills (the commit runs in a background thread while the next chunk is encoded). A rerun
skips every row whose (key, content_hash) is already committed, so a job killed at any moment and started again ends
with exactly the source's rows. The frame (checks, key index, writers, engines) is ``_job``'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import featurestore
from featurestore.errors import ValidationError
from featurestore.utils import ProgressCallback
from pipelines.embedding._job import (
    MODEL_OUTPUT,
    EmbedResult,
    Job,
    build_encoder,
    check_job,
    check_layers,
    check_options,
    default_chunk_rows,
    engine_options,
    run_indexed,
)
from pipelines.sources import open_source


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
    check_options(encoder_options)
    engine_spec = engine_options(engine, address=address, num_gpus_per_worker=num_gpus_per_worker,
                                  concurrency=concurrency, staging=staging)
    targets = [(name, build_encoder(encoder, encoder_options, store), (encoder, encoder_options))]
    return run_text(store, source, targets, key=key, text=text, version=version, chunk_rows=chunk_rows,
                partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                lock_timeout=lock_timeout, limit=limit, keep=keep, engine=engine_spec)[0]


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
    check_options(encoder_options)
    layers = check_layers("embed_layers", encoder, encoder_options, layers, "sentence-transformers:all-MiniLM-L6-v2")
    engine_spec = engine_options(engine, address=address, num_gpus_per_worker=num_gpus_per_worker,
                                  concurrency=concurrency, staging=staging)
    own = {k: v for k, v in encoder_options.items() if k != "pooling"}  # the model's output has its own pooling
    built = [(name, own) if k is None else (layer_name(name, k), {**encoder_options, "layer": k}) for k in layers]
    targets = [(set_name, build_encoder(encoder, options, store), (encoder, options)) for set_name, options in built]
    return run_text(store, source, targets, key=key, text=text, version=version, chunk_rows=chunk_rows,
                partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                lock_timeout=lock_timeout, limit=limit, keep=keep, engine=engine_spec)


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


def run_text(store: featurestore.Store | str | os.PathLike[str], source: Any, targets: list[tuple[str, Any, Any]], *,
         key: str | Sequence[str], text: str, version: int | str, chunk_rows: int | None, partition_rows: int,
         progress: bool | None, on_progress: ProgressCallback | None, lock_timeout: float,
         limit: int | None, keep: Sequence[str] = (), engine: dict[str, Any] | None = None) -> list[EmbedResult]:
    """One pass over ``source`` writing each (feature set, encoder, how it was asked for) target; the first encoder
    leads the pass."""
    store, keys, keep = check_job(store, targets, key, {"text": text}, keep)
    src = open_source(source)
    src.check_columns([*keys, text, *keep])
    chunk_rows = chunk_rows or default_chunk_rows(targets[0][1])
    return run_indexed(store, src, targets, keys=keys, keep=keep, text=text, limit=limit, version=version,
                       partition_rows=partition_rows, progress=progress, on_progress=on_progress,
                       lock_timeout=lock_timeout, engine=engine,
                       job=lambda sinks, report: Job(sinks, keys, text, chunk_rows, report, keep))

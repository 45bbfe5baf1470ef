"""``featurestore embed``: a text column or images into a feature set, from flags or a TOML job spec."""

from __future__ import annotations

import click

import featurestore
from pipelines.cli._common import echo_json as _echo_json
from pipelines.cli._common import json_option, list_option, quiet, store_option


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


@click.command()
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False), help="A TOML job spec (flags given too override it).")
@store_option
@click.option("--source", help="Parquet/CSV/JSONL file or folder.")
@list_option("--key", "keys", metavar="COL[,COL]", help="Key column(s); two or more make a compound key. Default: id.")
@click.option("--text", help="Text column to embed. Default: text.")
@click.option("--encoder", "-e", envvar="FEATURESTORE_ENCODER", help="e.g. sentence-transformers:all-MiniLM-L6-v2 or hash:64.")
@click.option("--name", "-n", help="Feature set to write.")
@click.option("--version", "version", default=None, help="auto (default: same spec appends, new spec = new version), new, or a number.")
@list_option("--layers", "--layer", "layers", metavar="K[,K]", help="Hidden layer(s) to store instead of the "
             "model's output: 0 = embedding output, -1 = last, 'model' = the model's own output. One layer is "
             "written to NAME; several, from one forward pass, to NAME_layerK each (NAME_layer_mK for -K; 'model' "
             "to NAME).")
@click.option("--pooling", type=click.Choice(["mean", "cls"]), help="Pooling of a hidden layer.")
@click.option("--device", help="cuda, mps or cpu (default: the best available).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per forward pass (default: chosen by device).")
@click.option("--max-seq-length", type=click.IntRange(min=1), help="Truncate texts to this many tokens.")
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise embeddings (default: the model's own).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), help="Stored dtype (default float32).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
              help="auto: ONNX Runtime on CPU when installed, torch on GPU.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Autocast precision. auto: bf16/fp16 on GPUs, fp32 on CPU; bf16 on CPUs with AMX is 2-3x faster "
                   "(cosine to fp32 >= 0.9999).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N source rows.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@list_option("--keep", "keep", metavar="COL[,COL]", help="Source columns stored beside the vectors (e.g. the text "
             "and a title), so search results and SQL can show them.")
@click.option("--images", metavar="DIR_OR_GLOB", help="Embed images: a folder (keyed by relative path, sub-folder as "
              "the 'label' column) or a glob such as 'photos/**/*.jpg'. Instead of --source.")
@click.option("--image", "image_column", metavar="COL", help="Embed images from a table: --source's column of image "
              "paths (relative to the table's folder) or bytes.")
@click.option("--label", "label", default=None, metavar="NAME", help="With --images: the sub-folder column's name "
              "(default: label; '' for none).")
@click.option("--num-workers", type=click.IntRange(min=0), help="Image decoding processes (default: min(4, cores - 1); "
              "0 decodes in the main process).")
@click.option("--engine", type=click.Choice(["local", "ray"]), help="local (default): this process; ray: the encoder "
              "runs as Ray Data actors (pip install 'featurestore[ray]').")
@click.option("--address", help="With --engine ray: the Ray cluster (ray://host:10001, auto; default: a local one).")
@click.option("--num-gpus-per-worker", type=click.FloatRange(min=0), help="With --engine ray: GPUs per encoder actor.")
@click.option("--concurrency", type=click.IntRange(min=1), help="With --engine ray: encoder actors (default: one per "
              "GPU share, else one per node).")
@click.option("--staging", metavar="URI", help="With --engine ray: a folder every node can read for the rows to embed "
              "(s3://bucket/tmp, a shared mount; default: a local temporary folder).")
@json_option
def embed(spec_path, store_path, source, keys, text, encoder, name, version, layers, pooling, device, batch_size,
          max_seq_length, normalize, dtype, backend, precision, limit, progress, keep, images, image_column, label,
          num_workers, engine, address, num_gpus_per_worker, concurrency, staging, as_json):
    """Embed a text column, or images, into a feature set (streaming, resumable, idempotent).

    \b
      featurestore embed --store ./store --source reviews.parquet --key id --text review \\
          --encoder sentence-transformers:all-MiniLM-L6-v2 --name reviews_minilm
      featurestore embed --spec jobs/reviews.toml
      featurestore embed --source reviews.parquet --text review -e sentence-transformers:all-MiniLM-L6-v2 \\
          --name reviews_minilm --layers model,3 --pooling mean
      featurestore embed --images photos/ -e torchvision:mobilenet_v2 --name photos_mobilenet
      featurestore embed --source photos.parquet --image file -e torchvision:mobilenet_v2 --name photos_mobilenet

    A rerun skips rows already embedded; rows with null, empty or non-text values go to the view "NAME@errors".
    --json prints a list: one result per feature set written.
    """
    from pipelines import JobSpec, run_job
    from pipelines.embedding._images import parse_stage
    from pipelines.embedding._text import parse_layer

    if images and source:
        raise click.UsageError("Pass --images (an image folder or glob) or --source (a table), not both.")
    source = source or images
    ctx = click.get_current_context()
    given = lambda p: ctx.get_parameter_source(p) not in (None, click.core.ParameterSource.DEFAULT)  # noqa: E731
    if spec_path:
        job = JobSpec.from_toml(spec_path)
    else:
        missing = [f"--{p}" for p, v in (("source", source), ("name", name), ("encoder", encoder)) if not v]
        if missing:
            raise click.UsageError(f"Missing {', '.join(missing)} (or pass --spec job.toml).")
        job = JobSpec(source=source, name=name, encoder=encoder)
    if source:
        job.source = source
    if images:
        job.images, job.image = True, None
    if image_column:
        job.image = image_column
    if label is not None:
        job.label = label or None
    if num_workers is not None:
        job.options["num_workers"] = num_workers
    if name:
        job.name = name
    if encoder:
        job.encoder = encoder
    if keys:
        job.key = list(keys)
    if text:
        job.text = text
    if given("store_path") or not spec_path:
        job.store = store_path
    if version is not None:
        job.version = int(version) if version.isdigit() else version
    if layers:
        try:
            job.layers = [parse_stage(k) if job.images or job.image else parse_layer(k) for k in layers]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--layers") from None
        if len(set(job.layers)) != len(job.layers):
            raise click.BadParameter(f"a layer is given twice: {list(layers)}", param_hint="--layers")
    if limit is not None:
        job.limit = limit
    if keep:
        job.keep = list(keep)
    flags = {"pooling": pooling, "device": device, "batch_size": batch_size, "max_seq_length": max_seq_length,
             "normalize": normalize, "dtype": dtype, "backend": backend, "precision": precision}
    job.options.update({k: v for k, v in flags.items() if v is not None})
    results = []
    if progress is None and quiet():
        progress = False
    on_ray = {k: v for k, v in (("engine", engine), ("address", address), ("num_gpus_per_worker", num_gpus_per_worker),
                                ("concurrency", concurrency), ("staging", staging)) if v is not None}
    for r in run_job(job, progress=progress, **on_ray):  # every layer in one pass over the source
        results.append(r.to_dict())
        set_name = r.name
        if not as_json:
            click.echo(f"{set_name} v{r.version}: read {r.rows_read:,}, wrote {r.rows_written:,}, "
                       f"skipped {r.rows_skipped:,} already stored, failed {r.rows_failed:,} "
                       f"in {r.seconds:.1f}s ({r.rows_per_s:,.0f} rows/s)", err=False)
            if r.errors_by_reason:
                reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.errors_by_reason.items()))
                click.echo(f"  failed rows by reason: {reasons}; see the view \"{set_name}@errors\"", err=True)
    if as_json:
        _echo_json(results)
    elif not quiet() and not ({"precision", "backend"} & set(job.options)):
        from pipelines.cli._tips import bf16_tip

        tip = bf16_tip(results)
        if tip:
            click.echo(tip, err=True)

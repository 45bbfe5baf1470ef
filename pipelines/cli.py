"""The ``featurestore`` command line.

Exit codes: 0 success, 1 a feature store error (message on stderr), 2 a usage error, 3 ``doctor`` found problems it
did not repair.
"""

from __future__ import annotations

import json
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
        try:
            return super().invoke(ctx)
        except FeatureStoreError as exc:
            raise click.ClickException(str(exc)) from exc


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
@click.argument("path", default="./store", envvar="FEATURESTORE_STORE", type=click.Path(file_okay=False))
@json_option
def init(path: str, as_json: bool) -> None:
    """Create an empty store at PATH (default ./store); harmless on an existing store."""
    store = featurestore.open(path, create=True)
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
@click.option("--version", "-v", "version", type=int, default=None, help="A version other than the latest.")
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
@click.option("--max-rows", type=int, default=50, show_default=True, help="Rows shown by the table format.")
def sql(query: str, store_path: str, fmt: str, as_json: bool, max_rows: int) -> None:
    """Run a read-only SQL QUERY over the feature set views.

    \b
      featurestore sql "select id, array_cosine_similarity(embedding, embedding) from reviews_minilm limit 3"
      featurestore sql "select * from runs" --json
    """
    result = _open(store_path).sql(query)
    table = result.arrow()
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


def main() -> None:
    cli(prog_name="featurestore")


if __name__ == "__main__":
    main()

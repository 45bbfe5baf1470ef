"""``featurestore init | ls | show | sql | doctor``: the store itself, its sets, SQL over them, its consistency."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

import featurestore
from pipelines.cli._common import cell, json_option, print_rows, store_option
from pipelines.cli._common import console as _console
from pipelines.cli._common import echo_json as _echo_json
from pipelines.cli._common import table as _table


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


@click.command()
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


@click.command(name="ls")
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


@click.command()
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


@click.command()
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
            out.add_row(*(cell(v) for v in row.values()))
        c = _console()
        c.print(out)
        if table.num_rows > max_rows:
            c.print(f"({table.num_rows:,} rows, {max_rows} shown)")


@click.command()
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

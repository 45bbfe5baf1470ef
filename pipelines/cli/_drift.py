"""``featurestore drift``: how far apart two groups of stored vectors are, with a p-value and a picture.

A thin click command over ``Store.drift`` (the statistics, ``featurestore.ops._drift``) and ``plot_drift`` (the PNG,
``stackers.evaluate._drift_plot``). Registered on the ``featurestore`` group at the bottom of ``pipelines/cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import click

import featurestore
from pipelines.cli._common import echo_json, json_option, quiet, store_option


@click.command(name="drift")
@click.argument("a")
@click.argument("b", required=False)
@store_option
@click.option("--where-a", metavar="SQL",
              help="A predicate over A's view selecting side A's rows, e.g. \"dept = 'Tops'\".")
@click.option("--where-b", metavar="SQL", help="The same for side B (over B's view; B defaults to A).")
@click.option("--png", type=click.Path(dir_okay=False),
              help="Also draw the two sides to this PNG (needs the stack extra).")
@click.option("--permutations", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Permutations of the MMD test (0: no p-value).")
@click.option("--max-rows", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Rows per side drawn for the test (its cost grows with the square).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the rows drawn and the permutations.")
@click.option("--allow-spec-differences", is_flag=True,
              help="Compare sets whose specs differ (same dim) when you know they share one space.")
@click.option("--progress/--no-progress", default=None, help="A progress bar over the permutations "
              "(default: when stderr is a terminal).")
@json_option
def drift(a: str, b: str | None, store_path: str, where_a: str | None, where_b: str | None, png: str | None,
          permutations: int, max_rows: int, seed: int, allow_spec_differences: bool, progress: bool | None,
          as_json: bool) -> None:
    """Compare A and B: two versions (NAME@v1 NAME@v2), two sets of one spec, or two --where slices of one set.

    \b
      featurestore drift reviews_minilm@v1 reviews_minilm@v2
      featurestore drift reviews --where-a "dept = 'Tops'" --where-b "dept = 'Dresses'" --png drift.png

    Prints the centroid cosine, the centroid distance in units of the sides' spread (and what chance alone would
    give), the norm shift in pooled standard deviations, and an MMD two-sample test (Gaussian kernel, median
    bandwidth) with its permutation p-value. --json gives one object.
    """
    if b is None and where_a is None and where_b is None:
        raise click.UsageError("Give a second set or version B, or --where-a/--where-b to compare two slices of A.")
    store = featurestore.open(store_path, create=False)
    result = store.drift(a, b, where_a=where_a, where_b=where_b, max_rows=max_rows, permutations=permutations,
                         seed=seed, allow_spec_differences=allow_spec_differences,
                         progress=False if quiet() else progress)
    out = result.to_dict()
    if png is not None:
        from stackers.evaluate import plot_drift

        out["png"] = str(plot_drift(result, Path(png)))
    if as_json:
        echo_json(out)
        return
    click.echo(result.summary())
    if png is not None:
        click.echo(f"plot: {out['png']}")

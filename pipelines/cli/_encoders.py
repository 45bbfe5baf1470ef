"""``featurestore encoders ...``: list the installed encoders; fit one on a table's texts and keep it in the store.

    featurestore encoders ls
    featurestore encoders fit tfidf-svd --source train.parquet --text text --key id -s ./store
    featurestore embed --source reviews.parquet --text text -e tfidf-svd:<id> --name reviews_tfidf -s ./store

``fit_from_source`` does the work (read the texts, fit, save); the click command only parses and prints. Registered
from ``pipelines/cli.py`` with ``cli.add_command(encoders)``; the options every command shares come from
``_cli_common`` (not from ``cli.py``, so importing either module first works).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import click

import featurestore
from featurestore.errors import ValidationError
from pipelines.cli._common import echo_json, json_option, list_option, quiet, store_option
from pipelines.embedding._job import check_source_keys
from pipelines.sources import open_source

KINDS = ("tfidf-svd",)


def fit_from_source(store: featurestore.Store | str | os.PathLike[str], source: Any, *, kind: str = "tfidf-svd",
                    text: str = "text", key: str | Sequence[str] | None = None, **params: Any) -> dict[str, Any]:
    """Fit a ``kind`` encoder on the ``text`` column of ``source``, save it in ``store``; return what was done.

    Null, blank and unreadable texts are left out of the fit (and counted). With ``key``, the source's keys are
    checked first as ``pipelines.embed`` checks them (no null, no repeat), so each row counts once in the idf.
    ``params`` go to ``TfidfSvd.fit`` (dim, ngram_range, min_df, sublinear_tf, random_state).
    """
    from featurestore.encoders import TfidfSvd

    if kind not in KINDS:
        raise ValidationError(f"The 'kind' parameter of fit_from_source must be one of {list(KINDS)}. Got {kind!r} instead.")
    store = store if isinstance(store, featurestore.Store) else featurestore.open(store)
    keys = [] if key is None else [key] if isinstance(key, str) else list(key)
    src = open_source(source)
    src.check_columns([*keys, text])
    if keys:
        check_source_keys(src, keys, None)
    texts: list[str] = []
    skipped = 0
    for batch in src.batches([text], text=text):  # unreadable rows come with a null text
        for value in batch.column(text).to_pylist():
            if isinstance(value, str) and value.strip():
                texts.append(value)
            else:
                skipped += 1
    t0 = time.perf_counter()
    encoder = TfidfSvd.fit(texts, **params)
    name = encoder.save(store)
    spec = encoder.spec()
    return {"encoder": name, "kind": kind, "state": str(store.root / spec["state"]), "dim": spec["dim"],
            "vocabulary_size": spec["vocabulary_size"], "rows": len(texts), "rows_skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 3), "source": src.description}


@click.group(name="encoders", invoke_without_command=True)
@click.pass_context
def encoders(ctx: click.Context) -> None:
    """Encoders: list what is installed (alone or `ls`), or fit one on your texts and keep it in the store.

    \b
      featurestore encoders                      # = featurestore encoders ls
      featurestore encoders ls --json
      featurestore encoders fit tfidf-svd --source train.parquet --text text -s ./store
      featurestore embed --source reviews.parquet --text text -e tfidf-svd:<id> --name reviews_tfidf -s ./store
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls)


@encoders.command(name="ls")
@json_option
def ls(as_json: bool = False) -> None:
    """List encoder keys: modality, source (built-in or an installed package's entry point), usable offline here.

    Outside packages add keys with an entry point in the group `featurestore.encoders`. `usable` checks the
    libraries and local weights without loading a model.

    \b
      featurestore encoders ls
      featurestore encoders ls --json
    """
    from featurestore.encoders import describe_encoders

    rows = describe_encoders()
    if as_json:
        echo_json(rows)
        return
    width = max([len(r["key"]) for r in rows] + [3])
    source_width = max([len(r["source"]) for r in rows] + [6])
    click.echo(f"{'key':<{width}}  {'modality':<11}  {'source':<{source_width}}  usable  detail")
    for r in rows:
        click.echo(f"{r['key']:<{width}}  {r['modality'] or '?':<11}  {r['source']:<{source_width}}  "
                   f"{'yes' if r['usable'] else 'no':<6}  {r['detail']}")


@encoders.command(name="fit")
@click.argument("kind", type=click.Choice(KINDS))
@store_option
@click.option("--source", required=True, help="Parquet/CSV/JSONL file or folder with the training texts.")
@click.option("--text", default="text", show_default=True, help="Text column to fit on.")
@list_option("--key", "keys", help="Key column(s), checked for nulls and repeats (optional).")
@click.option("--dim", type=click.IntRange(min=1), default=128, show_default=True, help="SVD components.")
@click.option("--min-df", type=click.IntRange(min=1), default=2, show_default=True,
              help="Keep terms found in at least this many texts.")
@click.option("--ngram-range", nargs=2, type=click.IntRange(min=1), default=(1, 2), show_default=True,
              help="Smallest and largest word n-gram.")
@click.option("--sublinear-tf/--no-sublinear-tf", default=True, show_default=True, help="Term frequency 1 + log(tf).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="SVD random state.")
@json_option
def fit(kind: str, store_path: str, source: str, text: str, keys: list[str], dim: int, min_df: int,
        ngram_range: tuple[int, int], sublinear_tf: bool, seed: int, as_json: bool) -> None:
    """Fit a KIND encoder (tfidf-svd) on a text column; save it in the store and print its id.

    The id (tfidf-svd:<16 hex digits>) is the sha256 of the saved state: embed with it like any encoder.

    \b
      featurestore encoders fit tfidf-svd --source train.csv --text review --key id --dim 128 -s ./store
    """
    if ngram_range[0] > ngram_range[1]:
        raise click.BadParameter(f"the smallest n-gram ({ngram_range[0]}) is larger than the largest "
                                 f"({ngram_range[1]}).", param_hint="--ngram-range")
    result = fit_from_source(store_path, source, kind=kind, text=text, key=keys or None, dim=dim,
                             min_df=min_df, ngram_range=tuple(ngram_range), sublinear_tf=sublinear_tf,
                             random_state=seed)
    if as_json:
        echo_json(result)
        return
    click.echo(result["encoder"])
    if quiet():
        return
    click.echo(f"fitted on {result['rows']:,} texts ({result['rows_skipped']:,} null or blank left out): "
               f"{result['vocabulary_size']:,} terms -> {result['dim']} dims in {result['seconds']:.1f}s; "
               f"saved in {result['state']}", err=True)
    click.echo(f"next: featurestore embed -s {store_path} --source SOURCE --text {text} -e {result['encoder']} "
               "--name NAME", err=True)

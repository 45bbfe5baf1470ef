"""``featurestore search NAME``: the nearest rows of a feature set to a text, a stored row or a vector file.

A thin layer over ``Store.search``: the text is encoded with the set's own recorded spec, ``--key`` is read as the
set's key type(s), and the answer is printed as a table or, with ``--json``, a list of rows.
"""

from __future__ import annotations

from typing import Any

import click

import featurestore
from featurestore.errors import ValidationError
from pipelines.cli._common import console, echo_json, json_option, list_option, store_option, table


def parse_key(fs: featurestore.FeatureSet, text: str) -> Any:
    """``--key`` as the set's key: a value of the key column's type, or a tuple (``u1,5``) for a compound key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurestore.storage import SCHEMA_FILE

    schema = pq.read_schema(fs.path / SCHEMA_FILE)
    parts = [text] if len(fs.key) == 1 else text.split(",")
    if len(parts) != len(fs.key):
        raise click.BadParameter(f"{fs.name!r} has the compound key {fs.key}: give {len(fs.key)} comma-separated "
                                 f"values. Got {text!r}.", param_hint="--key")
    values = []
    for part, name in zip(parts, fs.key):
        try:
            values.append(pa.array([part.strip() if len(parts) > 1 else part]).cast(schema.field(name).type)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise click.BadParameter(f"{part!r} is not a {schema.field(name).type} (the type of key column "
                                     f"{name!r}).", param_hint="--key") from None
    return values[0] if len(values) == 1 else tuple(values)


def _vectors(path: str) -> Any:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"Cannot read {path!r} as a .npy array: {exc}") from None
    return array


@click.command()
@click.argument("name")
@click.option("--text", "-t", help="A text query, encoded with the set's own encoder spec.")
@click.option("--key", "key_text", metavar="K", help="Search with a stored row's vector (comma-separated values for "
              "a compound key); the row itself is left out unless --include-self.")
@click.option("--vector-file", type=click.Path(exists=True, dir_okay=False),
              help="A .npy vector (dim,) or a batch of them (queries, dim).")
@click.option("--image", "image_file", type=click.Path(exists=True, dir_okay=False),
              help="An image file, encoded by the set's image encoder (for text vectors of an open_clip model, by its "
                   "image tower).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Rows per query.")
@click.option("--where", help="SQL predicate over the set's view, applied before scoring (e.g. \"rating >= 4\").")
@list_option("--columns", "columns", metavar="COL[,COL]", help="Stored columns to show beside each hit.")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="A version other than the latest.")
@click.option("--index", type=click.Choice(["exact", "ann"]), default="exact", show_default=True,
              help="exact (every row scored) or ann (the version's HNSW index, built first when missing or stale).")
@click.option("--metric", type=click.Choice(["cosine", "dot", "l2"]), help="Default: the set's spec.")
@click.option("--include-self", is_flag=True, help="With --key: keep the row itself in its results.")
@store_option
@json_option
def search(name: str, text: str | None, key_text: str | None, vector_file: str | None, image_file: str | None, k: int,
           where: str | None, columns: list[str], version: int | None, index: str, metric: str | None,
           include_self: bool, store_path: str, as_json: bool) -> None:
    """The K rows of NAME nearest to a text, an image, a stored row, or vectors from a .npy file.

    \b
      featurestore search reviews_minilm --text "soft cotton dress" -k 5 --columns text
      featurestore search reviews_minilm --key 1042 --where "rating >= 4" --json
      featurestore search reviews_minilm --vector-file queries.npy --index ann

    Scores: cosine or dot similarity, or minus the L2 distance (higher is nearer); ties are ordered by key.
    --json prints a list: one object per hit (with "query", the query's position, for a batch from a file).
    """
    given = [flag for flag, value in (("--text", text), ("--key", key_text), ("--vector-file", vector_file),
                                      ("--image", image_file)) if value is not None]
    if len(given) != 1:
        raise click.UsageError(f"Give exactly one of --text, --image, --key and --vector-file (got "
                               f"{', '.join(given) or 'none'}).")
    store = featurestore.open(store_path, create=False)
    query: Any = None
    key: Any = None
    if text is not None:
        query = text
    elif vector_file is not None:
        query = _vectors(vector_file)
    else:
        key = parse_key(store.get(name, version), key_text)
    result = store.search(name, query, key=key, image=image_file, k=k, where=where, columns=columns or None, version=version,
                          metric=metric, include_self=include_self, index=index)
    rows = result.to_pylist()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No rows matched." if where else "The feature set has no rows.")
        return
    out = table(*result.column_names)
    for row in rows:
        out.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console().print(out)

"""``featurestore stack train | predict | report``: stacked classifiers on stored feature sets."""

from __future__ import annotations

from pathlib import Path

import click

import featurestore
from pipelines.cli._common import Group, cell, json_option, list_option, store_option
from pipelines.cli._common import console as _console
from pipelines.cli._common import echo_json as _echo_json


def _open(path: str, create: bool = False) -> featurestore.Store:
    return featurestore.open(path, create=create)


@click.group(cls=Group)
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
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Parquet/CSV with key, label (and groups, columns).")
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
@list_option("--extras", metavar="KIND",
              help="Extra base learners per set, each kept only where inner CV says it helps: centroid (cosine to "
                   "each class centroid), knn (class shares among the 15 nearest training rows).")
@click.option("--C", "C", type=_ProbeC(), default="auto", show_default=True,
              help="The probes' C: auto tunes it per set by out-of-fold log loss; a number > 0 fixes it.")
@click.option("--threshold/--no-threshold", default=True, show_default=True,

                            help="Tune the decision rule for macro-F1 on inner out-of-fold predictions: a cut for "
                                 "yes/no labels, a class-prior correction otherwise (else argmax).")
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
@click.option("--keys", "keys_path", type=click.Path(exists=True, dir_okay=False),
              help="Parquet/CSV of stored keys to score (default: every key).")
@click.option("--source", type=click.Path(exists=True),
              help="New rows: a Parquet/CSV/JSONL file or folder. Rows a feature set lacks are embedded into it "
                   "first, with its recorded spec.")
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
        out.add_row(*(f"{v:.3f}" if isinstance(v, float) else "" if v is None else cell(v, 20)
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

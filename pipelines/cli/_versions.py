"""``featurestore drop`` and ``featurestore diff``: the life of a feature set's versions.

Thin click commands over ``Store.drop`` and ``Store.diff`` (``featurestore/ops/_drop.py``, ``_diff.py``); registered on
the ``featurestore`` group at the bottom of ``pipelines/cli.py``. Time travel on the CLI is ``featurestore sql
--as-of TIME`` and ``"name@<time>"`` views inside any query.
"""

from __future__ import annotations

import sys
from typing import Any

import click

import featurestore
from featurestore.query import parse_ref
from pipelines.cli._common import console, echo_json, json_option, store_option, table


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    isatty = getattr(sys.stdin, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


@click.command(name="drop")
@click.argument("ref", metavar="NAME[@vK]")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed when stdin is not a terminal).")
@click.option("--force", is_flag=True, help="Drop even when saved models use it (they could no longer predict).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for a running writer of the set.")
@store_option
@json_option
def drop(ref: str, yes: bool, force: bool, lock_timeout: float, store_path: str, as_json: bool) -> None:
    """Remove feature set NAME (every version) or one version NAME@vK.

    \b
      featurestore drop reviews_minilm@v2 --yes
      featurestore drop scratch --yes --json

    Dropping the latest version makes the previous one the latest. Refused while a saved model uses what would go,
    unless --force. Crash-safe: a kill half way leaves a leftover that `featurestore doctor --clean` removes.
    Asks first on a terminal; elsewhere (scripts, CI) --yes is required. --json gives one object.
    """
    name, version, when = parse_ref(ref)
    if when is not None:
        raise click.BadParameter(f"{ref!r} names a time; drop takes NAME or NAME@vK.", param_hint="NAME[@vK]")
    store = featurestore.open(store_path, create=False)
    what = f"{name} v{version}" if version is not None else f"feature set {name} (versions {store.versions(name)})"
    if not yes:
        if not _interactive():
            raise click.UsageError(f"Refusing to drop {what} without confirmation: pass --yes (stdin is not a terminal).")
        click.confirm(f"Drop {what} from {store.root}?", abort=True, err=True)
    out = store.drop(name, version, force=force, lock_timeout=lock_timeout)
    if as_json:
        echo_json(out)
        return
    dropped = ", ".join(f"v{v}" for v in out["versions"])
    tail = f"latest is now v{out['latest']}" if out["latest"] is not None else f"{name} is gone"
    click.echo(f"dropped {name} {dropped} ({out['rows']:,} rows, {out['bytes']:,} bytes); {tail}")
    for model, v in out["models"].items():
        click.echo(f"warning: saved model {model} used {name} v{v} and can no longer predict", err=True)


@click.command(name="diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--examples", type=click.IntRange(min=0), default=5, show_default=True,
              help="Example keys listed for added, removed and changed.")
@store_option
@json_option
def diff(a: str, b: str, examples: int, store_path: str, as_json: bool) -> None:
    """Compare two feature set versions A and B (NAME, NAME@vK or NAME@<ISO time>).

    \b
      featurestore diff reviews_minilm@v1 reviews_minilm@v2
      featurestore diff reviews_minilm@2026-11-29T08:00:00 reviews_minilm --json

    Specs side by side (differing fields marked), keys added and removed, rows whose content changed, and the mean
    and minimum cosine between the shared keys' vectors (when the dims match). --json gives one object.
    """
    d = featurestore.open(store_path, create=False).diff(a, b, examples=examples)
    if as_json:
        echo_json(d.to_dict())
        return
    _print_diff(d)


def _print_diff(d: Any) -> None:
    out = table("spec", d.a, d.b, title="spec (* differs)")
    for k, (x, y) in d.spec.items():
        mark = "*" if k in d.spec_changed else ""
        out.add_row(f"{mark}{k}", _show(x), _show(y), style="bold yellow" if mark else None)
    c = console()
    c.print(out)
    click.echo(f"rows: {d.rows[0]:,} -> {d.rows[1]:,}   key: {', '.join(d.key[0])}"
               + ("" if d.key[0] == d.key[1] else f" -> {', '.join(d.key[1])}"))
    if d.shared is not None:
        for what in ("added", "removed", "changed"):
            ex = d.examples.get(what) or []
            click.echo(f"{what}: {getattr(d, what):,}" + (f" (e.g. {', '.join(map(repr, ex))})" if ex else ""))
        click.echo(f"shared keys: {d.shared:,}" + ("" if d.identical is None else f", identical vectors {d.identical:,}"))
    if d.cosine_mean is not None:
        click.echo(f"cosine between shared keys: mean {d.cosine_mean:.4f}, min {d.cosine_min:.4f}")
    if d.note:
        click.echo(f"note: {d.note}")


def _show(value: Any) -> str:
    return "-" if value is None else str(value)

"""What every ``featurestore`` command shares: its options, how lists are read, how much it prints, how errors look.

- **Lists.** Every option that takes several values accepts the flag repeated *and* comma lists, identically:
  ``--key user --key item`` is ``--key user,item``. (A column whose name holds a comma needs a job spec file.)
- **Verbosity.** ``-q/--quiet``, ``-v/--verbose`` (twice for debug) and ``--log-level`` are accepted by every command
  and by the group itself (``featurestore -v embed ...`` = ``featurestore embed ... -v``). By default third-party
  progress bars, log lines and warnings (transformers' "Loading weights", scikit-learn's fold warnings) are hidden;
  our own warnings print as one ``warning:`` line; ``-v`` shows everything; ``-q`` leaves only errors.
- **Errors.** One line on stderr and exit 1 (a store error) or 2 (a usage error). With ``--json`` (or
  ``--format json``) the error is one JSON object on stderr instead, ``{"error", "kind", "exit_code"}``, and stdout
  stays empty, so stdout only ever holds a result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from featurestore.errors import FeatureStoreError

STORE_HELP = "Store folder (env FEATURESTORE_STORE)."
LIST_HELP = "Repeat the flag or separate values with commas."

# Libraries whose progress bars, log lines and warnings are hidden unless -v (their messages are about themselves,
# not about the user's job; anything that matters to the job is raised or reported by our own code).
THIRD_PARTY = ("transformers", "sentence_transformers", "huggingface_hub", "torch", "sklearn", "lightgbm", "onnx",
               "onnxruntime", "optimum", "joblib", "scipy", "numpy", "matplotlib", "PIL", "filelock", "urllib3")
OURS = ("featurestore", "stackers", "pipelines")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def store_option(f):
    return click.option("--store", "-s", "store_path", default="./store", envvar="FEATURESTORE_STORE",
                        show_default=True, type=click.Path(file_okay=False), help=STORE_HELP)(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as JSON on stdout (errors as JSON on stderr).")(f)


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``: repeated flags and comma lists, the same thing."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def list_option(*decls: str, help: str, **kwargs: Any):
    """A list option: repeatable, each value a comma list; the command receives a flat list of strings."""
    return click.option(*decls, multiple=True, callback=lambda ctx, param, value: split_list(value),
                        help=f"{help} {LIST_HELP}", **kwargs)


#: the real stdout while a ``--json`` command runs: everything else printed meanwhile goes to stderr (see ``Cli.main``)
_json_stdout: list[Any] = []


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str), file=_json_stdout[-1] if _json_stdout else None)


@contextlib.contextmanager
def stdout_for_json_only(enabled: bool) -> Iterator[None]:
    """While a ``--json`` command runs, stdout carries only its JSON: any other print goes to stderr.

    Libraries print on stdout from their own threads (Ray forwards its raylet's warnings there mid-job), which made
    `featurestore embed --engine ray --json` print text before the JSON and broke every script that parsed it. In a
    process of its own (stdout is the process's) the redirection stays to the end: Ray also prints from its exit
    handlers, after the command returned.
    """
    if not enabled:
        yield
        return
    _json_stdout.append(sys.stdout)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        saved = _json_stdout.pop()
        if saved is not sys.__stdout__:  # called in-process (a test's CliRunner): give its stdout back
            sys.stdout = saved


def console():
    """A rich console on stdout. Not a terminal (a pipe, a file, a test): wide enough that nothing is wrapped or cut."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)


def table(*columns: str, title: str | None = None):
    """A rich table whose cells wrap (fold) in a narrow terminal rather than being cut with an ellipsis."""
    from rich.table import Table

    out = Table(title=title)
    for c in columns:
        out.add_column(c, overflow="fold")
    return out


def print_rows(rows: list[dict[str, Any]], as_json: bool, *, empty: str, columns: tuple[str, ...], cells) -> None:
    """A listing command's output: ``rows`` as a JSON list, else ``empty`` when there are none, else a table of
    ``columns`` whose cells ``cells(row)`` gives."""
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(empty)
        return
    out = table(*columns)
    for r in rows:
        out.add_row(*cells(r))
    console().print(out)


# -- verbosity ----------------------------------------------------------------------------------------------------
class _Verbosity:
    level = logging.WARNING


def verbosity() -> int:
    """The logging level the command runs at: ERROR (-q), WARNING (default), INFO (-v), DEBUG (-vv)."""
    return _Verbosity.level


def quiet() -> bool:
    return _Verbosity.level >= logging.ERROR


def _record_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """-q/-v/--log-level given on the group or the command: the last one given wins (applied by ``invoke``)."""
    if ctx.resilient_parsing or ctx.get_parameter_source(param.name) in (None, click.core.ParameterSource.DEFAULT):
        return
    if param.name == "quiet":
        level = logging.ERROR if value else None
    elif param.name == "verbose":
        level = logging.INFO if value == 1 else logging.DEBUG if value > 1 else None
    else:
        level = getattr(logging, value.upper())
    if level is not None:
        ctx.meta["featurestore.verbosity"] = level
        apply_verbosity(level)


def apply_verbosity(level: int) -> None:
    """Route progress bars, logs and warnings for ``level`` (see the module docstring)."""
    _Verbosity.level = level
    loud = level <= logging.INFO
    if not loud:  # read by huggingface_hub, transformers and tqdm when they are imported (the CLI imports them late)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    else:
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
            os.environ.pop(var, None)
    if "transformers" in sys.modules:  # already imported: tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level if loud else logging.ERROR)
        (hf_logging.enable_progress_bar if loud else hf_logging.disable_progress_bar)()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(level if loud else max(level, logging.ERROR))
    warnings.showwarning = _show_warning


def _is_ours(category: type, filename: str) -> bool:
    if category.__module__.split(".")[0] in OURS:
        return True
    if category.__module__.split(".")[0] in THIRD_PARTY:
        return False
    parts = Path(filename).parts  # a builtin category (UserWarning...): who issued it
    return any(p in OURS for p in parts) and not any(p in THIRD_PARTY for p in parts)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    level = _Verbosity.level
    if level <= logging.INFO:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    elif level <= logging.WARNING and _is_ours(category, filename):
        sys.stderr.write(f"warning: {message}\n")


def verbosity_params() -> list[click.Option]:
    common = dict(expose_value=False, is_eager=True, callback=_record_verbosity)
    return [
        click.Option(["--quiet", "-q"], is_flag=True, help="Only errors: no progress bars, tips or warnings.", **common),
        click.Option(["--verbose", "-v"], count=True,
                     help="Also third-party progress bars, logs and warnings; -vv for debug logs.", **common),
        click.Option(["--log-level"], type=click.Choice(_LEVELS, case_sensitive=False),
                     help="Logging level (default WARNING; -q = ERROR, -v = INFO, -vv = DEBUG).", **common),
    ]


# -- errors -------------------------------------------------------------------------------------------------------
def _wants_json(argv: list[str]) -> bool:
    if "--json" in argv or "--format=json" in argv:
        return True
    return any(a == "--format" and b == "json" for a, b in zip(argv, argv[1:]))


def error_payload(exc: click.ClickException) -> dict[str, Any]:
    """``{"error": message, "kind": the exception's class, "exit_code": n}``; kind is ours (e.g.
    ``FeatureSetNotFoundError``), DuckDB's (``CatalogException``) or click's (``UsageError``, ``BadParameter``...)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    message = exc.format_message() if isinstance(exc, click.UsageError) else exc.message
    return {"error": message, "kind": type(cause).__name__, "exit_code": exc.exit_code}


def add_verbosity(cmd: click.Command) -> None:
    """Give ``cmd`` (and, for a group, each of its commands) the verbosity options, unless it has them."""
    if not any(p.name == "verbose" for p in cmd.params):
        cmd.params.extend(verbosity_params())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_verbosity(sub)


class Group(click.Group):
    """Our domain errors become one line on stderr and exit code 1 (or a JSON object with --json); every command
    added to it, from any module, gets the verbosity options."""

    group_class = type  # subgroups are Groups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_verbosity(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        add_verbosity(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        import duckdb
        import pyarrow as pa

        apply_verbosity(ctx.meta.get("featurestore.verbosity", logging.WARNING))
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (FeatureStoreError, duckdb.Error, pa.ArrowException, OSError) as exc:
            # Classes, not builtins: our errors (all FeatureStoreError), a bad query, a file pyarrow cannot read, the
            # system refusing a file. Anything else (a bare ValueError from deep inside) is a bug: its traceback shows.
            if os.environ.get("FEATURESTORE_DEBUG"):  # every error, ours included, with its traceback
                raise
            if isinstance(exc, FeatureStoreError):
                raise click.ClickException(str(exc)) from exc
            if isinstance(exc, duckdb.Error):  # a bad query: say what DuckDB said, no traceback
                raise click.ClickException(f"SQL error: {exc}") from exc
            raise click.ClickException(f"{exc}\n  (set FEATURESTORE_DEBUG=1 for the traceback)") from exc

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with stdout_for_json_only(_wants_json(argv)):
                rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if _wants_json(argv):
                click.echo(json.dumps(error_payload(exc)), err=True)
            else:
                exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as exc:  # stdout closed early (`featurestore sql ... | head`): as click does
            import errno

            if exc.errno != errno.EPIPE:
                raise
            sys.stdout = click.utils.PacifyFlushWrapper(sys.stdout)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def cell(value: Any, width: int = 60) -> str:
    """A value as one table cell: long lists cut to three items and a count, long text cut at ``width``."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        value = "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:3]) + f", … ({len(value)})]"
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"

"""The ``featurestore`` command line: the group and its commands, one module per command group.

Exit codes: 0 success, 1 a feature store error (message on stderr), 2 a usage error, 3 ``doctor`` found problems it
did not repair. What every command shares (list options, -q/-v/--log-level, --json errors) is in ``_common``.
"""

from __future__ import annotations

import click

import featurestore
from pipelines.cli._common import Group
from pipelines.cli._demo import demo
from pipelines.cli._drift import drift
from pipelines.cli._embed import embed
from pipelines.cli._encoders import encoders
from pipelines.cli._leaderboard import leaderboard
from pipelines.cli._models import models
from pipelines.cli._recommend import recommend
from pipelines.cli._search import search
from pipelines.cli._stack import stack
from pipelines.cli._store import doctor, init, ls, show, sql
from pipelines.cli._versions import diff, drop


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(featurestore.__version__, prog_name="featurestore")
def cli() -> None:
    """An embedding feature store: encoders -> Parquet + DuckDB catalog -> stacked models.

    \b
      featurestore init ./store
      featurestore ls --store ./store
      featurestore sql "select id, embedding from reviews_minilm limit 3"

    -q/-v/--log-level work here (featurestore -v embed ...) and on every command; --json errors are JSON on stderr.
    """


for _command in (init, ls, show, sql, embed, doctor, demo, stack, models, encoders, leaderboard, drop, diff, drift,
                 search, recommend):
    cli.add_command(_command)
del _command


def main() -> None:
    cli(prog_name="featurestore")

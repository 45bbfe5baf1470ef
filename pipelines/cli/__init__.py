"""The ``featurestore`` command line: one module per command group, ``cli`` the click group, ``main`` the script."""

from pipelines.cli._main import cli, main

__all__ = ["cli", "main"]

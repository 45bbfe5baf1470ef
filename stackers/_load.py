"""Loading any saved model: the manifest's ``format`` says which kind, and that kind's class loads it.

One shape for every kind: ``stackers.load(path)`` returns the model (a ``StackingClassifier`` or a
``RecommenderStack``), every file checked before it is used; ``stackers.read_manifest(path)`` returns its manifest.
"""

from __future__ import annotations

import os
from typing import Any

from stackers.classify._stacking import StackingClassifier
from stackers.persist import RECOMMENDER_FORMAT, STACKER_FORMAT, read_manifest
from stackers.recommend._stack import RecommenderStack

__all__ = ["load", "read_manifest"]

_KINDS: dict[str, type] = {STACKER_FORMAT: StackingClassifier, RECOMMENDER_FORMAT: RecommenderStack}


def load(path: str | os.PathLike[str]) -> Any:
    """The model saved at ``path`` (a folder written by ``save``), whatever its kind; see the kind's ``load``."""
    return _KINDS[read_manifest(path)["format"]].load(path)

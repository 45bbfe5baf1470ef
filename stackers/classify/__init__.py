"""Classifiers on stored features: tuned probes, meta learners, the ``StackingClassifier``, zero-shot CLIP, and the
domain alignment transforms (whitening, CORAL) a block can go through first."""

from stackers.classify._align import CORAL, Whitening
from stackers.classify._probes import CentroidSimilarity, KNeighborsVotes, LogisticProbe
from stackers.classify._stacking import StackingClassifier
from stackers.classify._tuning import LogisticProbeCV
from stackers.classify._zero_shot import DEFAULT_TEMPLATES, ZeroShotClassifier

__all__ = ["CORAL", "CentroidSimilarity", "DEFAULT_TEMPLATES", "KNeighborsVotes", "LogisticProbe", "LogisticProbeCV",
           "StackingClassifier", "Whitening", "ZeroShotClassifier"]

"""Learning on stored features: join feature sets by key, stack per-encoder probes, evaluate, save, report.

    data = stackers.join(store, ["reviews_minilm", "reviews_clip"], labels="labels.parquet", key="id")
    train, test = data.split(test_size=0.25)
    model = stackers.StackingClassifier(meta="auto", cv=5).fit(train)
    stackers.report(stackers.compare(train, test, model), out="reports/")
    model.save("models/reviews")

LightGBM and matplotlib are imported only when a LightGBM meta learner or a report needs them.
"""

from ._compare import Comparison, compare
from ._join import MissingKeysError, MissingKeysWarning, TrainingSet, join
from ._persist import load, read_manifest
from ._probes import CentroidSimilarity, LogisticProbe
from ._report import ReportPaths, report
from ._stacking import StackingClassifier
from ._store_io import StaleFeatureSetWarning, predict_from_store, write_oof
from featurestore._validation import InvalidParameterError

__all__ = [
    "CentroidSimilarity",
    "Comparison",
    "InvalidParameterError",
    "LogisticProbe",
    "MissingKeysError",
    "MissingKeysWarning",
    "ReportPaths",
    "StackingClassifier",
    "StaleFeatureSetWarning",
    "TrainingSet",
    "compare",
    "join",
    "load",
    "predict_from_store",
    "read_manifest",
    "report",
    "write_oof",
]

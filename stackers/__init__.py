"""Learning on stored features: join feature sets by key, stack per-encoder probes, evaluate, save, report.

    data = stackers.join(store, ["reviews_minilm", "reviews_clip"], labels="labels.parquet", key="id")
    train, test = data.split(test_size=0.25)
    model = stackers.StackingClassifier(meta="auto", cv=5).fit(train)
    stackers.report(stackers.compare(train, test, model), out="reports/")
    model.save("models/reviews")

LightGBM and matplotlib are imported only when a LightGBM meta learner or a report needs them.
"""

from featurestore.utils import import_optional

# Every module below needs scikit-learn and pandas (the "stack" extra): say which extra to install, once, here,
# instead of a bare ModuleNotFoundError from whichever module happens to import first.
for _module in ("sklearn", "pandas"):
    import_optional(_module, extra="stack", what="stackers")
del _module, import_optional

from stackers._load import load, read_manifest  # noqa: E402
from stackers.classify._align import CORAL, Whitening  # noqa: E402
from stackers.classify._probes import CentroidSimilarity, LogisticProbe  # noqa: E402
from stackers.classify._stacking import StackingClassifier  # noqa: E402
from stackers.classify._tuning import LogisticProbeCV  # noqa: E402
from stackers.classify._zero_shot import ZeroShotClassifier  # noqa: E402
from stackers.data._join import MissingKeysError, MissingKeysWarning, TrainingSet, join  # noqa: E402
from stackers.data._store_io import StaleFeatureSetWarning, predict_from_store, write_oof  # noqa: E402
from stackers.errors import CorruptModelError, InvalidParameterError  # noqa: E402
from stackers.evaluate._compare import Comparison, compare  # noqa: E402
from stackers.evaluate._curve import LearningCurve  # noqa: E402
from stackers.evaluate._leaderboard import Leaderboard, leaderboard  # noqa: E402
from stackers.evaluate._learning_curve import learning_curve  # noqa: E402
from stackers.evaluate._report import ReportPaths, report  # noqa: E402
from stackers.recommend._evaluation import RankEvaluation  # noqa: E402
from stackers.recommend._interactions import Interactions  # noqa: E402
from stackers.recommend._stack import RecommenderStack  # noqa: E402

__all__ = [
    "CORAL",
    "CentroidSimilarity",
    "Comparison",
    "CorruptModelError",
    "Interactions",
    "InvalidParameterError",
    "Leaderboard",
    "LearningCurve",
    "LogisticProbe",
    "LogisticProbeCV",
    "MissingKeysError",
    "MissingKeysWarning",
    "RankEvaluation",
    "RecommenderStack",
    "ReportPaths",
    "StackingClassifier",
    "StaleFeatureSetWarning",
    "TrainingSet",
    "Whitening",
    "ZeroShotClassifier",
    "compare",
    "join",
    "leaderboard",
    "learning_curve",
    "load",
    "predict_from_store",
    "read_manifest",
    "report",
    "write_oof",
]

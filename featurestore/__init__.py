"""featurestore: frozen-encoder embeddings in Parquet, indexed by a DuckDB catalog.

>>> import featurestore
>>> store = featurestore.open("./store")
>>> store.write("my_vectors", table, key="id", spec={"encoder": "external:my-model"})
>>> store.sql("select id from my_vectors limit 5").df()

Importing this package never imports torch: encoders load their libraries when they are built.
"""

from featurestore.ops._drift import DriftResult, DriftSide
from featurestore.ops._diff import Diff
from featurestore.query._featureset import FeatureSet
from featurestore.query._sql import Result
from featurestore._store import Store, open
from featurestore.storage._writer import Writer
from featurestore.errors import (
    CorruptStoreError,
    EncoderNotAvailableError,
    FeatureSetNotFoundError,
    FeatureStoreError,
    ImageDecodeError,
    InvalidNameError,
    MissingDependencyError,
    ModelNotFoundError,
    LockTimeoutError,
    QueryTimeoutError,
    ReadOnlyQueryError,
    SpecMismatchError,
    UnknownEncoderError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "open", "Store", "FeatureSet", "Writer", "Result", "Diff",
    "FeatureStoreError", "FeatureSetNotFoundError", "ImageDecodeError", "ValidationError", "SpecMismatchError", "InvalidNameError", "MissingDependencyError", "ModelNotFoundError",
    "LockTimeoutError", "QueryTimeoutError", "ReadOnlyQueryError", "UnknownEncoderError", "EncoderNotAvailableError", "CorruptStoreError",
    "DriftResult", "DriftSide",
    "__version__",
]

"""featurestore: frozen-encoder embeddings in Parquet, indexed by a DuckDB catalog.

>>> import featurestore
>>> store = featurestore.open("./store")
>>> store.write("my_vectors", table, key="id", spec={"encoder": "external:my-model"})
>>> store.sql("select id from my_vectors limit 5").df()

Importing this package never imports torch: encoders load their libraries when they are built. The sub-packages
``storage``, ``query``, ``search``, ``ops``, ``encoders`` and ``utils`` hold the rest of the public surface.
"""

from featurestore._store import Store, open
from featurestore.errors import (
    CorruptStoreError,
    EncoderNotAvailableError,
    FeatureSetNotFoundError,
    FeatureStoreError,
    ImageDecodeError,
    InvalidIndexError,
    InvalidNameError,
    InvalidParameterError,
    InvalidTypeError,
    LockTimeoutError,
    MissingDependencyError,
    MissingFileError,
    ModelNotFoundError,
    QueryTimeoutError,
    ReadOnlyQueryError,
    SpecMismatchError,
    TargetExistsError,
    UnknownEncoderError,
    UnknownNameError,
    UsageError,
    ValidationError,
)
from featurestore.ops._diff import Diff
from featurestore.ops._drift import DriftResult, DriftSide
from featurestore.query._featureset import FeatureSet
from featurestore.query._sql import Result
from featurestore.storage._layout import is_store
from featurestore.storage._writer import Writer

__version__ = "0.1.0"

__all__ = [
    "CorruptStoreError",
    "Diff",
    "DriftResult",
    "DriftSide",
    "EncoderNotAvailableError",
    "FeatureSet",
    "FeatureSetNotFoundError",
    "FeatureStoreError",
    "ImageDecodeError",
    "InvalidIndexError",
    "InvalidNameError",
    "InvalidParameterError",
    "InvalidTypeError",
    "LockTimeoutError",
    "MissingDependencyError",
    "MissingFileError",
    "ModelNotFoundError",
    "QueryTimeoutError",
    "ReadOnlyQueryError",
    "Result",
    "SpecMismatchError",
    "Store",
    "TargetExistsError",
    "UnknownEncoderError",
    "UnknownNameError",
    "UsageError",
    "ValidationError",
    "Writer",
    "__version__",
    "is_store",
    "open",
]

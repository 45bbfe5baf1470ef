"""What every layer shares: parameter validation, optional imports, progress, unit-length rows.

These are the public helpers ``stackers`` and ``pipelines`` build on (they never import a private module of this
package): one way for a parameter error to read, one install hint per extra, one progress bar, one normalisation.
"""

from featurestore.utils._optional import import_optional, library_version
from featurestore.utils._progress import ProgressCallback, progress_enabled, rich_progress
from featurestore.utils._validation import (
    Constraint,
    CVSplitter,
    DistinctNames,
    HasMethods,
    InstanceOf,
    Interval,
    InvalidParameterError,
    StrOptions,
    SubsetOf,
    validate_params,
)
from featurestore.utils._vectors import unit_rows

__all__ = [
    "CVSplitter",
    "Constraint",
    "DistinctNames",
    "HasMethods",
    "InstanceOf",
    "Interval",
    "InvalidParameterError",
    "ProgressCallback",
    "StrOptions",
    "SubsetOf",
    "import_optional",
    "library_version",
    "progress_enabled",
    "rich_progress",
    "unit_rows",
    "validate_params",
]

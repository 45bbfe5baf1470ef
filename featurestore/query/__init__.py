"""Reading the store: feature set versions as Arrow or numpy, the DuckDB catalog, fenced SQL, time travel.

Public here, for the layers above: :class:`FeatureSet`, the SQL :class:`Result`, SQL quoting, the per-set error view
name, and the time-travel parsers (``"name@v2"``, ``"name@<ISO time>"``, ``as_of``) with each key's history.
"""

from featurestore.query._catalog import errors_view, quote_ident, sql_str
from featurestore.query._featureset import FeatureSet
from featurestore.query._sql import Result
from featurestore.query._time_travel import parse_as_of, parse_ref, read_history

__all__ = ["FeatureSet", "Result", "errors_view", "parse_as_of", "parse_ref", "quote_ident", "read_history", "sql_str"]

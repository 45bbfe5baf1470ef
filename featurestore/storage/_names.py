"""Feature set and model names: safe as SQL identifiers and as directory names."""

from __future__ import annotations

import re

from featurestore.errors import InvalidNameError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NAME = NAME_PATTERN
# Views the catalog defines for itself; a feature set may not shadow them.
RESERVED = frozenset({"runs", "errors", "feature_sets", "partitions", "catalog_meta"})
_SQL_RESERVED: frozenset[str] | None = None


def _sql_reserved() -> frozenset[str]:
    """DuckDB keywords that cannot stand unquoted as a table name (``select * from left`` does not parse).

    Only 'unreserved' keywords are safe there; 'reserved', 'type_function' (left, glob, join...) and 'column_name'
    keywords are refused, so every view works in hand-written SQL without quotes.
    """
    global _SQL_RESERVED
    if _SQL_RESERVED is None:
        import duckdb

        rows = duckdb.connect().sql(
            "select keyword_name from duckdb_keywords() where keyword_category <> 'unreserved'"
        ).fetchall()
        _SQL_RESERVED = frozenset(r[0].lower() for r in rows)
    return _SQL_RESERVED


def validate_name(name: object, what: str = "feature set") -> str:
    """Return ``name`` if it is a lower-case identifier usable as a view and a folder name, else raise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidNameError(
            f"Invalid {what} name {name!r}: use 1-63 lower-case letters, digits and '_', starting with a letter "
            "(it becomes a SQL view and a folder name)."
        )
    if name in RESERVED or name in _sql_reserved():
        raise InvalidNameError(f"Invalid {what} name {name!r}: it is a reserved word in the catalog or in SQL.")
    return name

"""Newest row per key wins: the one rule both the SQL views and the Python readers apply.

Every committed file is named ``part-<run>-<n>.parquet`` (rows) or ``errors-<run>-<n>.parquet`` (error rows), where
``n`` is the version's commit counter (``Manifest.next_part``, shared by rows and errors): a larger ``n`` is a later
commit. When a key was written more than once, the row from the file with the largest commit number is the row.
:func:`commit_number` reads that number in Python and :func:`commit_number_sql` in DuckDB, from the same pattern;
:func:`partition_file` is the one place that writes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore.storage._format import key_tokens

# The tail of a committed file's name. Python's ``re`` and DuckDB's RE2 read this pattern alike.
_COMMIT_NUMBER = r"-([0-9]+)[.]parquet$"
_COMMIT_NUMBER_RE = re.compile(_COMMIT_NUMBER)
NO_COMMIT = -1  # files without a number (``schema.parquet``) sort before every commit


def partition_file(kind: str, run_id: str, number: int) -> str:
    """The file name of commit ``number`` of ``run_id``: ``kind`` is ``"part"`` (rows) or ``"errors"``."""
    return f"{kind}-{run_id}-{number:05d}.parquet"


def commit_number(file: str) -> int:
    """The commit number in a committed file's name (``part-<run>-00042.parquet`` -> 42), else ``NO_COMMIT``."""
    found = _COMMIT_NUMBER_RE.search(file)
    return int(found.group(1)) if found else NO_COMMIT


def commit_number_sql(file_column: str) -> str:
    """:func:`commit_number` as a DuckDB expression over ``file_column`` (a quoted column holding the file name).

    The name DuckDB reports may be absolute or relative: only its tail is read.
    """
    return f"coalesce(TRY_CAST(regexp_extract({file_column}, '{_COMMIT_NUMBER}', 1) AS BIGINT), {NO_COMMIT})"


def newest_per_key_sql(keys: Sequence[str], file_column: str) -> str:
    """A QUALIFY clause keeping each key's row from the newest commit (``keys`` are quoted identifiers)."""
    return (f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} "
            f"ORDER BY {commit_number_sql(file_column)} DESC) = 1")


def oldest_first(partitions: Sequence[Any]) -> list[Any]:
    """Partitions (anything with a ``file``) in commit order."""
    return sorted(partitions, key=lambda p: commit_number(p.file))


def newest_per_key(tables: Sequence[pa.Table], key: list[str]) -> pa.Table:
    """The rows of ``tables`` (one per partition, in commit order), keeping each key's row from the newest one."""
    kept: list[pa.Table] = []
    seen: pa.Array | None = None
    for table in reversed(tables):  # newest first: a key already seen has a newer row
        tokens = key_tokens(table, key)
        if seen is not None and len(seen):
            table = table.filter(pc.invert(pc.is_in(tokens, value_set=seen)))
            tokens = key_tokens(table, key)
        seen = tokens if seen is None else pa.concat_arrays([seen, tokens])
        kept.append(table)
    return pa.concat_tables(reversed(kept))

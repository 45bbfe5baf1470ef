"""Reading a version's partitions: each file checked against its manifest as it is read, newest row per key.

Every reader of stored rows (``FeatureSet``, search's matrix, time travel, the writer's resume) reads through
:func:`read_partition` / :func:`read_latest`, so a truncated, swapped or bit-flipped file is an error naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.errors import CorruptStoreError
from featurestore.storage._format import EMBEDDING
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, Partition
from featurestore.storage._newest import newest_per_key, oldest_first

_CHILD_NAME = re.compile(r"<\w+: ")


def type_key(type_string: str) -> str:
    """An Arrow type string without list child names (Parquet reads ``list<item: ...>`` back as ``<element: ...>``)."""
    return _CHILD_NAME.sub("<", type_string)


def check_schema(path: Path, schema: pa.Schema, m: Manifest) -> None:
    """Refuse a file whose columns or embedding width differ from what its manifest promises."""
    got = {f.name: type_key(str(f.type)) for f in schema}
    want = {k: type_key(v) for k, v in m.columns.items()}
    if want and got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        details = ", ".join(f"{k}: file {got.get(k, 'missing')}, manifest {want.get(k, 'missing')}" for k in diff[:4])
        raise CorruptStoreError(f"{path} does not match its manifest ({details}).\n  Help: run `featurestore doctor`.")
    if EMBEDDING in schema.names:
        typ = schema.field(EMBEDDING).type
        if not pa.types.is_fixed_size_list(typ) or typ.list_size != m.dim:
            raise CorruptStoreError(
                f"{path} holds embeddings of type {typ} but its manifest says dim={m.dim}.\n  Help: run `featurestore doctor`."
            )


def check_present(path: Path, p: Partition) -> None:
    """The partition file is on disk with the size its manifest recorded (one stat)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptStoreError(f"Partition {path} is listed in its manifest but missing.\n  Help: run `featurestore doctor`.") from None
    if size != p.bytes:
        raise CorruptStoreError(
            f"Partition {path} has {size} bytes, its manifest says {p.bytes}: it was truncated or replaced.\n"
            "  Help: run `featurestore doctor`."
        )


def read_partition(version_dir: Path, m: Manifest, p: Partition, columns: list[str] | None = None, *,
                   rows_schema: bool = True) -> pa.Table:
    """One committed partition, after the checks that cost nothing next to reading it.

    Size against the manifest, the footer's row count and schema against the manifest, and Parquet page CRCs while
    decoding (written since format 1.1), so a truncated, swapped or bit-flipped file is an error naming it, never
    wrong rows. The whole-file CRC32 is checked by ``featurestore doctor``.
    """
    path = version_dir / p.file
    check_present(path, p)
    try:
        f = pq.ParquetFile(path, page_checksum_verification=True)
        if f.metadata.num_rows != p.rows:
            raise CorruptStoreError(
                f"Partition {path} holds {f.metadata.num_rows} rows, its manifest says {p.rows}.\n  Help: run `featurestore doctor`."
            )
        if rows_schema:  # error partitions have their own columns
            check_schema(path, f.schema_arrow, m)
        return f.read(columns=columns)
    except CorruptStoreError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptStoreError(f"Partition {path} cannot be read ({exc}).\n  Help: run `featurestore doctor`.") from None


def read_latest(version_dir: Path, m: Manifest, columns: list[str] | None = None) -> pa.Table:
    """All committed rows of a version in commit order, one per key: the newest row wins (see ``_newest``)."""
    if columns is not None:
        columns = list(dict.fromkeys([*m.key, *columns]))
    tables = [read_partition(version_dir, m, p, columns) for p in oldest_first(m.partitions)]
    if not tables:
        schema = pq.read_schema(version_dir / SCHEMA_FILE)
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    if not m.has_updates or len(tables) == 1:
        return pa.concat_tables(tables)
    return newest_per_key(tables, m.key)

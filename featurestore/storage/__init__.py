"""The on-disk format: feature set versions as Parquet partitions and manifests, written atomically under a lock.

Public here, for the layers above: the row format (column names, Arrow conversions, key identity, content hashes),
the folder layout, durable file writes, error rows, the "newest row per key" rule, names, statistics, and the record
of which feature set versions a saved model uses (what ``drop`` protects).
"""

from featurestore.storage._atomic import atomic_write_bytes, atomic_write_text, fsync_path, write_durable_text
from featurestore.storage._error_rows import COLUMNS as ERROR_COLUMNS
from featurestore.storage._error_rows import REASON
from featurestore.storage._format import (
    CONTENT_HASH,
    EMBEDDING,
    EVENT_TIME,
    MAX_EXAMPLES,
    RUN_ID,
    SYSTEM_COLUMNS,
    check_keys,
    describe_keys,
    fixed_size_list,
    key_tokens,
    spec_fingerprint,
    text_hashes,
    to_matrix,
    to_table,
)
from featurestore.storage._layout import (
    MARKER,
    encoders_dir,
    is_store,
    models_dir,
    set_dir,
    sets_dir,
    store_root,
    version_dir,
)
from featurestore.storage._manifest import SCHEMA_FILE, Manifest, Partition
from featurestore.storage._names import validate_name
from featurestore.storage._newest import newest_per_key_sql
from featurestore.storage._stats import float32_list, version_stats
from featurestore.storage._uses import USES_FIELD, models_using, uses_record

__all__ = [
    "CONTENT_HASH",
    "EMBEDDING",
    "ERROR_COLUMNS",
    "EVENT_TIME",
    "MARKER",
    "MAX_EXAMPLES",
    "Manifest",
    "Partition",
    "REASON",
    "RUN_ID",
    "SCHEMA_FILE",
    "SYSTEM_COLUMNS",
    "USES_FIELD",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_keys",
    "describe_keys",
    "encoders_dir",
    "fixed_size_list",
    "float32_list",
    "fsync_path",
    "is_store",
    "key_tokens",
    "models_dir",
    "models_using",
    "newest_per_key_sql",
    "set_dir",
    "sets_dir",
    "spec_fingerprint",
    "store_root",
    "text_hashes",
    "to_matrix",
    "to_table",
    "uses_record",
    "validate_name",
    "version_dir",
    "version_stats",
    "write_durable_text",
]

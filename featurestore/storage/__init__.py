"""The on-disk format: feature set versions as Parquet partitions and manifests, written atomically under a lock."""

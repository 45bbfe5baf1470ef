"""Where rows come from: table files (Parquet, CSV, JSONL; a file or a folder) and in-memory tables."""

from ._tables import TableSource, open_source

__all__ = ["TableSource", "open_source"]

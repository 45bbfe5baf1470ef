"""Image sources: which images a job embeds, as Arrow batches of (key, image reference), in a stable order.

Three kinds, one class (:class:`ImageSource`):

- a folder tree: every file with an image extension below it, keyed by its path relative to the folder
  (``cats/001.jpg``); the first-level sub-folder (``cats``) is the ``label`` column (``None`` for files at the top);
- a glob pattern (``"photos/**/*.jpg"``): the files it matches, keyed by their path relative to the pattern's fixed
  leading folder (``photos``), labelled the same way;
- a table (Parquet/CSV/JSONL file or folder, or an in-memory Arrow/pandas table, read by ``TableSource``) with a
  column of paths (relative to the table's folder, or ``root=``) or of the images' bytes, keyed by its own columns.

Nothing is decoded here and no image is held: a batch carries each row's reference (a path, or the bytes a table
holds), so the job reads, hashes and decodes one batch at a time. Files are listed once, sorted by relative path, so
a rerun and every partition see the same order. What a source cannot give (a JSONL line that is not JSON, a number
where a path belongs) is flagged in the side channel of ``_errors`` (``ERROR_KIND``, ``ERROR_MESSAGE``), as for text.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.errors import ValidationError
from pipelines.sources._errors import RESERVED, with_error_columns
from pipelines.sources._tables import TableSource

#: file name endings a folder source takes as images (case-insensitive); a glob takes whatever it matches
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".tga")
#: with every batch: the image reference, a path (str) or the image's bytes (binary), and how a message names it
IMAGE, WHERE = RESERVED + "image", RESERVED + "image_where"
#: the key column of a folder or glob source, and its label column, unless renamed
PATH, LABEL = "path", "label"
_GLOB_CHARS = frozenset("*?[")


class ImageSource:
    """Images to embed: a folder, a glob pattern, or a table with a column of image paths or bytes (``image=``).

    ``batches(columns)`` yields record batches of ``columns`` followed by ``IMAGE`` (a path or the bytes) and
    ``WHERE`` (how an error message names the image), then the two report columns. ``count_rows()`` sizes the
    progress bar. For a folder or glob the columns are ``path`` (the key) and ``label``; ``label=None`` leaves the
    label out and ``path_column``/``label`` rename them. ``extensions`` are the endings a folder source takes.
    ``root`` is where a table's relative paths start (default: the table file's folder, or the working directory
    for an in-memory table). ``key_types`` goes to ``TableSource`` (CSV keys read as numbers).
    """

    def __init__(self, source: Any, *, image: str | None = None, label: str | None = LABEL,
                 path_column: str = PATH, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 root: str | os.PathLike[str] | None = None, batch_rows: int = 1024,
                 key_types: Mapping[str, Any] | None = None) -> None:
        self.image, self.label, self.path_column = image, label, path_column
        self.batch_rows = batch_rows
        self._table: TableSource | None = None
        self._files: list[str] = []  # relative POSIX paths, sorted: the only per-image state a file source holds
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValidationError(f"The 'batch_rows' parameter of ImageSource must be a positive int. Got "
                                  f"{batch_rows!r} instead.")
        if image is not None:
            if not isinstance(image, str) or not image:
                raise ValidationError(f"The 'image' parameter of ImageSource names the column of image paths or "
                                      f"bytes. Got {image!r} instead.")
            self._table = (source if isinstance(source, TableSource)
                           else TableSource(source, batch_rows=batch_rows, key_types=key_types))
            self.root = Path(root) if root is not None else (self._table.local_root or Path.cwd())
            self.kind = "table"
            self.description = self._table.description
            return
        if key_types:
            raise ValidationError("The 'key_types' option applies to a table of images (image=COLUMN); a folder or "
                                  "glob source is keyed by its relative paths.")
        if label is not None and label == path_column:
            raise ValidationError(f"The label and path columns of an image folder need two names. Got {label!r} "
                                  "for both.")
        if not isinstance(source, (str, os.PathLike)):
            raise ValidationError(f"An image source is a folder, a glob pattern such as 'photos/**/*.jpg', or a "
                                  f"table with image=COLUMN. Got a {type(source).__name__} without image=.")
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            exts = tuple(e.lower() for e in extensions)
            self.kind, self.root = "folder", path
            self._files = _list_folder(path, exts)
            if not self._files:
                raise ValidationError(f"No image files ({', '.join(exts)}) under {text!r}.")
        elif _GLOB_CHARS & set(text):
            self.kind, self.root = "glob", _glob_root(text)
            self._files = _list_glob(text, self.root)
            if not self._files:
                raise ValidationError(f"The pattern {text!r} matches no files.")
        elif path.is_file():
            raise ValidationError(f"{text!r} is a file. An image source is a folder, a glob pattern, or a table with "
                                  f"image=COLUMN (e.g. ImageSource({text!r}, image='path')).")
        else:
            raise ValidationError(f"Image source {text!r} does not exist.")
        self.description = text

    # -- facts ------------------------------------------------------------------------------------------------
    @functools.cached_property
    def payload(self) -> str:
        """"path" when rows name files, "bytes" when a table holds the images themselves."""
        if self._table is None:
            return "path"
        typ = self._image_type()
        return "bytes" if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) else "path"

    @property
    def format(self) -> str:
        """The table's format ("parquet", "csv", "jsonl", "table"), or "folder"/"glob"."""
        return self._table.format if self._table is not None else self.kind

    def column_names(self) -> list[str]:
        if self._table is not None:
            return self._table.column_names()
        return [self.path_column] + ([self.label] if self.label is not None else [])

    def count_rows(self) -> int:
        return self._table.count_rows() if self._table is not None else len(self._files)

    def fingerprint(self) -> str:
        """For a file source: its relative paths, sizes and modification times; for a table, the table's."""
        if self._table is not None:
            return self._table.fingerprint()
        h = hashlib.blake2b(digest_size=8)
        h.update(str(self.root.resolve()).encode())
        for rel in self._files:
            try:
                st = (self.root / rel).stat()
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:  # gone since the listing: the job records it as a missing file
                h.update(f"{rel}:-\n".encode())
        return h.hexdigest()

    def check_columns(self, needed: Sequence[str]) -> None:
        if self._table is not None:
            self._table.check_columns([*needed, self.image])
            typ = self._image_type()
            ok = (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ)
                  or pa.types.is_large_binary(typ) or pa.types.is_null(typ))
            if not ok:
                raise ValidationError(f"The image column {self.image!r} of {self.description} holds {typ} values; "
                                      "it must hold paths (strings) or the images' bytes (binary).")
            return
        names = self.column_names()
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValidationError(f"Image source {self.description} has no column(s) {missing}: a folder or glob "
                                  f"source has {names} (the relative path is the key).")

    def _image_type(self) -> pa.DataType:
        assert self._table is not None
        if self._table.format == "csv":
            return pa.string()
        if self._table._table is not None:
            return self._table._table.schema.field(self.image).type
        if self._table.format == "parquet":
            from pipelines.sources._files import parquet_file

            return parquet_file(self._table.paths[0]).schema_arrow.field(self.image).type
        return pa.string()  # JSONL: text, or an error row per value that is not

    # -- reading ----------------------------------------------------------------------------------------------
    def read_columns(self, columns: Sequence[str]) -> pa.Table:
        """A few small columns of every row, e.g. the keys for the up-front null/duplicate check."""
        if self._table is not None:
            return self._table.read_columns(columns)
        return pa.Table.from_batches(list(self._file_batches(list(columns), refs=False)),
                                     schema=self._file_schema(list(columns), refs=False))

    def batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Batches of ``columns``, then ``IMAGE``, ``WHERE`` and the report columns (see the class docstring)."""
        columns = list(columns)
        if self._table is None:
            for batch in self._file_batches(columns, refs=True):
                yield with_error_columns(batch)
            return
        from pipelines.sources._errors import ERROR_KIND, ERROR_MESSAGE

        paths = self.payload == "path"
        for batch in self._table.batches([*columns, self.image], binary=[], text=self.image):
            refs = batch.column(self.image)
            if paths:
                # an empty cell is no path (CSV cannot tell it from null), not the table's folder
                full = [str(self.root / p) if p is not None and p.strip() else None for p in refs.to_pylist()]
                refs = where = pa.array(full, pa.string())
            else:
                where = pa.array([None if b is None else f"{len(b):,} bytes in column {self.image!r}"
                                  for b in refs.to_pylist()], pa.string())
            arrays = [batch.column(c) for c in columns]
            arrays += [refs, where, batch.column(ERROR_KIND), batch.column(ERROR_MESSAGE)]
            names = [*columns, IMAGE, WHERE, ERROR_KIND, ERROR_MESSAGE]
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    def _file_schema(self, columns: list[str], *, refs: bool) -> pa.Schema:
        fields = [pa.field(c, pa.string()) for c in columns]
        if refs:
            fields += [pa.field(IMAGE, pa.string()), pa.field(WHERE, pa.string())]
        return pa.schema(fields)

    def _file_batches(self, columns: list[str], *, refs: bool) -> Iterator[pa.RecordBatch]:
        schema = self._file_schema(columns, refs=refs)
        for start in range(0, len(self._files), self.batch_rows):
            rel = self._files[start:start + self.batch_rows]
            values: dict[str, list[Any]] = {self.path_column: rel}
            if self.label is not None:
                values[self.label] = [r.split("/", 1)[0] if "/" in r else None for r in rel]
            arrays = [pa.array(values[c], pa.string()) for c in columns]
            if refs:
                full = [str(self.root / r) for r in rel]
                arrays += [pa.array(full, pa.string()), pa.array(full, pa.string())]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def open_images(source: Any, **options: Any) -> ImageSource:
    """``source`` as an ImageSource (an ImageSource passes through; options then are an error)."""
    if isinstance(source, ImageSource):
        if options:
            raise ValidationError(f"Option(s) {sorted(options)} given with an ImageSource object: configure the "
                                  "ImageSource instead.")
        return source
    return ImageSource(source, **options)


def _list_folder(root: Path, extensions: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of the image files below ``root``, sorted; hidden files and folders are skipped."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                out.append((rel / name).as_posix())
    out.sort()
    return out


def _glob_root(pattern: str) -> Path:
    """The leading folders of a pattern before its first wildcard: ``photos/**/*.jpg`` -> ``photos``."""
    parts = Path(pattern).expanduser().parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _list_glob(pattern: str, root: Path) -> list[str]:
    """Files the pattern matches, as POSIX paths relative to ``root``, sorted."""
    matches = glob.glob(os.path.expanduser(pattern), recursive=True)
    out = sorted(Path(m).relative_to(root).as_posix() if root != Path(".") else Path(m).as_posix()
                 for m in matches if os.path.isfile(m))
    return out

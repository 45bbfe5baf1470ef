"""Arrays of a saved model: one ``.npz`` written uncompressed, read back only as the manifest describes it.

:func:`read_npz` checks every member in its ``.npy`` header (name, dtype kind, shape, byte count) against a layout
derived from the manifest *before* a byte of data is read: members must be stored uncompressed, so none can expand
beyond the file's size, object dtypes never load (``allow_pickle=False`` and refused in the header), and a header that
claims a billion rows is refused without allocating them. A dimension in the layout is a number (exact) or a name:
every array that names it must agree (``"n_rows"``, ``"items"``...), so one tampered length cannot pass alone.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from featurestore.storage import fsync_path
from stackers.errors import CorruptModelError
from stackers.persist._folder import regular_file

#: name -> (dtype kinds it may have, shape: ints and dimension names)
Layout = dict[str, tuple[str, tuple[int | str, ...]]]
FLOAT, INT, ID = "f", "iu", "iuU"  # dtype kinds: anything else (objects, bytes, records) is refused
_KIND_WORDS = {FLOAT: "a float", INT: "an integer", ID: "an integer or string"}


def write_npz(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (stored, not compressed: :func:`read_npz` refuses compressed members), flushed to disk."""
    for key, value in arrays.items():
        if value.dtype == object:
            raise CorruptModelError(f"Array {key!r} has object dtype and cannot be saved without pickle.")
    np.savez(file, **arrays)
    fsync_path(file)


def shape_text(shape: tuple[int | str, ...], dims: dict[str, int] | None = None) -> str:
    """A layout shape as text, known dimension names replaced by their values: ``(n_rows, 32)`` or ``(1000, 32)``."""
    parts = [str((dims or {}).get(s, s)) if isinstance(s, str) else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(shape) == 1 else "") + ")"


def read_npz(file: Path, layout: Layout) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The arrays ``layout`` names, each checked in its header first, and the value each dimension name took."""
    size = regular_file(file).st_size
    where = repr(str(file))
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptModelError(f"{where} is not a readable .npz archive: {exc}.") from None
    dims: dict[str, int] = {}
    with zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        wanted = {key + ".npy": key for key in layout}
        if len(set(names)) != len(names):
            raise CorruptModelError(f"{where} names a member twice.")
        unknown, missing = sorted(set(names) - set(wanted)), sorted(set(wanted) - set(names))
        if unknown:
            raise CorruptModelError(f"{where} holds member(s) {unknown[:5]} that the manifest does not describe; "
                                    f"expected exactly {sorted(wanted)[:8]}{'...' if len(wanted) > 8 else ''}.")
        if missing:
            raise CorruptModelError(f"{where} lacks the array(s) {missing[:5]} that the manifest describes.")
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise CorruptModelError(f"{where} member {info.filename!r} is compressed or encrypted; a saved model "
                                        "stores its arrays uncompressed (np.savez), so this file was not written by "
                                        "stackers.")
            total += info.file_size
            if info.file_size != info.compress_size or total > size:
                raise CorruptModelError(f"{where} member {info.filename!r} declares more bytes than the file holds.")
        arrays: dict[str, np.ndarray] = {}
        for info in infos:
            key = wanted[info.filename]
            kinds, want = layout[key]
            what = f"{where} member {info.filename!r}"
            with zf.open(info) as fp:
                shape, dtype, header = _header(fp, what)
            if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
                raise CorruptModelError(f"{what} has dtype {dtype}; expected {_KIND_WORDS.get(kinds, kinds)} dtype.")
            if len(shape) != len(want):
                raise CorruptModelError(f"{what} has shape {shape}; expected {shape_text(want)}.")
            for got, exp in zip(shape, want):
                if isinstance(exp, str):
                    exp = dims.setdefault(exp, got)
                if got != exp:
                    raise CorruptModelError(f"{what} has shape {shape}; the manifest implies {shape_text(want, dims)}.")
            need = math.prod(shape) * dtype.itemsize
            if header + need != info.file_size:
                raise CorruptModelError(f"{what} holds {info.file_size - header:,} data bytes; shape {shape} of {dtype} "
                                        f"needs {need:,}.")
            with zf.open(info) as fp:
                arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CorruptModelError(f"{where} array {key!r} holds NaN or infinite values.")
    return arrays, dims


def _header(fp, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, where the data starts) of one ``.npy`` member, read from its header only."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise CorruptModelError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptModelError(f"{what} is not a plain .npy array: {exc}.") from None
    return shape, dtype, fp.tell()

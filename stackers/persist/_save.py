"""Saving a model: its manifest, its arrays and its texts as one folder, installed atomically (``_folder``).

Every model kind saves through :func:`save_folder`, so each gets the same files (``arrays.npz`` uncompressed, texts
flushed, the manifest last, with the library versions and the store's use record of the sets it reads).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.storage import write_durable_text
from stackers.persist._folder import install_folder, library_versions, manifest_text
from stackers.persist._npz import write_npz

ARRAYS = "arrays.npz"


def save_folder(path: str | os.PathLike[str], manifest: dict[str, Any], *, sources: Mapping[str, Mapping[str, Any]],
                arrays: dict[str, np.ndarray], texts: Mapping[str, str] = {}, allow_nan: bool = False) -> Path:
    """Write a saved model at ``path``: ``manifest`` (plus ``versions`` and the use record of ``sources``),
    ``arrays`` as ``arrays.npz`` and each of ``texts`` (file name -> text); returns the path."""
    text = manifest_text({**manifest, "versions": library_versions()}, sources, allow_nan=allow_nan)

    def write(folder: Path) -> None:
        write_npz(folder / ARRAYS, arrays)
        for name, content in texts.items():
            write_durable_text(folder / name, content)

    return install_folder(Path(path), write, text)

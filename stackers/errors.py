"""The learning layer's own errors; like every error of the packages, each derives from ``FeatureStoreError`` and the
builtin it resembles (see ``featurestore.errors``, which the CLI maps to messages and exit codes)."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError, InvalidParameterError

__all__ = ["CorruptModelError", "InvalidParameterError", "MissingKeysError"]


class CorruptModelError(FeatureStoreError, ValueError):
    """A saved model whose files are damaged, tampered with or inconsistent: it is refused whole, never half-loaded."""


class MissingKeysError(FeatureStoreError, LookupError):
    """Some label keys have no row in a feature set and the join was asked not to drop them (how="error")."""

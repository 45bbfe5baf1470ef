"""Errors raised by the feature store.

Every error derives from :class:`FeatureStoreError` and from the builtin it resembles, so callers can catch
either ``FeatureStoreError`` (everything from us) or e.g. ``ValueError`` (bad input). The CLI catches
``FeatureStoreError`` once, prints the message and exits 1.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base class of every error the feature store raises on purpose."""


class InvalidNameError(FeatureStoreError, ValueError):
    """A feature set or model name that is not a safe identifier."""


class FeatureSetNotFoundError(FeatureStoreError, LookupError):
    """No feature set (or version) of that name in the store."""

    def __str__(self) -> str:  # LookupError would otherwise repr-quote the message
        return str(self.args[0]) if self.args else ""


class ValidationError(FeatureStoreError, ValueError):
    """Rows that cannot be written: wrong dim, NaN/inf, null or duplicate keys, wrong dtype."""


class SpecMismatchError(FeatureStoreError, ValueError):
    """An append whose encoder spec (or key columns, dim, dtype) differs from the target version's."""


class LockTimeoutError(FeatureStoreError, TimeoutError):
    """Another process holds a feature set's write lock for longer than we were told to wait."""


class ReadOnlyQueryError(FeatureStoreError, PermissionError):
    """A statement other than SELECT/EXPLAIN sent to a read-only SQL connection."""


class QueryTimeoutError(FeatureStoreError, TimeoutError):
    """A query that ran past its ``timeout`` and was interrupted."""


class UnknownEncoderError(FeatureStoreError, LookupError):
    """An encoder id whose registry key is not registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EncoderNotAvailableError(FeatureStoreError, RuntimeError):
    """An encoder whose library or model files are not installed here."""


class MissingDependencyError(EncoderNotAvailableError, ImportError):
    """An optional library that is not installed; the message names the extra that installs it."""


class ModelNotFoundError(FeatureStoreError, FileNotFoundError):
    """No saved model of that name in the store, or one without the split `stack train` saves beside it."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class CorruptStoreError(FeatureStoreError, RuntimeError):
    """Files that disagree with their manifest (missing partition, wrong checksum or row count)."""


class ImageDecodeError(FeatureStoreError, ValueError):
    """An image that cannot be decoded; ``reason`` says why in a few words ("truncated", "not an image"...).

    ``args`` are exactly ``(reason, source)`` so the error pickles back whole from a DataLoader worker process.
    """

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(reason, source)
        self.reason = reason
        self.source = source

    def __str__(self) -> str:
        return self.reason if self.source is None else f"{self.reason}: {self.source}"

"""Errors raised by the feature store.

Every error the three packages raise on purpose derives from :class:`FeatureStoreError` and from the builtin it
resembles, so callers can catch either ``FeatureStoreError`` (everything from us) or e.g. ``ValueError`` (bad input).
The CLI maps these classes to messages and exit codes (``FeatureStoreError``: 1) and shows a traceback for anything
else, which is a bug. ``stackers.errors`` adds the learning layer's own (a corrupt saved model, missing label keys).
A test walks the packages and fails on a ``raise`` of a bare builtin error.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base class of every error the feature store raises on purpose."""

    def __str__(self) -> str:
        # The message as given: KeyError and LookupError would repr-quote it, FileNotFoundError would format it as
        # (errno, strerror).
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class InvalidNameError(FeatureStoreError, ValueError):
    """A feature set or model name that is not a safe identifier."""


class FeatureSetNotFoundError(FeatureStoreError, LookupError):
    """No feature set (or version) of that name in the store."""



class ValidationError(FeatureStoreError, ValueError):
    """Input that fails a check: rows that cannot be written (wrong dim, NaN/inf, null or duplicate keys, wrong
    dtype), arrays or tables of the wrong shape, unknown columns or options, values out of range."""


class InvalidTypeError(ValidationError, TypeError):
    """An argument of the wrong type (a ``ValueError`` and a ``TypeError``, as scikit-learn's parameter errors)."""


class InvalidParameterError(ValidationError, TypeError):
    """A parameter has a value outside its constraints (a ValueError and a TypeError, as in scikit-learn)."""


class InvalidIndexError(FeatureStoreError, IndexError):
    """An index or mask that does not fit what it indexes."""


class UnknownNameError(FeatureStoreError, KeyError):
    """A name (a model in a comparison, a block) that is not among the known ones; the message lists them."""



class TargetExistsError(FeatureStoreError, FileExistsError):
    """A write refused because something that is not ours to replace is already at the target path."""


class MissingFileError(FeatureStoreError, FileNotFoundError):
    """A file the caller named (labels, keys, interactions) that does not exist."""



class UsageError(FeatureStoreError, RuntimeError):
    """A call made out of order (a step used before the one that must come first), or a plug-in breaking its contract."""


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



class EncoderNotAvailableError(FeatureStoreError, RuntimeError):
    """An encoder whose library or model files are not installed here."""


class MissingDependencyError(EncoderNotAvailableError, ImportError):
    """An optional library that is not installed; the message names the extra that installs it."""


class ModelNotFoundError(FeatureStoreError, FileNotFoundError):
    """No saved model of that name in the store, or one without the split `stack train` saves beside it."""



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

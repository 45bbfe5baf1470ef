"""Zero-shot classification of stored image vectors through the text tower of the same CLIP model.

Class names go through prompt templates ("a photo of a {}."), the text tower embeds every prompt, and each class is
the renormalised mean of its prompts' unit vectors (the prompt ensembling of Radford et al. 2021). An image's class
scores are its cosine to each class vector times CLIP's logit scale, and a softmax gives probabilities. No label is
learned from: ``fit`` only records which classes exist and embeds their prompts, so the classifier is a baseline any
trained model must beat, and its scores (``transform``) are a block a stacker can weigh against trained probes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featurestore.errors import ValidationError
from featurestore.utils import Constraint, InstanceOf, Interval, unit_rows, validate_params

__all__ = ["ZeroShotClassifier", "DEFAULT_TEMPLATES"]

#: A few of CLIP's ImageNet prompts; domain words ("a photo of the handwritten digit {}.") usually help more than many.
DEFAULT_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}.",
                     "a photo of the small {}.", "a photo of the large {}.")


class _Templates(Constraint):
    """A non-empty sequence of strings, each with one ``{}`` for the class name."""

    def is_satisfied_by(self, value: Any) -> bool:
        return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
                and all(isinstance(t, str) and t.count("{}") == 1 for t in value))

    def __str__(self) -> str:
        return 'a non-empty list of strings, each with one "{}" for the class name'


class _TextEncoder(Constraint):
    """An encoder id (str) or an object with ``encode(texts)``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) or callable(getattr(value, "encode", None))

    def __str__(self) -> str:
        return "an encoder id (str, e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k') or an object with encode(texts)"


class ZeroShotClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """CLIP zero-shot classifier over image vectors.

    Parameters
    ----------
    text_encoder : str or encoder
        The text tower of the model that made the image vectors: an encoder id (``"open_clip:<arch>/<tag>"`` is
        built with ``modality="text"``) or any object with ``encode(texts) -> (n, dim)``.
    class_names : dict or None
        Label -> the words put into the templates (``{3: "three"}``); labels not named are used as ``str(label)``.
    templates : sequence of str
        Prompt templates, each with one ``{}``.
    logit_scale : float
        Multiplies cosines before the softmax: CLIP's learned temperature is 100.

    ``fit(X, y)`` reads only the set of labels in ``y`` (and ``X``'s width, checked against the text tower's):
    no parameter is learned from the labelled rows.
    """

    _parameter_constraints = {
        "text_encoder": [_TextEncoder()],
        "class_names": [InstanceOf(Mapping, "a dict of label -> name"), None],
        "templates": [_Templates()],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, text_encoder: Any = None, class_names: Mapping[Any, str] | None = None,
                 templates: Sequence[str] = DEFAULT_TEMPLATES, logit_scale: float = 100.0):
        self.text_encoder = text_encoder
        self.class_names = class_names
        self.templates = templates
        self.logit_scale = logit_scale

    @classmethod
    def for_feature_set(cls, store: Any, name: str, *, version: int | None = None, **params: Any) -> "ZeroShotClassifier":
        """A classifier whose text tower is the one of the model that wrote feature set ``name`` (image vectors of
        an ``open_clip`` encoder); refused, with the reason, for a set of any other encoder."""
        spec = store.get(name, version).manifest.spec
        if spec.get("library") != "open_clip" or spec.get("modality", "image") != "image":
            raise ValidationError(f"Feature set {name!r} holds {spec.get('modality', '?')} vectors of encoder "
                             f"{spec.get('encoder')!r}; zero-shot needs the image vectors of an open_clip model, whose "
                             "text tower embeds the class prompts.")
        from featurestore.encoders import get_encoder

        text = get_encoder(spec["encoder"], modality="text")
        if text.spec().get("space") != spec.get("space"):
            raise ValidationError(f"The text tower of {spec['encoder']!r} here is not the model that wrote {name!r} "
                             f"(space {text.spec().get('space')!r} vs {spec.get('space')!r}): other weights.")
        return cls(text_encoder=text, **params)

    def _encoder(self) -> Any:
        if isinstance(self.text_encoder, str):
            from featurestore.encoders import get_encoder

            return get_encoder(self.text_encoder, modality="text")
        return self.text_encoder

    def fit(self, X, y) -> "ZeroShotClassifier":
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        names = dict(self.class_names or {})
        self.prompts_ = [[t.format(names.get(c, str(c))) for t in self.templates] for c in self.classes_]
        flat = [p for prompts in self.prompts_ for p in prompts]
        vectors = np.asarray(self._encoder().encode(flat), dtype=np.float64)
        if vectors.shape != (len(flat), X.shape[1]):
            raise ValidationError(f"The text tower gives vectors of shape {vectors.shape[1:]} but X has {X.shape[1]} "
                             "features: X must be image vectors of the same CLIP model.")
        unit = unit_rows(np.asarray(vectors, dtype=np.float64), copy=True)
        per_class = unit.reshape(len(self.classes_), len(self.templates), -1).mean(axis=1)
        self.class_embeddings_ = unit_rows(per_class, copy=True)
        return self

    def decision_function(self, X) -> np.ndarray:
        """``logit_scale`` x cosine of each row to each class (columns in ``classes_`` order)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.logit_scale * (unit_rows(np.asarray(X, dtype=np.float64), copy=True) @ self.class_embeddings_.T)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def transform(self, X) -> np.ndarray:
        """The class logits, a block for a stacker (``blocks["zero_shot"] = zs.transform(blocks["clip"])``)."""
        return self.decision_function(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray([f"zero_shot:{c}" for c in self.classes_], dtype=object)

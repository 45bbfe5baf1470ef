"""Stored features as training data: joins by key into a ``TrainingSet``, predictions and OOF scores to and from the
store (``predict_from_store(model, store, ...)``, ``write_oof(model, store, ...)``)."""

from stackers.data._join import MissingKeysWarning, TrainingSet, join, read_labels
from stackers.data._store_io import StaleFeatureSetWarning, predict_from_store, write_oof

__all__ = ["MissingKeysWarning", "StaleFeatureSetWarning", "TrainingSet", "join", "predict_from_store", "read_labels",
           "write_oof"]

"""What a StackingClassifier accepts: one 2-D array, a dict of named blocks, or a ``TrainingSet``; checked once.

A model fitted on several named blocks refuses one plain array at prediction (it would be cut into blocks by
column position alone) and says how to pass the blocks by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.sparse import issparse
from sklearn.utils.validation import check_array, check_consistent_length, column_or_1d, validate_data

from featurestore.errors import ValidationError
from stackers.data._join import TrainingSet

ARRAY_BLOCK = "x"  # the block name given to a plain 2-D array


def is_block_dict(X) -> bool:
    # scipy's dok sparse matrices are dicts too; they go down the array path and fail there with a clear message.
    return isinstance(X, Mapping) and not issparse(X)


def fit_inputs(est, X, y, groups):
    """Blocks, y, groups, columns and provenance from an array, a dict of blocks or a TrainingSet."""
    sources, key, columns, is_array = {}, [], None, False
    if isinstance(X, TrainingSet):
        blocks = dict(X.blocks)
        y = X.y if y is None else y
        groups = X.groups if groups is None else groups
        columns, sources, key = X.columns, X.sources, X.key
    elif is_block_dict(X):
        blocks = dict(X)
    else:
        X, y = validate_data(est, X, y, dtype=[np.float64, np.float32])
        blocks, is_array = {ARRAY_BLOCK: X}, True
    if not is_array:
        if y is None:
            raise ValidationError(f"{type(est).__name__} requires y to be passed, but the target y is None.")
        if not blocks:
            raise ValidationError("Pass at least one block of features.")
        blocks = {
            str(n): check_array(b, dtype=[np.float64, np.float32], input_name=f"block {n!r}")
            for n, b in blocks.items()
        }
        y = column_or_1d(y, warn=True)
        check_consistent_length(y, *blocks.values())
        est.n_features_in_ = int(sum(b.shape[1] for b in blocks.values()))
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    if groups is not None:
        groups = column_or_1d(groups)
        check_consistent_length(y, groups)
    if columns is not None and len(columns.columns) == 0:
        columns = None
    return blocks, y, groups, columns, dict(sources), list(key)

def predict_inputs(est, X) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    if isinstance(X, TrainingSet):
        blocks, columns = X.blocks, X.columns
    elif is_block_dict(X):
        blocks, columns = dict(X), None
    else:
        if len(est.blocks_) > 1:
            raise ValidationError(named_blocks_message(est, X))
        X = validate_data(est, X, dtype=[np.float64, np.float32], reset=False)
        return {next(iter(est.blocks_)): X}, None
    absent = [n for n in est.blocks_ if n not in blocks]
    if absent:
        raise ValidationError(f"Missing block(s) {absent}; this model was fitted on blocks {list(est.blocks_)}.")
    out = {}
    for name, dim in est.blocks_.items():
        b = check_array(blocks[name], dtype=[np.float64, np.float32], input_name=f"block {name!r}")
        if b.shape[1] != dim:
            raise ValidationError(
                f"Block {name!r} has {b.shape[1]} features, but {type(est).__name__} is expecting {dim} "
                "features as input."
            )
        out[name] = b
    check_consistent_length(*out.values())
    return out, columns

def named_blocks_message(est, X) -> str:
    """Why a model fitted on several named blocks refuses one plain array, and how to pass the blocks."""
    name, n_features = type(est).__name__, est.n_features_in_
    shape = getattr(X, "shape", None) or np.shape(X)
    blocks = "{" + ", ".join(f"{b!r}: {d}" for b, d in est.blocks_.items()) + "}"
    example = "{" + ", ".join(f"{b!r}: X_{i}" for i, b in enumerate(est.blocks_)) + "}"
    if len(shape) == 2 and shape[1] != n_features:
        head = f"X has {shape[1]} features, but {name} is expecting {n_features} features as input"
    else:
        head = f"A plain array of shape {tuple(shape)} cannot be split safely"
    return (f"{head}: this {name} was fitted on {len(est.blocks_)} named blocks {blocks}, and one array would "
            f"be cut into them by column position alone. Pass the blocks by name: a dict {example} or a "
            "TrainingSet (from stackers.join).")


def target_blocks(est, target) -> dict[str, np.ndarray]:
    """The target domain's blocks, checked against the training blocks' names and dims."""
    if isinstance(target, TrainingSet):
        target = target.blocks
    elif not is_block_dict(target):
        if len(est.blocks_) > 1:
            raise ValidationError(f"target must name its blocks like X: a dict or a TrainingSet with the blocks "
                             f"{list(est.blocks_)}; got a plain {type(target).__name__}.")
        target = {next(iter(est.blocks_)): target}
    absent = [n for n in est.blocks_ if n not in target]
    if absent:
        raise ValidationError(f"target lacks block(s) {absent}; align={est.align!r} needs unlabelled target rows of "
                         f"every block {list(est.blocks_)}.")
    out = {}
    for name, dim in est.blocks_.items():
        T = check_array(target[name], dtype=[np.float64, np.float32], input_name=f"target block {name!r}")
        if T.shape[0] < 2:
            raise ValidationError(f"target block {name!r} has {T.shape[0]} row; align={est.align!r} needs at least 2 "
                             "to estimate the target domain's covariance.")
        if T.shape[1] != dim:
            raise ValidationError(f"target block {name!r} has {T.shape[1]} features, but the training block has {dim}.")
        out[name] = T
    return out

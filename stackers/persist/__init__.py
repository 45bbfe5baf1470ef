"""Saved models as plain files: a crash-safe model folder, checked ``.npz`` arrays, checked LightGBM text.

What every model kind shares (``classify._format`` and ``recommend._format`` hold each kind's own fields): the folder
is installed atomically and recovered after a kill (``_folder``), arrays are checked in their headers before they are
read (``_npz``), a booster's text is checked before LightGBM parses it (``_lgbm_text``), and the feature sets a model
uses are recorded as ``featurestore``'s use record, which ``drop`` reads.
"""

from stackers.persist._folder import (
    LEFTOVER,
    MANIFEST,
    MODEL_FORMATS,
    RECOMMENDER_FORMAT,
    STACKER_FORMAT,
    check_target,
    find_model,
    install_folder,
    json_default,
    leftovers,
    library_versions,
    manifest_text,
    read_manifest,
    recover,
    regular_file,
)
from stackers.persist._lgbm_text import MAX_LEAVES, check_model_text, read_model_text
from stackers.persist._npz import FLOAT, ID, INT, Layout, read_npz, shape_text, write_npz
from stackers.persist._save import ARRAYS, save_folder

__all__ = [
    "ARRAYS",
    "FLOAT",
    "ID",
    "INT",
    "LEFTOVER",
    "Layout",
    "MANIFEST",
    "MAX_LEAVES",
    "MODEL_FORMATS",
    "RECOMMENDER_FORMAT",
    "STACKER_FORMAT",
    "check_model_text",
    "check_target",
    "find_model",
    "install_folder",
    "json_default",
    "leftovers",
    "library_versions",
    "manifest_text",
    "read_manifest",
    "read_model_text",
    "read_npz",
    "recover",
    "regular_file",
    "save_folder",
    "shape_text",
    "write_npz",
]

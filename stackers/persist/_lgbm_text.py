"""Check a LightGBM model text in Python before LightGBM parses it.

LightGBM's text parser trusts its input. Measured with lightgbm 4.7 on a saved meta learner, one edited field is
enough to take the whole process down instead of raising:

- ``tree_sizes`` that do not match the tree blocks, a truncated array (``leaf_value=1 2`` for 3 leaves), a huge or
  negative ``num_leaves``, a non-number: abort (SIGABRT) -- the error is thrown inside an OpenMP loop;
- ``split_feature`` or a child index out of range: SIGSEGV at the first prediction;
- ``num_tree_per_iteration=0``: SIGFPE; a child pointing back up the tree: an endless prediction loop;
- a wrong ``num_class`` loads and predicts silently with the wrong number of columns.

:func:`check_model_text` walks the text the way LightGBM's ``GBDT::LoadModelFromString`` and ``Tree::Tree`` read it
and requires every field they index with to be in range, so that whatever passes is safe to hand to LightGBM.
Anything else is a ``CorruptModelError`` (a ``ValueError``) that names the file and what is wrong.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from stackers.errors import CorruptModelError
from stackers.persist._folder import regular_file

__all__ = ["check_model_text", "read_model_text", "MAX_LEAVES"]

MAX_LEAVES = 131072  # LightGBM's own upper bound on num_leaves
_INT_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_INTS = re.compile(r"(?:-?[0-9]{1,10}(?: -?[0-9]{1,10})*)?", re.ASCII)
_FLOATS = re.compile(r"(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                     r"(?: [+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)*)?", re.ASCII)
_TREE_LINE = re.compile(r"^Tree=", re.M)
_END_OF_TREES = re.compile(r"^end of trees$", re.M)
_PARAM_LINE = re.compile(r"\[[a-z0-9_]+: [^\n]*\]", re.ASCII)
_VERSION = re.compile(r"v[0-9]{1,3}", re.ASCII)
_FLOAT_ONE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

# Fields of a Tree= block: (kind, length), length "n" = num_leaves, "n-1" = internal nodes. Linear trees (leaf_const,
# leaf_coeff, ...) are never trained here and are refused with is_linear != 0.
_TREE_FIELDS = {
    **dict.fromkeys(("num_leaves", "num_cat", "is_linear"), ("int", None)),
    "shrinkage": ("float", None),
    **dict.fromkeys(("leaf_value", "leaf_weight"), ("floats", "n")),
    "leaf_count": ("ints", "n"),
    **dict.fromkeys(("split_gain", "threshold", "internal_value", "internal_weight"), ("floats", "n-1")),
    **dict.fromkeys(("split_feature", "decision_type", "left_child", "right_child", "internal_count"), ("ints", "n-1")),
    **dict.fromkeys(("cat_boundaries", "cat_threshold"), ("ints", None)),
}
_REQUIRED = ("num_leaves", "num_cat", "leaf_value")
# What LightGBM writes above the trees for the meta learner's models (no average_output, monotone_constraints...).
_HEADER_FIELDS = {"version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
                  "feature_names", "feature_infos", "tree_sizes"}
_REQUIRED_SPLITS = ("split_feature", "threshold", "left_child", "right_child")  # when num_leaves > 1


class _Bad(Exception):
    """What is wrong, without the file name (added once, by check_model_text)."""


def check_model_text(text: str, *, n_features: int, n_classes: int, max_trees: int, max_leaves: int = MAX_LEAVES,
                     source: str = "model text", objective: str | None = None) -> None:
    """Raise ``CorruptModelError`` unless ``text`` is a LightGBM model LightGBM can load and predict with safely.

    ``n_features`` and ``n_classes`` are what the meta learner feeds and expects (a binary model has one tree per
    iteration); ``max_trees`` and ``max_leaves`` bound the trees; ``source`` names the file in the message.
    ``objective``: the exact objective line expected (``"lambdarank"`` for a ranker); by default a classifier's
    (``binary sigmoid:<number>`` or ``multiclass num_class:<k>``).
    """
    try:
        _check(text, n_features=n_features, n_classes=n_classes, max_trees=max_trees, max_leaves=max_leaves,
               objective=objective)
    except _Bad as exc:
        raise CorruptModelError(f"{source} is not a LightGBM model this stacker can load: {exc}.") from None


def read_model_text(file: Path, *, n_features: int, n_classes: int, max_trees: int, max_leaves: int = MAX_LEAVES,
                    objective: str | None = None, kind: str = "LightGBM") -> str:
    """A saved model's LightGBM text, bounded in size and checked by :func:`check_model_text` before anything parses
    it (a meta learner's or a ranker's: every model kind reads its booster through here).

    ``objective``: the one objective the text must name (``"lambdarank"``), ``kind`` what to call such a model.
    """
    size = regular_file(file).st_size
    # A generous bound for trees of at most max_leaves leaves: a 15-leaf tree takes about 1.2 KB.
    limit = (1 << 20) + max_trees * (2048 + 1024 * max_leaves)
    if size > limit:
        raise CorruptModelError(f"{str(file)!r} is {size:,} bytes; {max_trees} trees of at most {max_leaves} leaves "
                                f"take at most {limit:,}.")
    raw = file.read_bytes()
    if not raw.isascii():
        raise CorruptModelError(f"{str(file)!r} is not a LightGBM model this stacker can load: it holds non-ASCII "
                                "bytes.")
    text = raw.decode("ascii").replace("\r\n", "\n")  # a model saved on Windows by an older stackers
    if objective is not None and len(re.findall(rf"(?m)^objective={re.escape(objective)}$", text)) != 1:
        raise CorruptModelError(f"{str(file)!r} is not a {kind} model (no single 'objective={objective}' line).")
    check_model_text(text, n_features=n_features, n_classes=n_classes, max_trees=max_trees, max_leaves=max_leaves,
                     source=repr(str(file)), objective=objective)
    return text


def _check(text: str, *, n_features: int, n_classes: int, max_trees: int, max_leaves: int,
           objective: str | None) -> None:
    if not isinstance(text, str):
        raise _Bad(f"expected text, got {type(text).__name__}")
    if not text.isascii():
        raise _Bad("it holds non-ASCII characters")
    if "\x00" in text or "\r" in text:
        raise _Bad("it holds NUL or carriage-return characters")
    first = _TREE_LINE.search(text)
    if first is None:
        raise _Bad("it holds no 'Tree=' block")
    end = _END_OF_TREES.search(text, first.start())
    if end is None:
        raise _Bad("it has no 'end of trees' line after its trees (truncated?)")

    header = _header(text[: first.start()])
    k = 1 if n_classes <= 2 else n_classes
    n_feat = _header_int(header, "max_feature_idx", 0, _INT_MAX) + 1
    if n_feat != n_features:
        raise _Bad(f"it reads {n_feat} features (max_feature_idx={n_feat - 1}) but the meta learner has {n_features}")
    for key in ("num_class", "num_tree_per_iteration"):
        got = _header_int(header, key, 1, _INT_MAX)
        if got != k:
            raise _Bad(f"{key}={got}, expected {k} for a {n_classes}-class model")
    if _header_int(header, "label_index", 0, _INT_MAX) != 0:
        raise _Bad("label_index must be 0")
    if not _VERSION.fullmatch(header.get("version", "")):
        raise _Bad(f"version={header.get('version')!r}, expected e.g. 'v4'")
    got = header.get("objective", "")
    if objective is not None:
        ok, want = got == objective, objective
    elif n_classes <= 2:
        m = re.fullmatch(r"binary sigmoid:(\S+)", got)
        ok = m is not None and _FLOAT_ONE.fullmatch(m.group(1)) is not None and 0 < float(m.group(1)) < math.inf
        want = "binary sigmoid:<number>"
    else:
        ok, want = got == f"multiclass num_class:{n_classes}", f"multiclass num_class:{n_classes}"
    if not ok:
        raise _Bad(f"objective={got!r}, expected {want!r}")
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise _Bad(f"its header has field(s) {unknown[:5]} that the meta learner never writes")
    for key in ("feature_names", "feature_infos"):
        if key not in header:
            raise _Bad(f"its header has no {key}")
        tokens = header[key].split(" ")
        if len(tokens) != n_feat or not all(tokens):
            raise _Bad(f"{key} has {len(tokens)} entries, expected {n_feat}")
    if "tree_sizes" not in header or not _INTS.fullmatch(header["tree_sizes"]) or not header["tree_sizes"]:
        raise _Bad("its header has no valid tree_sizes")
    sizes = [int(s) for s in header["tree_sizes"].split(" ")]

    trees = text[first.start(): end.start()]
    starts = [m.start() for m in _TREE_LINE.finditer(trees)] + [len(trees)]
    n_trees = len(starts) - 1
    if n_trees != len(sizes):
        raise _Bad(f"it holds {n_trees} Tree= blocks but tree_sizes lists {len(sizes)}")
    if n_trees % k or not k <= n_trees <= max_trees:
        raise _Bad(f"it holds {n_trees} trees; expected a multiple of {k} between {k} and {max_trees}")
    for i in range(n_trees):
        block = trees[starts[i]: starts[i + 1]]
        if len(block) != sizes[i]:
            raise _Bad(f"Tree={i} is {len(block)} bytes long but tree_sizes says {sizes[i]}")
        try:
            _check_tree(block, i, n_feat, max_leaves)
        except _Bad as exc:
            raise _Bad(f"Tree={i}: {exc}") from None
    _check_tail(text[end.end():])


def _header(text: str) -> dict[str, str]:
    lines = text.split("\n")
    if lines[0] != "tree":
        raise _Bad(f"its first line is {lines[0][:40]!r}, expected 'tree'")
    out: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq or "=" in value:
            raise _Bad(f"header line {line[:60]!r} is not key=value")
        if key in out:
            raise _Bad(f"header field {key!r} appears twice")
        out[key] = value
    return out


def _header_int(header: dict[str, str], key: str, low: int, high: int) -> int:
    value = header.get(key)
    if value is None:
        raise _Bad(f"its header has no {key}")
    if not re.fullmatch(r"-?[0-9]{1,10}", value, re.ASCII) or not low <= int(value) <= high:
        raise _Bad(f"{key}={value[:40]!r} is not an integer in [{low}, {high}]")
    return int(value)


def _ints(key: str, value: str, low: int, high: int) -> list[int]:
    if not _INTS.fullmatch(value):
        raise _Bad(f"{key} is not a list of integers")
    out = [int(v) for v in value.split(" ")] if value else []
    bad = next((v for v in out if not low <= v <= high), None)
    if bad is not None:
        raise _Bad(f"{key} holds {bad}, outside [{low}, {high}]")
    return out


def _floats(key: str, value: str) -> list[float]:
    if not _FLOATS.fullmatch(value):
        raise _Bad(f"{key} is not a list of numbers")
    out = [float(v) for v in value.split(" ")] if value else []
    if not all(map(math.isfinite, out)):
        raise _Bad(f"{key} holds a value that is not a finite number")
    return out


def _check_tree(block: str, index: int, n_feat: int, max_leaves: int) -> None:
    lines = block.split("\n")
    if lines[0] != f"Tree={index}":
        raise _Bad(f"the block starts with {lines[0][:40]!r}, expected 'Tree={index}'")
    fields: dict[str, str] = {}
    i = 1
    while i < len(lines) and lines[i]:
        key, eq, value = lines[i].partition("=")
        if not eq or "=" in value:
            raise _Bad(f"line {lines[i][:60]!r} is not key=value")
        if key not in _TREE_FIELDS:
            raise _Bad(f"unknown field {key!r}")
        if key in fields:
            raise _Bad(f"field {key!r} appears twice")
        fields[key] = value
        i += 1
    if i == len(lines) or any(lines[i:]):
        raise _Bad("its fields must end with an empty line, and nothing may follow it but empty lines")
    missing = [f for f in _REQUIRED if f not in fields]
    if missing:
        raise _Bad(f"missing field(s) {missing}")

    n = _ints("num_leaves", fields["num_leaves"], 1, max_leaves)
    if len(n) != 1:
        raise _Bad("num_leaves must be one integer")
    n = n[0]
    if fields.get("is_linear", "0") != "0":
        raise _Bad(f"is_linear={fields['is_linear'][:20]!r}: linear trees are never trained here")
    if "shrinkage" in fields and len(_floats("shrinkage", fields["shrinkage"])) != 1:
        raise _Bad("shrinkage must be one number")
    num_cat = _ints("num_cat", fields["num_cat"], 0, max(n - 1, 0))
    if len(num_cat) != 1:
        raise _Bad("num_cat must be one integer")
    num_cat = num_cat[0]

    arrays: dict[str, list] = {}
    for key, (kind, length) in _TREE_FIELDS.items():
        if length is None or key not in fields:
            continue
        if kind == "floats":
            values = _floats(key, fields[key])
        elif key == "split_feature":
            values = _ints(key, fields[key], 0, n_feat - 1)
        elif key == "decision_type":
            values = _ints(key, fields[key], 0, 15)
        else:
            values = _ints(key, fields[key], -_INT_MAX, _INT_MAX)
        want = n if length == "n" else n - 1
        if n == 1 and key != "leaf_value":
            ok = len(values) <= 1  # a one-leaf tree: LightGBM reads only leaf_value (writes leaf_count=<rows>)
        else:
            ok = len(values) == want
        if not ok:
            raise _Bad(f"{key} has {len(values)} values; {n} leaves need {want}")
        arrays[key] = values
    if n == 1:
        return
    missing = [f for f in _REQUIRED_SPLITS if f not in fields]
    if missing:
        raise _Bad(f"a tree with {n} leaves needs field(s) {missing}")

    _check_structure(arrays["left_child"], arrays["right_child"], n)
    decision = arrays.get("decision_type", [0] * (n - 1))
    if any((d >> 2) & 3 == 3 for d in decision):
        raise _Bad("decision_type holds an unknown missing-value type")
    categorical = [j for j, d in enumerate(decision) if d & 1]
    if num_cat == 0:
        if categorical:
            raise _Bad(f"node {categorical[0]} is a categorical split but num_cat=0")
        return
    for key in ("cat_boundaries", "cat_threshold"):
        if key not in fields:
            raise _Bad(f"num_cat={num_cat} needs field {key!r}")
    bounds = _ints("cat_boundaries", fields["cat_boundaries"], 0, _INT_MAX)
    bits = _ints("cat_threshold", fields["cat_threshold"], 0, _UINT32_MAX)
    if len(bounds) != num_cat + 1 or bounds[0] != 0 or any(a > b for a, b in zip(bounds, bounds[1:])):
        raise _Bad(f"cat_boundaries must be {num_cat + 1} non-decreasing integers starting at 0")
    if bounds[-1] != len(bits):
        raise _Bad(f"cat_threshold has {len(bits)} values but cat_boundaries ends at {bounds[-1]}")
    for j in categorical:
        t = arrays["threshold"][j]
        if t != int(t) or not 0 <= t < num_cat:
            raise _Bad(f"categorical node {j} has threshold {t}, expected a category index in [0, {num_cat - 1}]")


def _check_structure(left: list[int], right: list[int], n: int) -> None:
    """Every node and leaf reached exactly once from the root: a tree, with no cycle or shared subtree."""
    node_seen = [False] * (n - 1)
    leaf_seen = [False] * n
    node_seen[0] = True
    stack = [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child >= n - 1:
                    raise _Bad(f"node {node} has child {child}; there are {n - 1} internal nodes")
                if node_seen[child]:
                    raise _Bad(f"node {child} is reached twice (a cycle or a shared subtree)")
                node_seen[child] = True
                stack.append(child)
            else:
                leaf = ~child
                if leaf >= n:
                    raise _Bad(f"node {node} has child {child}, leaf {leaf}; there are {n} leaves")
                if leaf_seen[leaf]:
                    raise _Bad(f"leaf {leaf} is reached twice")
                leaf_seen[leaf] = True
    if not all(node_seen) or not all(leaf_seen):
        raise _Bad("some nodes or leaves are not reachable from the root")


def _check_tail(text: str) -> None:
    """After 'end of trees': LightGBM reads the parameters section; its Python side reads pandas_categorical."""
    in_params = False
    for line in text.split("\n"):
        if line == "parameters:":
            in_params = True
        elif line == "end of parameters":
            in_params = False
        elif in_params and line and not _PARAM_LINE.fullmatch(line):
            raise _Bad(f"parameters line {line[:60]!r} is not '[name: value]'")
        elif line.startswith("pandas_categorical:") and line != "pandas_categorical:null":
            raise _Bad("pandas_categorical must be null: the meta learner is trained on arrays, not DataFrames")
        elif line.startswith("Tree="):
            raise _Bad("a 'Tree=' line follows 'end of trees'")

"""The docs name only what exists: every repository path (``featurestore/search/_ann.py``, ``tests/...``) and every
dotted module (``featurestore.storage._layout``) in README.md, ARCHITECTURE.md and the benchmark results is in the
tree. A moved or renamed module with a stale mention turns this red."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "ARCHITECTURE.md", "benchmarks/RESULTS.md"]
TOPS = ("featurestore", "stackers", "pipelines", "tests", "benchmarks", "docs")
_PATH = re.compile(r"(?<![\w./<-])((?:" + "|".join(TOPS) + r")/[A-Za-z0-9_./-]*[A-Za-z0-9_])")
_MODULE = re.compile(r"(?<![\w./<-])((?:featurestore|stackers|pipelines)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


#: dotted names that are not Python: the store's marker file and the Parquet metadata keys
NOT_MODULES = {"featurestore.json", "featurestore.spec", "featurestore.provenance", "featurestore.set"}


def _mentions(pattern: re.Pattern, text: str) -> set[str]:
    return {m.group(1) for m in pattern.finditer(text)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_names_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = sorted(p for p in _mentions(_PATH, text) if not (ROOT / p).exists() and "*" not in p)
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    """A module, or an attribute of one (``featurestore.storage.to_table``, ``stackers.load``), that exists."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            if i == len(parts):
                return True
            obj = importlib.import_module(module)
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_every_module_a_doc_names_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = sorted(m for m in _mentions(_MODULE, text) - NOT_MODULES if not _resolves(m))
    assert not missing, f"{doc} names modules or attributes that do not exist: {missing}"

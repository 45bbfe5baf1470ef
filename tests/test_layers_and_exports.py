"""The public surface: every exported name exists, imports stay light, layers import only downwards."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"featurestore": set(), "stackers": {"featurestore"}, "pipelines": {"featurestore", "stackers"}}


@pytest.mark.parametrize("package", ["featurestore", "featurestore.encoders", "stackers", "pipelines"])
def test_every_name_in_all_exists(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("package", ["featurestore", "pipelines"])
def test_import_does_not_pull_in_deep_learning(package):
    code = (f"import sys, {package}; heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', "
            f"'onnxruntime', 'lightgbm', 'matplotlib') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_import_only_downwards(package):
    allowed = LAYERS[package] | {package}
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS and top not in allowed:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders


def test_the_local_engine_never_imports_ray(tmp_path):
    """Ray is for `engine="ray"` only: `import featurestore` and a whole local embedding job never import it."""
    code = ("import sys, featurestore, pipelines, pyarrow as pa; assert 'ray' not in sys.modules, 'on import'; "
            "pipelines.embed(sys.argv[1], pa.table({'id': [1, 2], 'text': ['a b', 'c']}), encoder='hash:8', "
            "name='t', progress=False); assert 'ray' not in sys.modules, 'in a local job'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], check=True, cwd=ROOT, timeout=120)

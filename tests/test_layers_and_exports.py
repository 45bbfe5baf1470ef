"""The architecture, checked: every exported name exists, imports stay light, layers import only downwards and only
through public names, no import cycles (lazy imports included), every error raised on purpose is ours, modules stay
small. Each rule is one AST walk over the packages, so breaking it by one line turns its test red."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"featurestore": set(), "stackers": {"featurestore"}, "pipelines": {"featurestore", "stackers"}}


PACKAGES = ("featurestore", "stackers", "pipelines")
PUBLIC_PACKAGES = sorted(
    ".".join(p.relative_to(ROOT).parts[:-1]) for top in PACKAGES for p in (ROOT / top).rglob("__init__.py")
    if not any(part.startswith("_") for part in p.relative_to(ROOT).parts[:-1]))


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
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


# -- the import graph --------------------------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, modules) of every import in the file, lazy ones included; ``if TYPE_CHECKING:`` blocks left out (they
    never run). ``from P import n`` names P and P.n (the module, when n is one)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for sub in node.body for n in ast.walk(sub)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.append((node.lineno, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, [node.module, *(f"{node.module}.{a.name}" for a in node.names)]))
    return out


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:])


@pytest.mark.parametrize("top", ["stackers", "pipelines", "benchmarks"])
def test_upper_layers_use_lower_layers_through_public_names_only(top):
    """``stackers`` reads ``featurestore`` (and ``pipelines`` and the benchmarks read both) through the names their
    packages export, never a private module: what a layer offers the one above is its documented seam."""
    offenders = []
    for path in sorted((ROOT / top).rglob("*.py")):
        for line, modules in _imports(path):
            for m in modules:
                if m.split(".")[0] in PACKAGES and m.split(".")[0] != top and _is_private(m):
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {m}")
    assert not offenders, "\n".join(sorted(set(offenders)))


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules importing it runs: what it names, and the packages above those that are not already
    above the importer (importing ``a.b._c`` runs ``a/b/__init__`` first, which may import back)."""
    modules = _modules()

    def ancestors(m: str) -> set[str]:
        parts = m.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        mine = ancestors(name) | {name}
        for _, targets in _imports(path):
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
                    graph[name] |= {a for a in ancestors(t) - mine if a in modules}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_lazy_imports_included():
    """Engines look jobs up, never the reverse; search's matrix and scoring sit below both exact search and the ANN
    index; encoders never build a Store: no two modules import each other, directly or through others."""
    assert not _cycles(_import_graph())


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a graph with a lazy back edge is a cycle."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# -- errors ------------------------------------------------------------------------------------------------------
_BUILTIN_ERRORS = {"ValueError", "TypeError", "KeyError", "IndexError", "LookupError", "RuntimeError", "OSError",
                   "IOError", "FileNotFoundError", "FileExistsError", "PermissionError", "NotADirectoryError",
                   "IsADirectoryError", "TimeoutError", "ImportError", "Exception"}


def test_every_error_raised_on_purpose_is_a_featurestore_error():
    """``raise ValueError(...)`` is refused: our errors derive from FeatureStoreError and the builtin they resemble
    (``featurestore.errors``, ``stackers.errors``), so the CLI maps classes and a bare builtin reaching it is a bug."""
    offenders = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    func = node.exc.func
                    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                    if name in _BUILTIN_ERRORS:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {name}")
    assert not offenders, "\n".join(offenders)


def test_every_error_class_of_ours_derives_from_featurestore_error():
    import featurestore.errors
    import stackers.errors

    classes = [v for m in (featurestore.errors, stackers.errors) for v in vars(m).values()
               if isinstance(v, type) and issubclass(v, Exception)]
    assert classes and all(issubclass(c, featurestore.errors.FeatureStoreError) for c in classes)


# -- size --------------------------------------------------------------------------------------------------------
MAX_LINES = 450


def test_no_module_is_over_450_lines():
    """A module over 450 lines is doing several jobs: split it along its concepts."""
    long = {str(p.relative_to(ROOT)): n for top in (*PACKAGES, "benchmarks") for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long

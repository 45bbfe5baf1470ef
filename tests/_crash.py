"""Precise kill -9 points for the crash tests, without hooks in library code.

A child process loads this file by path, calls :func:`arm` to wrap one library function so that its Nth matching
call sends SIGKILL to the process (before or after calling the original), then runs one of the :data:`JOBS`. The
parent reruns the same job in-process and checks the store (``tests/test_crash_points.py``,
``tests/test_properties.py``).

Targets are ``"module:qualname"``: ``"os:replace"``, ``"featurestore.storage._writer:Writer.record_errors"``,
``"pyarrow.parquet:write_table"``. A predicate is a Python expression over ``args`` and ``kwargs`` that decides
which calls count (``"str(args[1]).endswith('manifest.json')"``).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
SPEC = {"encoder": "external:crash-test"}
DIM = 16


# -- the child side -----------------------------------------------------------------------------------------------
def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # never reached: SIGKILL cannot be caught


def _resolve(target: str) -> tuple[Any, str]:
    module, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attr


def arm(target: str, n: int, when: str, pred: str | None = None) -> None:
    """Wrap ``target`` so that its ``n``-th call matching ``pred`` kills this process ``when`` ("before"/"after")."""
    if when not in ("before", "after"):
        raise ValueError(f"when must be 'before' or 'after', got {when!r}")
    owner, attr = _resolve(target)
    original = getattr(owner, attr)
    match: Callable[..., bool] | None = eval("lambda *args, **kwargs: " + pred) if pred else None  # noqa: S307
    lock = threading.Lock()
    calls = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        hit = False
        if match is None or match(*args, **kwargs):
            with lock:
                calls += 1
                hit = calls == n
        if hit and when == "before":
            _die()
        result = original(*args, **kwargs)
        if hit and when == "after":
            _die()
        return result

    setattr(owner, attr, wrapper)


def announce_runs() -> None:
    """Print ``RUN <set> <run_id>`` as a writer starts (before it takes the lock and cleans up), so the parent knows
    which runs it killed."""
    from featurestore.storage import _writer

    enter = _writer.Writer.__enter__

    def announcing(self):  # type: ignore[no-untyped-def]
        print("RUN", self.name, self.run_id, flush=True)
        return enter(self)

    _writer.Writer.__enter__ = announcing


PRELUDE = """
import importlib.util, sys
sys.path.insert(0, {root!r})
spec = importlib.util.spec_from_file_location("_fs_crash", {helper!r})
crash = importlib.util.module_from_spec(spec)
sys.modules["_fs_crash"] = crash
spec.loader.exec_module(crash)
crash.announce_runs()
crash.arm({target!r}, {n!r}, {when!r}, {pred!r})
"""


def run_armed(body: str, target: str, n: int, when: str, pred: str | None = None, *, must_die: bool = True,
              timeout: float = 120) -> tuple[bool, str]:
    """Run ``body`` in a fresh interpreter armed to die at the given point. Returns (killed, stdout).

    With ``must_die`` (the default) a child that finishes, or fails otherwise, is an error; without it, finishing
    normally is fine (random kill points may lie past the last call).
    """
    code = PRELUDE.format(root=str(ROOT), helper=str(HERE), target=target, n=n, when=when, pred=pred) + body
    code += "\nprint('COMPLETED', flush=True)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode == -signal.SIGKILL:
        return True, proc.stdout
    if proc.returncode == 0 and not must_die:
        return False, proc.stdout
    reached = "the code completed: the kill point was never reached" if "COMPLETED" in proc.stdout else ""
    raise AssertionError(f"child was not killed at {target} #{n} {when} (rc={proc.returncode}) {reached}\n"
                         f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def run_code_killed(body: str, target: str, n: int, when: str, pred: str | None = None,
                    timeout: float = 120) -> str:
    """Run ``body`` in a fresh interpreter armed to die at the given point; assert it died there. Returns stdout."""
    return run_armed(body, target, n, when, pred, timeout=timeout)[1]


def run_killed(job: str, store_root: Path, data_dir: Path, target: str, n: int, when: str,
               pred: str | None = None, timeout: float = 120) -> list[tuple[str, str]]:
    """Run ``JOBS[job]`` in a child armed to die at the given point; returns (set, run id) of each writer it opened."""
    body = f"import featurestore\ncrash.JOBS[{job!r}](featurestore.open({str(store_root)!r}), {str(data_dir)!r})\n"
    out = run_code_killed(body, target, n, when, pred, timeout=timeout)
    return [tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("RUN ")]


# -- deterministic data -------------------------------------------------------------------------------------------
def vector(key: int, salt: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng([salt, key]).standard_normal(dim).astype(np.float32)


def vec_rows(ids, salt: int = 0, dim: int = DIM) -> dict[str, Any]:
    ids = np.asarray(list(ids), dtype=np.int64)
    return {"id": ids, "embedding": np.stack([vector(int(i), salt, dim) for i in ids]) if len(ids)
            else np.empty((0, dim), np.float32)}


WORDS = ["soft", "cotton", "dress", "tight", "fits", "lovely", "returned", "color", "fabric", "small"]


def review_text(key: int, salt: int = 0) -> str | None:
    """A deterministic review; a few keys get bad text (null or blank) to exercise the errors table."""
    if salt == 0 and key % 37 == 5:
        return None
    if salt == 0 and key % 41 == 7:
        return "   "
    rng = np.random.default_rng([salt, key, 7])
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + f" #{key}"


def write_source(path: Path, ids, salt: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(ids)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                             "review": pa.array([review_text(i, salt) for i in ids], pa.string())}),
                   path, row_group_size=64)
    return path


def source_expectation(path: Path, dim: int = DIM) -> tuple[dict[int, np.ndarray], set[int]]:
    """key -> vector for the source's good rows (what a complete job must hold), and the keys of its bad rows."""
    import pyarrow.parquet as pq

    from featurestore.encoders import get_encoder

    t = pq.read_table(path)
    ids, texts = t.column("id").to_pylist(), t.column("review").to_pylist()
    good = [(k, s) for k, s in zip(ids, texts) if s is not None and s.strip()]
    bad = {k for k, s in zip(ids, texts) if s is None or not s.strip()}
    encoder = get_encoder(f"hash:{dim}")
    vecs = encoder.encode([s for _, s in good]) if good else np.empty((0, dim), np.float32)
    return {k: v for (k, _), v in zip(good, vecs)}, bad


def source_hashes(path: Path, dim: int = DIM) -> dict[int, str]:
    """key -> the content_hash a job stores for each good row (text under the encoder spec's fingerprint)."""
    import pyarrow.parquet as pq

    from featurestore.encoders import get_encoder
    from featurestore.storage import _format as fmt

    t = pq.read_table(path)
    good = [(k, s) for k, s in zip(t.column("id").to_pylist(), t.column("review").to_pylist()) if s is not None and s.strip()]
    hashes = fmt.text_hashes([s for _, s in good], fmt.spec_fingerprint(get_encoder(f"hash:{dim}").spec())).to_pylist()
    return {k: h for (k, _), h in zip(good, hashes)}


# -- the jobs that get killed -------------------------------------------------------------------------------------
# Each job is run once in a child (killed) and once again in the parent (the rerun). ``setup`` prepares the store
# and data before the child starts; ``expected`` is what the store must hold after the rerun:
# {(set name, version or None for latest): {key: vector}}, {set name: bad keys} for the errors view, and
# {set name: {key: content_hash}} where the hash is not simply that of the vector (embedding jobs hash the text).
N_JOB_ROWS = 300


def _setup_session(store, data: Path) -> None:
    store.write("vecs", vec_rows(range(0, 60)), spec=SPEC)


def _job_session(store, data: str) -> None:
    with store.writer("vecs", spec=SPEC) as w:
        for start in range(60, 300, 60):
            w.append(vec_rows(range(start, start + 60)))


def _expected_session(data: Path):
    return {("vecs", None): {k: vector(k) for k in range(300)}}, {}, {}


def _job_fresh(store, data: str) -> None:
    store.write("fresh", vec_rows(range(200)), spec=SPEC)


def _expected_fresh(data: Path):
    return {("fresh", None): {k: vector(k) for k in range(200)}}, {}, {}


def _setup_new_version(store, data: Path) -> None:
    store.write("vecs", vec_rows(range(100)), spec=SPEC)


def _job_new_version(store, data: str) -> None:
    store.write("vecs", vec_rows(range(50, 200), salt=1), spec=SPEC, version="new")


def _expected_new_version(data: Path):
    return {("vecs", 1): {k: vector(k) for k in range(100)},
            ("vecs", None): {k: vector(k, 1) for k in range(50, 200)},
            ("vecs", 2): {k: vector(k, 1) for k in range(50, 200)}}, {}, {}


def _setup_update(store, data: Path) -> None:
    store.write("vecs", vec_rows(range(200)), spec=SPEC)


def _job_update(store, data: str) -> None:
    store.write("vecs", vec_rows(range(100, 300), salt=1), spec=SPEC)  # 100 updated keys, 100 new ones


def _expected_update(data: Path):
    rows = {k: vector(k) for k in range(100)} | {k: vector(k, 1) for k in range(100, 300)}
    return {("vecs", None): rows}, {}, {}


def _setup_embed(store, data: Path) -> None:
    write_source(data / "source.parquet", range(N_JOB_ROWS))


def _job_embed(store, data: str) -> None:
    import pipelines

    pipelines.embed(store, Path(data) / "source.parquet", key="id", text="review", encoder="hash:16", name="r",
                    chunk_rows=25, partition_rows=50, progress=False)


def _expected_embed(data: Path):
    rows, bad = source_expectation(data / "source.parquet")
    return {("r", None): rows}, {"r": bad}, {"r": source_hashes(data / "source.parquet")}


def _job_multi(store, data: str) -> None:
    # The hash encoder has no layers, so embed_layers() refuses it; this is the same one-pass, several-sets
    # runner that embed_layers uses, with two encoders (two feature sets) instead of two layers.
    from featurestore.encoders import get_encoder
    from pipelines.embedding._text import run_text

    targets = [(name, get_encoder(enc), (enc, {})) for name, enc in (("ra", "hash:16"), ("rb", "hash:8"))]
    run_text(store, Path(data) / "source.parquet", targets,
         key="id", text="review", version="auto", chunk_rows=25, partition_rows=50, progress=False,
         on_progress=None, lock_timeout=60.0, limit=None)


def _expected_multi(data: Path):
    rows16, bad = source_expectation(data / "source.parquet", 16)
    rows8, _ = source_expectation(data / "source.parquet", 8)
    return ({("ra", None): rows16, ("rb", None): rows8}, {"ra": bad, "rb": bad},
            {"ra": source_hashes(data / "source.parquet", 16), "rb": source_hashes(data / "source.parquet", 8)})


JOBS = {"session": _job_session, "fresh": _job_fresh, "new_version": _job_new_version, "update": _job_update,
        "embed": _job_embed, "multi": _job_multi}
SETUPS = {"session": _setup_session, "new_version": _setup_new_version, "update": _setup_update,
          "embed": _setup_embed, "multi": _setup_embed}
EXPECTED = {"session": _expected_session, "fresh": _expected_fresh, "new_version": _expected_new_version,
            "update": _expected_update, "embed": _expected_embed, "multi": _expected_multi}


# -- what every crash leaves behind, after the rerun --------------------------------------------------------------
def manifest_runs(store_root: Path) -> dict[str, str]:
    """run_id -> status, from every committed manifest on disk (what the runs table will show)."""
    import json

    out = {}
    for manifest in Path(store_root, "sets").glob("*/v*/manifest.json"):
        for r in json.loads(manifest.read_text())["runs"]:
            out[r["run_id"]] = r["status"]
    return out


def leftovers(store_root: Path) -> list[str]:
    """Temp files anywhere, version folders without a manifest, Parquet files no manifest lists."""
    import json

    root = Path(store_root)
    found = [str(p.relative_to(root)) for p in root.rglob(".tmp-*")]
    for vdir in root.glob("sets/*/v*"):
        if not (vdir / "manifest.json").is_file():
            found.append(str(vdir.relative_to(root)) + "/ (no manifest)")
            continue
        m = json.loads((vdir / "manifest.json").read_text())
        known = {p["file"] for p in m["partitions"]} | {p["file"] for p in m["errors"]} | {"schema.parquet"}
        found += [str(p.relative_to(root)) for p in vdir.glob("*.parquet") if p.name not in known]
    return sorted(set(found))


def leftover_kinds(store_root: Path) -> set[str]:
    """{"tmp", "orphan", "no-manifest"}: what kinds of leftovers are there."""
    kinds = set()
    for f in leftovers(store_root):
        kinds.add("no-manifest" if f.endswith("(no manifest)") else "tmp" if "/.tmp-" in f else "orphan")
    return kinds


def table_vectors(table) -> np.ndarray:
    """The embedding column of a feature set table as a (rows, dim) float32 matrix."""
    from featurestore.storage import _format as fmt

    column = table.column("embedding")
    return fmt.to_matrix(column, column.type.list_size)


def quote(view: str) -> str:
    return '"' + view.replace('"', '""') + '"'


def assert_every_view_readable(store) -> None:
    """Every set, version, errors view and metadata table reads, through the Python API and SQL (one query)."""
    checks: list[tuple[str, int | None]] = []  # (view, rows it must have; None: any)
    for name in store.names():
        versions = store.versions(name)
        for v in versions:
            fs = store.get(name, v)
            matrix = fs.to_numpy()
            assert matrix.shape == (fs.count(), fs.dim), (name, v, matrix.shape, fs.count())
            checks.append((f"{name}@v{v}", fs.count()))
            if fs.manifest.errors:
                fs.errors()
        checks.append((name, store.get(name).count()))
        if any(store.get(name, v).manifest.errors for v in versions):
            checks.append((f"{name}@errors", None))
    parts = ["(select count(*) from feature_sets)", "(select count(*) from runs)"]
    for view, _ in checks:  # count(embedding) makes DuckDB decode the vectors, not just the footers
        col = "*" if view.endswith("@errors") else "embedding"
        parts += [f"(select count(*) from {quote(view)})", f"(select count({col}) from {quote(view)})"]
    got = store.sql("select " + ", ".join(parts)).fetchone()[2:]
    for i, (view, n) in enumerate(checks):
        rows, decoded = got[2 * i], got[2 * i + 1]
        assert rows == decoded and (n is None or rows == n), f"view {view}: {rows} rows in SQL, expected {n}"


def assert_rows(store, name: str, version: int | None, rows: dict[Any, np.ndarray], key: str = "id",
                hashes: dict[Any, str] | None = None) -> None:
    """The view holds exactly ``rows`` (key -> vector): same keys, once each, same vectors, in every read path.

    ``hashes``: key -> expected content_hash (default: the hash of the expected vector, as for plain writes).
    """
    fs = store.get(name, version)
    table = fs.to_arrow()
    keys = table.column(key).to_pylist()
    dups = sorted({k for k in keys if keys.count(k) > 1}) if len(keys) != len(set(keys)) else []
    assert not dups, f"{name} v{version}: duplicate keys {dups[:10]}"
    missing, extra = sorted(set(rows) - set(keys)), sorted(set(keys) - set(rows))
    assert not missing and not extra, f"{name} v{version}: missing keys {missing[:10]}, unexpected keys {extra[:10]}"
    assert fs.count() == len(rows), f"{name} v{version}: count() {fs.count()} != {len(rows)} rows"
    assert fs.keys().column(key).to_pylist() == keys, f"{name} v{version}: keys() order differs from to_arrow()"
    expected = np.stack([rows[k] for k in keys]).astype(np.float32) if keys else np.empty((0, fs.dim), np.float32)
    np.testing.assert_allclose(fs.to_numpy(), expected, rtol=1e-6, atol=0,
                               err_msg=f"{name} v{version}: stored vectors differ from the source")
    from featurestore.storage import _format as fmt

    if hashes is None:
        hashes = dict(zip(keys, fmt.vector_hashes(fmt.fixed_size_list(expected.astype(fs.dtype)), fs.dim).to_pylist()))
    stored = table.column("content_hash").to_pylist()
    stale = [k for k, h in zip(keys, stored) if hashes.get(k) != h]
    assert not stale, f"{name} v{version}: content_hash is not that of the current content for keys {stale[:10]}"
    view = quote(name if version is None else f"{name}@v{version}")
    counts = store.sql(f"select count(*), count(distinct {quote(key)}) from {view}").fetchone()
    assert counts == (len(rows), len(rows)), f"{view}: SQL count(*), count(distinct key) = {counts}, expected {len(rows)}"
    got = store.sql(f"select {quote(key)}, embedding from {view}").numpy()
    order = [rows[k] for k in got[key].tolist()]
    if order:
        np.testing.assert_allclose(got["embedding"], np.stack(order), rtol=1e-6, atol=0,
                                   err_msg=f"{view}: SQL vectors differ from the source")


def assert_clean(store) -> None:
    found = leftovers(store.root)
    assert not found, f"leftovers after the rerun: {found}"
    report = store.doctor()
    assert report.findings == [] and report.ok, report.to_dict()

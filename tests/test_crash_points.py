"""kill -9 at precise points of writes, jobs and model saves; then rerun and check the store is exactly right.

Each case runs a job in a child process that wraps one library function (``tests/_crash.py``) so that its Nth
matching call SIGKILLs the process before or after the original runs: no hooks in library code, real files, real
processes. The parent then reruns the same job and checks:

- exact rows: every view holds the source's keys once each, with the source's vectors (Python API and SQL);
- nothing unreadable: every view, version, errors view and metadata table reads;
- leftovers cleaned: no ``.tmp-*``, no uncommitted Parquet, no half-made version; ``doctor()`` finds nothing;
- the runs table shows the killed run as ``killed`` (or ``ok`` when it had committed its end before dying).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import featurestore

_spec = importlib.util.spec_from_file_location("_fs_crash", Path(__file__).with_name("_crash.py"))
crash = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_fs_crash", crash)
_spec.loader.exec_module(crash)

# Which calls count (expressions over the wrapped function's args/kwargs).
TMP_PARQUET = "os.path.basename(str(args[0])).startswith('.tmp-') and str(args[0]).endswith('.parquet')"
MANIFEST = "str(args[1]).endswith('manifest.json')"
CATALOG_TXN = "kwargs.get('persistent') is True"  # define_views on catalog.duckdb, inside write_catalog's transaction
ERRORS_FILE = "os.path.basename(str(args[1])).startswith('errors-')"

# (point, job, target, nth matching call, before/after the original, which calls count,
#  leftovers the kill leaves, status of each killed run in the manifests right after the kill)
# Leftovers: "tmp" a .tmp-* file, "orphan" a renamed Parquet file no manifest lists, "no-manifest" a version folder
# without its manifest. Run status None: the run had committed nothing, so no manifest records it.
# Jobs (tests/_crash.py): session = 4 appends of 60 rows to a set holding 60; fresh = first write of a new set;
# new_version = version="new" beside v1; update = 100 changed + 100 new keys; embed = pipelines.embed of 300 rows
# (11 bad) in partitions of 50; multi = one pass writing two sets (the runner behind embed_layers).
R, OK, NONE = ("running",), ("ok",), (None,)
POINTS = [
    ("partition-temp-written-before-fsync", "session", "pyarrow.parquet:write_table", 2, "after", None, {"tmp"}, R),
    ("partition-fsynced-before-rename", "session", "os:replace", 2, "before", TMP_PARQUET, {"tmp"}, R),
    ("partition-renamed-before-dir-fsync", "session", "featurestore.storage._writer:fsync_path", 2, "before", None,
     {"orphan"}, R),
    ("partition-renamed-before-manifest-commit", "session", "featurestore.storage._writer:write_manifest", 2, "before", None,
     {"orphan"}, R),
    ("manifest-temp-written-before-replace", "session", "os:replace", 3, "before", MANIFEST, {"tmp", "orphan"}, R),
    ("manifest-replaced-before-dir-fsync", "session", "featurestore.storage._atomic:fsync_path", 3, "before", None, set(), R),
    ("catalog-inside-transaction", "session", "featurestore.query._catalog:define_views", 1, "after", CATALOG_TXN, set(), R),
    ("catalog-update-in-finish", "session", "featurestore.query._catalog:define_views", 2, "before", CATALOG_TXN, set(), OK),
    ("finish-manifest-before-replace", "session", "os:replace", 5, "before", MANIFEST, {"tmp"}, R),
    ("new-set-schema-temp-written", "fresh", "pyarrow.parquet:write_table", 1, "after", None,
     {"no-manifest", "tmp"}, NONE),
    ("new-set-partition-renamed-no-manifest-yet", "fresh", "featurestore.storage._writer:write_manifest", 1, "before", None,
     {"no-manifest"}, NONE),
    ("new-set-first-manifest-before-replace", "fresh", "os:replace", 1, "before", MANIFEST,
     {"no-manifest", "tmp"}, NONE),
    ("new-version-partition-before-rename", "new_version", "os:replace", 2, "before", TMP_PARQUET,
     {"no-manifest", "tmp"}, NONE),
    ("new-version-first-manifest-before-replace", "new_version", "os:replace", 1, "before", MANIFEST,
     {"no-manifest", "tmp"}, NONE),
    ("update-partition-before-rename", "update", "os:replace", 1, "before", TMP_PARQUET, {"tmp"}, NONE),
    ("update-renamed-before-manifest-commit", "update", "featurestore.storage._writer:write_manifest", 1, "before", None,
     {"orphan"}, NONE),
    ("update-manifest-replaced-before-dir-fsync", "update", "featurestore.storage._atomic:fsync_path", 1, "before", None,
     set(), R),
    ("job-3rd-partition-before-rename", "embed", "os:replace", 4, "before", TMP_PARQUET, {"tmp"}, R),  # #1: schema
    ("job-after-5th-partition-commit", "embed", "featurestore.storage._writer:Writer._commit", 5, "after", None, set(), R),
    ("record-errors-before", "embed", "featurestore.storage._writer:Writer.record_errors", 1, "before", None, set(), R),
    ("record-errors-file-renamed-not-committed", "embed", "featurestore.storage._writer:write_parquet", 1, "after",
     ERRORS_FILE, {"orphan"}, R),
    ("record-errors-after-commit", "embed", "featurestore.storage._writer:Writer.record_errors", 1, "after", None, set(), R),
    ("multi-set-second-set-2nd-append", "multi", "featurestore.storage._writer:Writer.append", 2, "before",
     "args[0].name == 'rb'", set(), R + R),
    ("multi-set-first-set-3rd-manifest-before-replace", "multi", "os:replace", 3, "before",
     MANIFEST + " and '/sets/ra/' in str(args[1])", {"tmp", "orphan"}, R + R),
    ("multi-set-second-set-errors-committed", "multi", "featurestore.storage._writer:Writer.record_errors", 1, "after",
     "args[0].name == 'rb'", set(), R + R),
]


@pytest.mark.parametrize("point, job, target, n, when, pred, left, runs_at_kill", POINTS, ids=[p[0] for p in POINTS])
def test_kill_then_rerun_leaves_exactly_the_source(store, tmp_path, point, job, target, n, when, pred, left,
                                                   runs_at_kill):
    data = tmp_path / "data"
    data.mkdir()
    if job in crash.SETUPS:
        crash.SETUPS[job](store, data)
    killed = crash.run_killed(job, store.root, data, target, n, when, pred)

    # The kill landed where intended: the leftovers and run records are those of that point.
    status_at_kill = crash.manifest_runs(store.root)
    assert crash.leftover_kinds(store.root) == left, crash.leftovers(store.root)
    assert tuple(status_at_kill.get(run_id) for _, run_id in killed) == runs_at_kill, (killed, status_at_kill)
    # Straight after the kill: readers see only committed data, whatever the leftovers.
    store = featurestore.open(store.root)
    crash.assert_every_view_readable(store)

    crash.JOBS[job](store, str(data))  # the rerun

    expected, errors, hashes = crash.EXPECTED[job](data)
    for (name, version), rows in expected.items():
        crash.assert_rows(store, name, version, rows, hashes=hashes.get(name))
    for name, bad in errors.items():
        got = {r[0] for r in store.sql(f'select id from "{name}@errors"').fetchall()}
        assert got == bad, f"{name}@errors: missing {sorted(bad - got)}, unexpected {sorted(got - bad)}"
    crash.assert_every_view_readable(store)
    crash.assert_clean(store)

    runs = dict(store.sql("select run_id, status from runs").fetchall())
    assert "running" not in runs.values(), runs
    for name, run_id in killed:
        # A run is listed from its first commit on; a killed one must then read `killed` (or `ok` if its end was
        # committed before it died, e.g. while refreshing the catalog after the final manifest).
        want = {"running": "killed", "ok": "ok", None: None}[status_at_kill.get(run_id)]
        assert runs.get(run_id) == want, f"run {run_id} of {name!r}: {runs.get(run_id)!r}, expected {want!r}"
    assert list(runs.values()).count("ok") >= len({n for n, _ in killed}), runs  # the rerun's runs


RECOVERY_POINTS = [
    # the next writer, killed while it cleans up after the first: (point, target, nth call, before/after)
    ("after-removing-a-leftover", "pathlib:Path.unlink", 1, "after"),
    ("before-marking-the-dead-run-killed", "featurestore.storage._writer:write_manifest", 1, "before"),
]


@pytest.mark.parametrize("point, target, n, when", RECOVERY_POINTS, ids=[p[0] for p in RECOVERY_POINTS])
def test_killed_again_while_recovering_from_a_kill(store, tmp_path, point, target, n, when):
    data = tmp_path / "data"
    data.mkdir()
    crash.SETUPS["session"](store, data)
    killed = crash.run_killed("session", store.root, data, "featurestore.storage._writer:write_manifest", 2, "before")
    assert crash.leftover_kinds(store.root) == {"orphan"}
    killed += crash.run_killed("session", store.root, data, target, n, when)
    status_at_kill = crash.manifest_runs(store.root)
    assert [status_at_kill.get(r) for _, r in killed] == ["running", None], status_at_kill

    crash.JOBS["session"](store, str(data))

    expected, _, _ = crash.EXPECTED["session"](data)
    crash.assert_rows(store, "vecs", None, expected[("vecs", None)])
    crash.assert_every_view_readable(store)
    crash.assert_clean(store)
    runs = dict(store.sql("select run_id, status from runs").fetchall())
    assert [runs.get(r) for _, r in killed] == ["killed", None] and "running" not in runs.values(), runs


# -- stacker saves --------------------------------------------------------------------------------------------------
STACK_DATA = """
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
X, y = X[:600], y[:600]
BLOCKS = {"left": X[:, :32], "right": X[:, 32:]}
"""
STACK_SAVE_NEW = STACK_DATA + """
import stackers
stackers.StackingClassifier(meta="logistic", cv=3, C=0.1).fit(BLOCKS, y).save(MODEL)
"""

STACK_POINTS = [
    # (point, target, nth call, before/after)
    ("new-model-half-written", "numpy:savez", 1, "after"),
    ("new-model-complete-before-any-rename", "pathlib:Path.rename", 1, "before"),
    ("between-the-renames", "pathlib:Path.rename", 1, "after"),  # old moved aside, new not yet in place
    ("after-the-renames-before-removing-old", "pathlib:Path.rename", 2, "after"),
]


@pytest.mark.parametrize("point, target, n, when", STACK_POINTS, ids=[p[0] for p in STACK_POINTS])
def test_killed_stacker_save_keeps_a_loadable_model(tmp_path, point, target, n, when):
    pytest.importorskip("sklearn")
    import stackers

    env: dict = {}
    exec(STACK_DATA, env)
    blocks, y = env["BLOCKS"], env["y"]
    model_dir = tmp_path / "models" / "digits"
    old = stackers.StackingClassifier(meta="logistic", cv=3, C=1.0).fit(blocks, y)
    new = stackers.StackingClassifier(meta="logistic", cv=3, C=0.1).fit(blocks, y)
    p_old, p_new = old.predict_proba(blocks), new.predict_proba(blocks)
    assert not np.array_equal(p_old, p_new)
    old.save(model_dir)

    crash.run_code_killed(f"MODEL = {str(model_dir)!r}\n" + STACK_SAVE_NEW, target, n, when)

    problems = []
    try:
        with warnings.catch_warnings(record=True) as caught:  # a load that repairs the swap may say so
            warnings.simplefilter("always")
            p = stackers.load(model_dir).predict_proba(blocks)
        for w in caught:
            print(f"load after the kill warned: {w.message}")
        if not (np.array_equal(p, p_old) or np.array_equal(p, p_new)):
            problems.append("after the kill the model at the path is neither the old nor the new one")
    except Exception as exc:  # noqa: BLE001 - the point is what a user sees
        aside = sorted(p.name for p in model_dir.parent.iterdir() if p.name != model_dir.name)
        problems.append(f"after the kill neither model loads: {type(exc).__name__}: {exc} (beside it: {aside})")
    # Recovery: the next save must work and leave nothing behind.
    try:
        new.save(model_dir)
        np.testing.assert_array_equal(stackers.load(model_dir).predict_proba(blocks), p_new)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the next save does not recover: {type(exc).__name__}: {exc}")
    left = sorted(p.name for p in model_dir.parent.iterdir() if p.name != model_dir.name)
    if left:
        problems.append(f"leftovers of the killed save remain after the next save: {left}")
    assert not problems, "\n".join(problems)


# -- dropping a version ---------------------------------------------------------------------------------------------
DROP_POINTS = [
    # (point, target, nth call, before/after, doctor options that repair it)
    ("renamed-before-catalog", "featurestore._store:Store._write_catalog", 1, "before", {"clean": True, "rebuild": True}),
    ("renamed-and-catalog-before-delete", "featurestore.storage._leftovers:remove", 1, "before", {"clean": True}),
    ("half-deleted", "os:unlink", 2, "after", {"clean": True}),  # rmtree removed 2 of v2's 3 files
]


@pytest.mark.parametrize("point, target, n, when, repair", DROP_POINTS, ids=[p[0] for p in DROP_POINTS])
def test_killed_drop_leaves_the_store_readable_and_doctor_repairs_it(store, tmp_path, point, target, n, when, repair):
    store.write("vecs", crash.vec_rows(range(40)), spec=crash.SPEC)
    store.write("vecs", crash.vec_rows(range(20, 90), salt=1), spec=crash.SPEC, version="new")
    body = f"import featurestore\nfeaturestore.open({str(store.root)!r}).drop('vecs', 2)\n"
    crash.run_code_killed(body, target, n, when)

    assert any(".tmp-drop-v2-" in f for f in crash.leftovers(store.root)), crash.leftovers(store.root)
    store = featurestore.open(store.root)
    assert store.versions("vecs") == [1]  # never a half-deleted v2 that looks valid
    crash.assert_rows(store, "vecs", None, {k: crash.vector(k) for k in range(40)})
    crash.assert_every_view_readable(store)
    assert not store.doctor().ok
    assert store.doctor(**repair).ok
    crash.assert_clean(store)

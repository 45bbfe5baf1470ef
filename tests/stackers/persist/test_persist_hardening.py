"""A saved model folder is untrusted input: tampered files fail at load with a clear ValueError, never a crash;
save never replaces what is not a model; a save killed at any point leaves a loadable model.

Crash cases run in a child process: before the checks, each one killed the interpreter (SIGSEGV, SIGABRT, SIGFPE)
or hung it inside LightGBM.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import stackers
from stackers import StackingClassifier

ROOT = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT = 90


# -- models, built once ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits3(digits_blocks):
    """Three digit classes (~540 rows) as two blocks: a LightGBM meta learner on them is 300 small trees."""
    blocks, y = digits_blocks
    keep = y < 3
    return {name: b[keep] for name, b in blocks.items()}, y[keep]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits3):
    """Pristine saved models to copy and tamper with: a LightGBM meta, and two logistic ones (old/new) that differ."""
    root = tmp_path_factory.mktemp("saved")
    blocks, y = digits3
    StackingClassifier(meta="lightgbm", cv=2).fit(blocks, y).save(root / "lgbm")
    np.save(root / "X3.npy", np.hstack([blocks["top"], blocks["bottom"]]))
    StackingClassifier(meta="logistic", cv=2, C=1.0).fit(blocks, y).save(root / "old")
    StackingClassifier(meta="logistic", cv=2, C=0.25).fit(blocks, y).save(root / "new")
    return root


def _copy(saved: Path, name: str, dest: Path) -> Path:
    shutil.copytree(saved / name, dest)
    return dest


def _child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        return -999, out, err  # hung
    return proc.returncode, out, err


# -- LightGBM model text: crashes ----------------------------------------------------------------------------------
def _fix_tree_sizes(text: str) -> str:
    """Recompute tree_sizes after an edit, as a careful tamperer would (a wrong size is its own crash case)."""
    starts = [m.start() for m in re.finditer(r"^Tree=", text, re.M)] + [text.index("end of trees")]
    sizes = " ".join(str(b - a) for a, b in zip(starts, starts[1:]))
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1, flags=re.M)


def _set_field(field: str, value: str, tree: int = 0):
    """Replace ``field`` in block ``Tree=<tree>`` of the first tree with a two-way split (sizes kept consistent)."""
    def edit(text: str) -> str:
        start = text.index(f"Tree={tree}\n")
        line = text.index(f"\n{field}=", start) + 1
        return _fix_tree_sizes(text[:line] + f"{field}={value}" + text[text.index("\n", line):])
    return edit


def _first_split_tree(text: str) -> int:
    """A tree with exactly 3 leaves, so that the edits below have a known shape (2 internal nodes)."""
    for m in re.finditer(r"^Tree=(\d+)\nnum_leaves=3\n", text, re.M):
        return int(m.group(1))
    raise AssertionError("no 3-leaf tree in the saved model")


# name -> (edit(text, tree) -> text, message fragment). Each crashed LightGBM 4.7 (signal or hang) before the checks.
CRASHES = {
    "split_feature out of range (SIGSEGV at predict)":
        (lambda t, i: _set_field("split_feature", "100000000 0", i)(t), "split_feature holds 100000000, outside"),
    "child index out of range (SIGSEGV at predict)":
        (lambda t, i: _set_field("left_child", "100000 -1", i)(t), "has child 100000"),
    "child pointing back at the root (endless loop)":
        (lambda t, i: _set_field("left_child", "0 -1", i)(t), "reached twice"),
    "truncated leaf_value (SIGABRT)":
        (lambda t, i: _set_field("leaf_value", "0.5 0.25", i)(t), "leaf_value has 2 values; 3 leaves need 3"),
    "huge num_leaves (SIGABRT)":
        (lambda t, i: _set_field("num_leaves", "2000000000", i)(t), "num_leaves holds 2000000000"),
    "tree_sizes that do not match the blocks (SIGSEGV)":
        (lambda t, i: re.sub(r"^tree_sizes=\d+", "tree_sizes=99999999", t, count=1, flags=re.M), "tree_sizes says"),
    "num_tree_per_iteration=0 (SIGFPE)":
        (lambda t, i: t.replace("num_tree_per_iteration=3\n", "num_tree_per_iteration=0\n", 1),
         "num_tree_per_iteration='0' is not an integer"),
}

_LOAD_AND_PREDICT = """
import sys, numpy as np, stackers
model = stackers.load(sys.argv[1])
X = np.load(sys.argv[2])
model.predict_proba({"top": X[:50, :32], "bottom": X[:50, 32:]})
print("predicted")
"""


@pytest.fixture(scope="module")
def crash_runs(saved, tmp_path_factory):
    """Every tampered model loaded (and used) in its own child process, all children at once."""
    root = tmp_path_factory.mktemp("crashes")
    text = (saved / "lgbm" / "meta_lightgbm.txt").read_text()
    tree = _first_split_tree(text)
    procs = {}
    for i, (name, (edit, _)) in enumerate(CRASHES.items()):
        folder = _copy(saved, "lgbm", root / f"m{i}")
        (folder / "meta_lightgbm.txt").write_text(edit(text, tree))
        procs[name] = (folder, _child(_LOAD_AND_PREDICT, str(folder), str(saved / "X3.npy")))
    return {name: (folder, *_finish(proc)) for name, (folder, proc) in procs.items()}


@pytest.mark.parametrize("case", list(CRASHES))
def test_tampered_lightgbm_text_fails_cleanly_in_a_child_process(crash_runs, case):
    folder, rc, out, err = crash_runs[case]
    assert rc != -999, f"{case}: the child hung"
    assert rc == 1, f"{case}: exit {rc} (a negative code is a signal), stdout={out!r}, stderr tail={err[-600:]!r}"
    assert "predicted" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("stackers.errors.CorruptModelError: ") and "is not a LightGBM model this stacker can load" in last, last
    assert str(folder / "meta_lightgbm.txt") in last and CRASHES[case][1] in last, last


# name -> (edit, message fragment): no crash, but a model that is wrong for this stacker loaded without complaint.
WRONG = {
    "three classes -> four": (lambda t: t.replace("num_class=3\n", "num_class=4\n", 1)
                              .replace("num_tree_per_iteration=3\n", "num_tree_per_iteration=4\n", 1),
                              "num_class=4, expected 3"),
    "more features than the meta learner feeds": (
        lambda t: re.sub(r"^max_feature_idx=(\d+)$", lambda m: f"max_feature_idx={int(m.group(1)) + 1}",
                         re.sub(r"^(feature_names=.*|feature_infos=.*)$", r"\1 extra", t, count=2, flags=re.M),
                         count=1, flags=re.M),
        "features (max_feature_idx="),
    "a tree dropped": (lambda t: _fix_tree_sizes(t[:t.index("Tree=1\n")] + t[t.index("Tree=2\n"):]),
                       "expected a multiple of 3"),
    "a NaN threshold": (lambda t: _set_field("threshold", "nan 0.5", _first_split_tree(t))(t),
                        "threshold is not a list of numbers"),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_lightgbm_text_inconsistent_with_the_manifest_is_refused(saved, tmp_path, case):
    folder = _copy(saved, "lgbm", tmp_path / "m")
    text = (folder / "meta_lightgbm.txt").read_text()
    (folder / "meta_lightgbm.txt").write_text(WRONG[case][0](text))
    with pytest.raises(ValueError, match=re.escape(WRONG[case][1])) as info:
        stackers.load(folder)
    assert str(folder / "meta_lightgbm.txt") in str(info.value)


def test_untouched_lightgbm_model_still_loads_and_predicts(saved, digits3):
    blocks, _ = digits3
    proba = stackers.load(saved / "lgbm").predict_proba(blocks)
    assert proba.shape == (len(blocks["top"]), 3) and np.allclose(proba.sum(axis=1), 1)


# -- the manifest's file names ---------------------------------------------------------------------------------------
def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_manifest_cannot_point_load_outside_the_model_folder(saved, tmp_path, where):
    folder = _copy(saved, "old", tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(folder / "arrays.npz", outside / "arrays.npz")
    target = "../outside/arrays.npz" if where == "relative" else str(outside / "arrays.npz")
    _edit_manifest(folder, arrays=target)
    with pytest.raises(ValueError, match="keeps its arrays in 'arrays.npz' inside its own folder"):
        stackers.load(folder)


def test_a_symlink_out_of_the_model_folder_is_refused(saved, tmp_path):
    folder = _copy(saved, "old", tmp_path / "m")
    shutil.move(folder / "arrays.npz", tmp_path / "elsewhere.npz")
    (folder / "arrays.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(ValueError, match="is a symbolic link"):
        stackers.load(folder)


# -- arrays.npz: bounded, plain, and shaped as the manifest says -----------------------------------------------------
def _rewrite_npz(folder: Path, replace: dict[str, bytes | None], *, extra: dict[str, bytes] | None = None) -> None:
    """Rebuild arrays.npz (stored, as np.savez does): members in ``replace`` get new bytes, None drops them."""
    src = folder / "arrays.npz"
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    for key, data in replace.items():
        if data is None:
            del members[key + ".npy"]
        else:
            members[key + ".npy"] = data
    members.update(extra or {})
    with zipfile.ZipFile(src, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_a_small_npz_that_expands_to_hundreds_of_mb_is_refused_before_reading(saved, tmp_path):
    folder = _copy(saved, "old", tmp_path / "m")
    n_oof = len(json.loads((folder / "manifest.json").read_text())["oof_feature_names"])
    rows = (256 << 20) // (8 * n_oof)  # 256 MB of float64 zeros, deflated to a few hundred KB
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0, n_oof)))
    header["shape"] = (rows, n_oof)
    src = folder / "arrays.npz"
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist() if name != "oof_predictions.npy"}
    with zipfile.ZipFile(src, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("oof_predictions.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            chunk = bytes(1 << 20)
            for _ in range((rows * n_oof * 8) // len(chunk)):
                fh.write(chunk)
            fh.write(bytes((rows * n_oof * 8) % len(chunk)))
    assert src.stat().st_size < (4 << 20)
    with pytest.raises(ValueError, match="'oof_predictions.npy' is compressed"):
        stackers.load(folder)


@pytest.mark.parametrize("case, match", [
    ("coef one column short", r"'base0.logistic.coef.npy' has shape \(3, 31\); the manifest implies \(3, 32\)"),
    ("block dim edited in the manifest", r"'base0.logistic.mean.npy' has shape \(32,\); the manifest implies \(33,\)"),
    ("one class fewer in the arrays", r"'base1.logistic.coef.npy' has shape \(2, 32\); the manifest implies \(3, 32\)"),
    ("header claims a billion rows", r"'oof_predictions.npy' holds 2[0-9,]+ data bytes; shape \(1000000000, "),
    ("object dtype", r"'meta.intercept.npy' has dtype object; expected a float dtype"),
    ("a member that is not .npy", r"holds member\(s\) \['notes.txt'\] that the manifest does not describe"),
    ("a member missing", r"lacks the array\(s\) \['base0.logistic.scale.npy'\]"),
])
def test_arrays_that_disagree_with_the_manifest_fail_at_load(saved, tmp_path, case, match):
    folder = _copy(saved, "old", tmp_path / "m")
    with np.load(folder / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    if case == "coef one column short":
        _rewrite_npz(folder, {"base0.logistic.coef": _npy(arrays["base0.logistic.coef"][:, :31])})
    elif case == "block dim edited in the manifest":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["blocks"][0]["dim"] = 33
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif case == "one class fewer in the arrays":
        _rewrite_npz(folder, {"base1.logistic.coef": _npy(arrays["base1.logistic.coef"][:2])})
    elif case == "header claims a billion rows":
        oof = arrays["oof_predictions"]
        header = np.lib.format.header_data_from_array_1_0(oof)
        header["shape"] = (10**9, oof.shape[1])
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        _rewrite_npz(folder, {"oof_predictions": buf.getvalue() + oof.tobytes()})
    elif case == "object dtype":
        _rewrite_npz(folder, {"meta.intercept": _npy(arrays["meta.intercept"].astype(object))})
    elif case == "a member that is not .npy":
        _rewrite_npz(folder, {}, extra={"notes.txt": b"hello"})
    elif case == "a member missing":
        _rewrite_npz(folder, {"base0.logistic.scale": None})
    with pytest.raises(ValueError, match=match) as info:
        stackers.load(folder)
    assert str(folder) in str(info.value)


# -- save: never over something that is not a model ------------------------------------------------------------------
@pytest.fixture
def feature_store(store, write_set, digits_blocks):
    blocks, _ = digits_blocks
    write_set(store, "top", np.arange(100), blocks["top"][:100])
    return store


@pytest.mark.parametrize("target", ["set version", "inside a set version", "set folder", "store root",
                                    "foreign manifest"])
def test_save_refuses_feature_sets_stores_and_foreign_manifests(saved, feature_store, tmp_path, target):
    model = stackers.load(saved / "old")
    version_dir = feature_store.root / "sets" / "top" / "v1"
    assert (version_dir / "manifest.json").is_file()
    path = {"set version": version_dir, "inside a set version": version_dir / "model",
            "set folder": feature_store.root / "sets" / "top", "store root": feature_store.root,
            "foreign manifest": tmp_path / "app"}[target]
    if target == "foreign manifest":
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"name": "my app", "version": 3}))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(FileExistsError, match="refusing to"):
        model.save(path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert feature_store.get("top").count() == 100


# -- save killed at each step: the old model or the new one always loads; the next save cleans up ---------------------
_SAVE_AND_DIE = """
import os, shutil, signal, sys
from pathlib import Path
import stackers

point, src, dst = sys.argv[1], sys.argv[2], Path(sys.argv[3])
tmp_prefix, old_prefix = f".{dst.name}.tmp-", f".{dst.name}.old-"

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

rename = Path.rename
def killing_rename(self, target):
    if point == "before the swap" and self == dst:  # about to move the old model aside
        die()
    if point == "between the renames" and self.name.startswith(tmp_prefix) and Path(target) == dst:
        die()  # the old model is aside, the new one not yet in place: nothing at dst
    return rename(self, target)
Path.rename = killing_rename

rmtree = shutil.rmtree
def killing_rmtree(path, *args, **kwargs):
    if point == "while deleting the old model" and Path(path).name.startswith(old_prefix):
        die()
    return rmtree(path, *args, **kwargs)
shutil.rmtree = killing_rmtree

stackers.load(src).save(dst)
print("saved")
"""

# kill point -> the C of the model that loads afterwards: 1.0 is the old model, 0.25 the new one
KILL_POINTS = {"before the swap": 1.0, "between the renames": 0.25, "while deleting the old model": 0.25}


@pytest.fixture(scope="module")
def killed_saves(saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    procs = {}
    for i, point in enumerate(KILL_POINTS):
        models = root / f"models{i}"
        _copy(saved, "old", models / "m")
        procs[point] = (models, _child(_SAVE_AND_DIE, point, str(saved / "new"), str(models / "m")))
    return {point: (models, *_finish(proc)) for point, (models, proc) in procs.items()}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_save_killed_midway_leaves_a_loadable_model_and_the_next_save_cleans_up(killed_saves, saved, point):
    models, rc, out, err = killed_saves[point]
    assert rc == -signal.SIGKILL and "saved" not in out, (rc, out, err[-600:])
    path = models / "m"
    assert any(p.name.startswith(".m.") for p in models.iterdir())  # the kill left something behind
    if point == "between the renames":
        assert not path.exists()
        with pytest.warns(UserWarning, match="restored it from '.m.tmp-"):
            loaded = stackers.load(path)
    else:
        loaded = stackers.load(path)
    assert loaded.C == KILL_POINTS[point]
    reference = stackers.load(saved / ("old" if loaded.C == 1.0 else "new"))
    np.testing.assert_array_equal(loaded.oof_predictions_, reference.oof_predictions_)
    np.testing.assert_array_equal(loaded.meta_estimator_.probe_.coef_, reference.meta_estimator_.probe_.coef_)

    loaded.save(path)  # the next save removes every leftover of the killed one
    assert sorted(p.name for p in models.iterdir()) == ["m"]
    assert stackers.load(path).C == KILL_POINTS[point]


def test_recovery_ignores_an_unfinished_new_model(saved, tmp_path):
    """A kill while the new model was still being written leaves a .tmp without a manifest: the old one wins."""
    _copy(saved, "old", tmp_path / ".m.old-1234abcd")
    unfinished = _copy(saved, "new", tmp_path / ".m.tmp-5678ef01")
    (unfinished / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="restored it from '.m.old-1234abcd'"):
        assert stackers.load(tmp_path / "m").C == 1.0
    stackers.load(saved / "new").save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"] and stackers.load(tmp_path / "m").C == 0.25

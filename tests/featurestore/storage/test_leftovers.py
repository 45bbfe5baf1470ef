"""One definition of a crashed writer's leftovers: what doctor reports is what the next writer removes."""

from __future__ import annotations

import numpy as np

from featurestore.storage import _leftovers

SPEC = {"encoder": "external:test-model"}


def _rows(ids):
    ids = np.asarray(list(ids))
    return {"id": ids, "embedding": np.ones((len(ids), 4), np.float32) * ids[:, None]}


def _plant(store):
    vdir = store.get("s").path
    set_dir = vdir.parent
    planted = [vdir / ".tmp-0123-part-x-00009.parquet", vdir / "part-x-00009.parquet", set_dir / "v7"]
    planted[0].write_bytes(b"half written")
    planted[1].write_bytes(b"renamed, never committed")
    planted[2].mkdir()
    (planted[2] / "schema.parquet").write_bytes(b"a first write killed before its manifest")
    (set_dir / "notes").mkdir()  # not a version folder: not ours to judge
    (vdir / "README.txt").write_text("not a partition either")
    return sorted(planted)


def test_doctor_reports_and_the_next_writer_removes_the_same_leftovers(store):
    store.write("s", _rows(range(5)), spec=SPEC)
    planted = _plant(store)
    found = sorted(p for f in _leftovers.version_folders(store.get("s").path.parent) for p in f.leftovers)
    assert found == planted
    report = store.doctor()
    assert sorted(f.path for f in report.findings if f.kind == "leftover") == [str(p) for p in planted]
    store.write("s", _rows(range(5, 8)), spec=SPEC)
    assert not any(p.exists() for p in planted)
    set_dir = store.get("s").path.parent
    assert (set_dir / "notes").is_dir() and (store.get("s").path / "README.txt").is_file()
    assert store.doctor().ok and store.get("s").count() == 8


def test_doctor_clean_removes_them_under_the_lock(store):
    store.write("s", _rows(range(5)), spec=SPEC)
    planted = _plant(store)
    report = store.doctor(clean=True)
    assert all(f.repaired for f in report.findings if f.kind == "leftover")
    assert not any(p.exists() for p in planted) and store.doctor().ok

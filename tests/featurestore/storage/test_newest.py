"""Newest row per key wins: one commit-number rule for the SQL views and the Python readers."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from featurestore.storage import _manifest
from featurestore.storage._newest import NO_COMMIT, commit_number, commit_number_sql, partition_file

SPEC = {"encoder": "external:test-model"}
NAMES = [partition_file("part", "20240101T000000-abc123", 7), partition_file("errors", "r-1-2", 12345),
         "/abs/sets/a/v1/" + partition_file("part", "x", 0), "sets/a/v1/schema.parquet", "part-x-00001.parquet.bak"]


def test_commit_numbers_read_back_what_partition_file_writes():
    assert [commit_number(n) for n in NAMES] == [7, 12345, 0, NO_COMMIT, NO_COMMIT]


def test_sql_and_python_read_the_same_commit_number():
    rows = duckdb.sql(f"select {commit_number_sql('f')} from unnest(?::VARCHAR[]) t(f)", params=[NAMES]).fetchall()
    assert [r[0] for r in rows] == [commit_number(n) for n in NAMES]


def _rows(ids, salt):
    ids = np.asarray(list(ids))
    return {"id": ids, "embedding": np.stack([np.full(4, salt * 1000 + i, np.float32) for i in ids])}


@pytest.mark.parametrize("shuffle", [False, True], ids=["manifest-order", "manifest-shuffled"])
def test_python_and_sql_agree_on_the_newest_row_whatever_the_manifest_order(store, shuffle):
    store.write("s", _rows(range(0, 10), 1), spec=SPEC)
    store.write("s", _rows(range(5, 15), 2), spec=SPEC)
    store.write("s", _rows(range(8, 12), 3), spec=SPEC)
    vdir = store.get("s").path
    if shuffle:  # the winner comes from the file names, not from where the manifest lists them
        m = _manifest.read_manifest(vdir)
        m.partitions = m.partitions[::-1]
        _manifest.write_manifest(vdir, m)
    want = {i: (3 if 8 <= i < 12 else 2 if i >= 5 else 1) * 1000 + i for i in range(15)}
    fs = store.get("s")
    got = dict(zip(fs.keys().column("id").to_pylist(), fs.to_numpy()[:, 0].tolist()))
    assert got == want and fs.count() == 15
    sql = dict(store.sql("select id, embedding[1] from s").fetchall())
    assert sql == want
    assert fs.keys().column("id").to_pylist() == sorted(want, key=lambda i: (want[i] // 1000, i))  # commit order

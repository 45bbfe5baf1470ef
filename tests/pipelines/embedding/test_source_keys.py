"""The key index on disk: the same refusals as the in-memory check, and resume by row number that stays exact where
rows are numbered unevenly (unreadable JSONL lines, error rows, changed texts, compound keys)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import featurestore
import pipelines
from featurestore.errors import ValidationError


def _embed(root, source, **options):
    return pipelines.embed(root, source, encoder="hash:16", name="t", progress=False, **options)


@pytest.mark.parametrize("ids, message", [
    ([1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7], "6 key(s) appear more than once in this write: id=2; id=3; id=4; id=5; "
                                              "id=6 (and 1 more). A write holds one row per key."),
    ([1, None, 3, None], "2 null value(s) in key column 'id' at rows 1, 3."),
    ([None] * 7, "7 null value(s) in key column 'id' at rows 0, 1, 2, 3, 4 (and 2 more)."),
])
def test_refusals_name_the_keys_and_rows_as_before(tmp_path, ids, message):
    table = pa.table({"id": pa.array(ids, pa.int64()), "text": ["x"] * len(ids)})
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _embed(tmp_path / "s", table)
    assert not (tmp_path / "s" / "sets" / "t").exists()


def test_a_repeated_key_is_found_across_source_batches(tmp_path):
    table = pa.table({"id": np.r_[np.arange(20_000), 7], "text": ["x"] * 20_001})  # 7 again, three batches later
    with pytest.raises(ValidationError, match="1 key.s. appear more than once in this write: id=7"):
        _embed(tmp_path / "s", pipelines.TableSource(table, batch_rows=4096))


def test_resume_after_unreadable_jsonl_lines_skips_exactly_the_held_rows(tmp_path):
    lines = [f'{{"id": {i}, "text": "text {i}"}}' for i in range(30)]
    lines[3] = '{"id": 3, "text": "broken'  # unreadable, key recovered: an error row
    lines[11] = "not json at all"  # unreadable, key lost: an error row numbered like the rest
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first = _embed(tmp_path / "s", path, chunk_rows=512)
    assert (first.rows_written, first.rows_failed) == (28, 2)
    lines[20] = '{"id": 20, "text": "changed"}'
    path.write_text("\n".join(lines) + "\n")
    again = _embed(tmp_path / "s", path)
    assert (again.rows_written, again.rows_skipped) == (1, 27)  # only the changed text, whatever came before it
    fs = featurestore.open(tmp_path / "s").get("t")
    assert fs.count() == 28 and fs.manifest.has_updates


def test_compound_keys_resume_and_update(tmp_path):
    table = pa.table({"a": ["x", "x", "y", "y"], "b": [1, 2, 1, 2], "text": ["p", "q", "r", "s"]})
    _embed(tmp_path / "s", table, key=["a", "b"])
    changed = table.set_column(2, "text", pa.array(["p", "q", "r", "S"]))
    again = _embed(tmp_path / "s", changed, key=["a", "b"])
    assert (again.rows_written, again.rows_skipped) == (1, 3)
    rows = featurestore.open(tmp_path / "s").sql("SELECT a, b FROM t ORDER BY a, b").arrow().to_pylist()
    assert rows == [{"a": "x", "b": 1}, {"a": "x", "b": 2}, {"a": "y", "b": 1}, {"a": "y", "b": 2}]


def test_error_rows_are_stored_a_partition_at_a_time_and_none_is_lost(tmp_path):
    texts = [None if i % 2 else f"t {i}" for i in range(1000)]
    source = pipelines.TableSource(pa.table({"id": np.arange(1000), "text": texts}), batch_rows=100)
    result = _embed(tmp_path / "s", source, partition_rows=100)
    fs = featurestore.open(tmp_path / "s").get("t")
    assert result.rows_failed == 500 and len(fs.manifest.errors) >= 5  # stored as they filled, not held to the end
    n = featurestore.open(tmp_path / "s").sql('SELECT count(DISTINCT id) AS n FROM "t@errors"').arrow()
    assert n.column("n")[0].as_py() == 500

"""Image sources: a folder tree (relative-path keys, sub-folder labels), glob patterns, tables of paths or bytes.

Real files on tmp_path; nothing is decoded here (sources only name images), so these tests need no model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import ValidationError
from pipelines import ImageSource
from pipelines.sources._errors import ERROR_KIND, ERROR_MESSAGE
from pipelines.sources._images import IMAGE, WHERE

TREE = ["cats/b.jpg", "cats/a.jpg", "dogs/puppies/c.png", "top.jpeg", "dogs/d.JPG"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())  # content is not read by sources
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "e.jpg").write_bytes(b"x")
    return root


def _rows(src: ImageSource, columns: list[str]) -> list[dict]:
    batches = list(src.batches(columns))
    return pa.Table.from_batches(batches).to_pylist() if batches else []


def test_folder_keys_are_sorted_relative_paths_with_first_level_labels(tree):
    src = ImageSource(tree)
    rows = _rows(src, ["path", "label"])
    assert [r["path"] for r in rows] == sorted(TREE)  # hidden files, hidden folders and notes.txt left out
    assert [r["label"] for r in rows] == ["cats", "cats", "dogs", "dogs", None]
    assert [r[IMAGE] for r in rows] == [str(tree / r["path"]) for r in rows]
    assert all(r[ERROR_KIND] is None and r[ERROR_MESSAGE] is None for r in rows)
    assert src.count_rows() == 5 and src.payload == "path" and src.kind == "folder"


def test_folder_label_can_be_renamed_or_left_out(tree):
    assert ImageSource(tree, label="species").column_names() == ["path", "species"]
    src = ImageSource(tree, label=None, path_column="file")
    assert src.column_names() == ["file"]
    assert [r["file"] for r in _rows(src, ["file"])] == sorted(TREE)


def test_batches_hold_at_most_batch_rows(tree):
    sizes = [b.num_rows for b in ImageSource(tree, batch_rows=2).batches(["path"])]
    assert sizes == [2, 2, 1]


def test_glob_keys_are_relative_to_the_fixed_folder(tree):
    src = ImageSource(str(tree) + "/**/*.jpg")
    rows = _rows(src, ["path", "label"])
    assert [r["path"] for r in rows] == ["cats/a.jpg", "cats/b.jpg"]  # glob is case-sensitive: d.JPG not matched
    assert [r["label"] for r in rows] == ["cats", "cats"] and src.kind == "glob"
    top = ImageSource(str(tree) + "/*.jpeg")
    assert [r["path"] for r in _rows(top, ["path", "label"])] == ["top.jpeg"]


def test_fingerprint_changes_when_a_file_changes(tree):
    before = ImageSource(tree).fingerprint()
    assert ImageSource(tree).fingerprint() == before
    (tree / "cats" / "a.jpg").write_bytes(b"other, longer bytes")
    assert ImageSource(tree).fingerprint() != before


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_table_paths_are_relative_to_the_table_folder(tmp_path, fmt):
    table = pd.DataFrame({"id": ["x", "y", "z"], "file": ["cats/a.jpg", None, "/abs/b.jpg"]})
    path = tmp_path / "data" / f"images.{fmt}"
    path.parent.mkdir()
    if fmt == "parquet":
        table.to_parquet(path)
    elif fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True)
    src = ImageSource(path, image="file")
    src.check_columns(["id"])
    rows = _rows(src, ["id"])
    assert [r["id"] for r in rows] == ["x", "y", "z"]
    assert [r[IMAGE] for r in rows] == [str(tmp_path / "data" / "cats/a.jpg"), None, "/abs/b.jpg"]
    assert src.payload == "path" and src.kind == "table"


def test_in_memory_table_paths_start_at_root(tmp_path):
    src = ImageSource(pa.table({"id": [1], "file": ["a.jpg"]}), image="file", root=tmp_path)
    assert _rows(src, ["id"])[0][IMAGE] == str(tmp_path / "a.jpg")


def test_table_of_bytes(tmp_path):
    path = tmp_path / "images.parquet"
    pq.write_table(pa.table({"id": [1, 2], "jpeg": pa.array([b"\xff\xd8abc", None], pa.binary())}), path)
    src = ImageSource(path, image="jpeg")
    rows = _rows(src, ["id"])
    assert src.payload == "bytes"
    assert [r[IMAGE] for r in rows] == [b"\xff\xd8abc", None]
    assert rows[0][WHERE] == "5 bytes in column 'jpeg'"


def test_jsonl_value_that_is_not_a_path_is_flagged(tmp_path):
    path = tmp_path / "images.jsonl"
    path.write_text('{"id": 1, "file": "a.jpg"}\n{"id": 2, "file": 7}\nnot json\n')
    rows = _rows(ImageSource(path, image="file"), ["id"])
    assert [r[ERROR_KIND] for r in rows] == [None, "non-string", "invalid-json"]


@pytest.mark.parametrize("make, options, match", [
    (lambda p: p / "nowhere", {}, "does not exist"),
    (lambda p: p / "photos" / "cats" / "a.jpg", {}, "is a file"),
    (lambda p: str(p / "photos") + "/**/*.gif", {}, "matches no files"),
    (lambda p: p / "photos" / "cats", {"extensions": [".png"]}, "No image files"),
    (lambda p: p / "photos", {"key_types": {"id": "int64"}}, "key_types"),
    (lambda p: p / "photos", {"label": "path"}, "two names"),
    (lambda p: p / "photos", {"batch_rows": 0}, "'batch_rows' parameter"),
    (lambda p: pa.table({"id": [1]}), {}, "without image="),
])
def test_bad_sources_are_refused_up_front(tree, make, options, match):
    with pytest.raises(ValidationError, match=match):
        ImageSource(make(tree.parent), **options)


def test_image_column_of_numbers_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1], "file": [3]}), path)
    with pytest.raises(ValidationError, match="must hold paths"):
        ImageSource(path, image="file").check_columns(["id"])


def test_folder_has_only_path_and_label_columns(tree):
    with pytest.raises(ValidationError, match="has no column"):
        ImageSource(tree).check_columns(["id"])

"""``keep``: source columns stored beside the vectors by embedding jobs (API, TOML job spec, CLI), refused when they
clash with the store's own columns, are missing, or differ from what the version already keeps."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines
from featurestore.errors import ValidationError
from pipelines.cli import cli


@pytest.fixture
def source(tmp_path):
    texts = ["soft cotton dress", "wool winter coat", "running shoes", "", "silk evening gown", "denim jacket"]
    table = pa.table({"id": np.arange(6), "text": texts, "title": [f"title {i}" for i in range(6)],
                      "rating": [5, 4, 3, 2, 5, 1]})
    path = tmp_path / "src.parquet"
    pq.write_table(table, path)
    return path


def test_kept_columns_are_stored_and_searchable(store, source):
    result = pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs",
                             keep=["text", "title", "rating"], progress=False)
    assert result.rows_written == 5 and result.rows_failed == 1  # the empty text is an error row, not kept
    fs = store.get("docs")
    table = fs.to_arrow().sort_by("id")
    assert table.column("title").to_pylist() == [f"title {i}" for i in (0, 1, 2, 4, 5)]
    assert table.column("text").to_pylist()[1] == "wool winter coat"
    assert table.column("rating").type == pa.int64()
    hits = store.search("docs", "wool winter coat", k=2, columns=["text", "rating"], where="rating >= 4")
    assert hits.column("text")[0].as_py() == "wool winter coat" and set(hits.column("rating").to_pylist()) <= {4, 5}
    # a rerun with the same keep list resumes: nothing is written again
    again = pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs",
                            keep=["title", "text", "rating"], progress=False)
    assert again.rows_written == 0 and again.rows_skipped == 5


def test_a_different_keep_list_is_refused_before_any_work(store, source):
    pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs", keep=["title"],
                    progress=False)
    runs = len(store.get("docs").runs)
    with pytest.raises(ValidationError, match=r"(?s)keeping \['rating'\]: its partitions keep \['title'\].*version='new'"):
        pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs", keep=["rating"],
                        progress=False)
    assert len(store.get("docs").runs) == runs  # nothing recorded
    new = pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs", keep=["rating"],
                          version="new", progress=False)
    assert new.version == 2 and "rating" in store.get("docs").manifest.columns


@pytest.mark.parametrize("keep, match", [
    (["embedding"], "Cannot keep column"),
    (["content_hash"], "Cannot keep column"),
    (["id"], "Cannot keep column"),
    (["__featurestore_x"], "Cannot keep column"),
    (["title", "title"], "given twice"),
    (["nope"], r"has no column\(s\) \['nope'\]"),
    ("title", "must be a list"),
])
def test_bad_keep_lists(store, source, keep, match):
    with pytest.raises(ValidationError, match=match):
        pipelines.embed(store, source, key="id", text="text", encoder="hash:32", name="docs", keep=keep,
                        progress=False)
    assert "docs" not in store


def test_keep_in_a_job_spec_and_on_the_command_line(tmp_path, source, runner):
    spec = tmp_path / "job.toml"
    spec.write_text(f'source = "{source}"\nname = "docs"\nencoder = "hash:32"\nstore = "{tmp_path / "s1"}"\n'
                    'keep = "title"\n')
    job = pipelines.JobSpec.from_toml(spec)
    assert job.keep == ["title"]
    pipelines.run_job(job, progress=False)
    import featurestore

    assert "title" in featurestore.open(tmp_path / "s1").get("docs").manifest.columns
    out = runner.invoke(cli, ["embed", "--source", str(source), "--name", "docs", "-e", "hash:32", "--store",
                              str(tmp_path / "s2"), "--keep", "text,title", "--json"])
    assert out.exit_code == 0, out.output
    columns = featurestore.open(tmp_path / "s2").get("docs").manifest.columns
    assert "text" in columns and "title" in columns
    out = runner.invoke(cli, ["search", "docs", "--text", "denim jacket", "-k", "1", "--columns", "title",
                              "--store", str(tmp_path / "s2"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["title"] == "title 5"

"""Sources that used to lose data or stop a job: CSV keys type-guessed, a 5 MB CSV cell, a bad JSONL line, and job
specs on Python 3.10 (no tomllib). Real files on tmp_path, the instant ``hash`` encoder."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines
from featurestore import ValidationError
from featurestore.encoders import get_encoder
from pipelines.sources import TableSource, _formats
from pipelines.sources._errors import ERROR_KIND, ERROR_MESSAGE


def _write_csv(path, ids, texts, sep=","):
    path.write_text("id" + sep + "text\n" + "".join(f"{i}{sep}{t}\n" for i, t in zip(ids, texts)), encoding="utf-8")
    return path


# -- 1. CSV keys and texts stay strings ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
@pytest.mark.parametrize("ids", [["007", "7"], ["1e3", "10"], ["0x1", "1"], ["7", "8"]])
def test_csv_keys_keep_their_spelling(store, tmp_path, ids, suffix, sep):
    path = _write_csv(tmp_path / f"r{suffix}", ids, ["first text", "second text"], sep)
    result = pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert (result.rows_written, result.rows_failed) == (2, 0)
    keys = store.get("r").keys().column("id")
    assert keys.type == pa.string() and sorted(keys.to_pylist()) == sorted(ids)
    [(vector,)] = store.sql(f"select embedding from r where id = '{ids[0]}'").fetchall()
    np.testing.assert_allclose(vector, get_encoder("hash:16").encode(["first text"])[0], rtol=1e-6)


def test_csv_columns_are_read_as_strings_not_guessed(tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["007", "2"], ["123", "1e3"])
    [batch] = list(TableSource(path).batches(["id", "text"]))
    assert batch.schema.types == [pa.string(), pa.string()]
    assert batch.to_pylist() == [{"id": "007", "text": "123"}, {"id": "2", "text": "1e3"}]


def test_numeric_texts_in_csv_are_embedded_as_text(store, tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["a", "b"], ["123", "4.5"])
    result = pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert (result.rows_written, result.rows_failed) == (2, 0)


def test_key_types_read_csv_keys_as_numbers(store, tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["007", "8"], ["first text", "second text"])
    pipelines.embed(store, TableSource(path, key_types={"id": "int64"}), key="id", text="text", encoder="hash:16",
                    name="r", progress=False)
    keys = store.get("r").keys().column("id")
    assert keys.type == pa.int64() and sorted(keys.to_pylist()) == [7, 8]


def test_key_types_in_a_job_spec(tmp_path):
    _write_csv(tmp_path / "r.csv", ["007", "8"], ["first text", "second text"])
    spec = tmp_path / "job.toml"
    spec.write_text('store = "store"\nsource = "r.csv"\nencoder = "hash:4"\nname = "j"\n[key_types]\nid = "int64"\n')
    [result] = pipelines.run_job(spec, progress=False)
    assert result.rows_written == 2
    import featurestore

    keys = featurestore.open(tmp_path / "store").get("j").keys().column("id")
    assert keys.type == pa.int64() and sorted(keys.to_pylist()) == [7, 8]


def test_an_empty_csv_key_is_a_missing_key(store, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('id,text\n1,a\n,b\n"",c\nNA,d\n')
    with pytest.raises(ValidationError, match=r"null value\(s\) in key column 'id'"):
        pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert TableSource(path).read_columns(["id"]).column("id").to_pylist() == ["1", None, None, "NA"]


@pytest.mark.parametrize("key_types, fmt, match", [
    ({"id": "integer"}, "csv", r"'key_types' option of TableSource must map column names to Arrow types.*'integer'"),
    ({"id": 3}, "csv", r"Got \{'id': 3\} instead"),
    ({"id": "int64"}, "jsonl", r"applies to CSV/TSV files.*jsonl, which keeps its own column types"),
])
def test_bad_key_types_are_refused(tmp_path, key_types, fmt, match):
    path = tmp_path / f"r.{fmt}"
    path.write_text('{"id": 1, "text": "a"}\n' if fmt == "jsonl" else "id,text\n1,a\n")
    with pytest.raises(ValidationError, match=match):
        TableSource(path, key_types=key_types)


def test_a_key_that_is_not_the_stated_type_names_the_file(tmp_path):
    path = _write_csv(tmp_path / "r.csv", ["1", "x2"], ["a", "b"])
    with pytest.raises(ValidationError, match=r"Cannot read '.*r\.csv' as CSV: .*int64.*'x2'"):
        TableSource(path, key_types={"id": "int64"}).read_columns(["id"])


# -- 2. a 5 MB CSV cell -----------------------------------------------------------------------------------------------


def test_a_5_mb_csv_cell_is_read(store, tmp_path):
    big = "soft cotton dress, " * (5_000_000 // 19 + 1)
    path = tmp_path / "big.csv"
    path.write_text(f'id,text\n1,short one\n2,"{big}"\n3,after it\n', encoding="utf-8")
    src = TableSource(path)
    assert src.column_names() == ["id", "text"] and src.count_rows() == 3
    result = pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="r", progress=False)
    assert (result.rows_read, result.rows_written, result.rows_failed) == (3, 3, 0)
    got = {k: v for k, v in store.sql("select id, embedding from r").fetchall()}
    expected = get_encoder("hash:16").encode(["short one", big, "after it"])
    np.testing.assert_allclose(np.stack([got["1"], got["2"], got["3"]]), expected, rtol=1e-6)


def test_a_big_row_restarts_with_a_bigger_block_without_repeating_rows(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    rows = [f"{i},text number {i}" for i in range(3000)]
    rows[2500] = '2500,"' + "x" * 4_000_000 + '"'  # rows before it are yielded before the reader trips on it
    path.write_text("id,text\n" + "\n".join(rows) + "\n")
    opened = []
    reader = _formats._csv_reader
    monkeypatch.setattr(_formats, "_csv_reader", lambda *args: opened.append(args[1]) or reader(*args))
    ids = TableSource(path, batch_rows=100).read_columns(["id"]).column("id").to_pylist()
    assert ids == [str(i) for i in range(3000)]
    assert opened == list(_formats.CSV_BLOCK_SIZES[:2])  # read again once, with the next block size


def test_a_row_over_the_largest_block_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(_formats, "CSV_BLOCK_SIZES", (1 << 16, 1 << 18))
    path = tmp_path / "big.csv"
    path.write_text('id,text\n1,"' + "y" * 1_000_000 + '"\n')
    with pytest.raises(ValidationError, match=r"big\.csv'.*larger than 0\.25 MiB.*Parquet or JSONL"):
        list(TableSource(path).batches(["id", "text"]))


# -- 3. bad JSONL lines become error rows -----------------------------------------------------------------------------


def _bad_jsonl(path):
    lines = [
        b'{"id": 1, "text": "good one"}',
        b'{"id": 2, "text": "caf\xe9 au lait"}',       # latin-1: not UTF-8, key recoverable
        b'{"id": 3, "text": "cut short',               # truncated: invalid JSON, key recoverable
        b"garbage \xff\xfe",                           # nothing to recover: the line number identifies it
        b"[4, 5]",                                     # valid JSON, not an object
        b"",
        b'{"id": 7, "text": "good two"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_jsonl_lines_become_error_rows_and_the_job_goes_on(store, tmp_path):
    path = _bad_jsonl(tmp_path / "b.jsonl")
    result = pipelines.embed(store, path, key="id", text="text", encoder="hash:16", name="x")
    assert (result.rows_written, result.rows_failed) == (2, 4)
    assert result.errors_by_reason == {"undecodable": 2, "invalid-json": 2}
    assert sorted(store.get("x").keys().column("id").to_pylist()) == [1, 7]
    errors = store.sql('select id, kind, message from "x@errors" order by kind, message').fetchall()
    assert errors == [
        (3, "invalid-json", "b.jsonl:3: not valid JSON (Invalid control character at column 29)"),
        (None, "invalid-json", "b.jsonl:5: a JSON list, not an object"),
        (2, "undecodable", "b.jsonl:2: not valid UTF-8 (invalid continuation byte at byte 22)"),
        (None, "undecodable", "b.jsonl:4: not valid UTF-8 (invalid start byte at byte 8)"),
    ]


def test_bad_lines_in_a_folder_name_their_file(store, tmp_path):
    folder = tmp_path / "parts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"id": 10, "text": "fine"}\n')
    (folder / "sub" / "b.jsonl").write_bytes(b'{"id": 11, "text": "fine"}\n{"id": 12, "text": \n')
    pipelines.embed(store, folder, key="id", text="text", encoder="hash:16", name="x", progress=False)
    [(key, kind, message)] = store.sql('select id, kind, message from "x@errors"').fetchall()
    assert (key, kind) == (12, "invalid-json") and message.startswith("sub/b.jsonl:2: not valid JSON")


def test_a_batch_of_only_bad_lines_keeps_the_key_type(store, tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\nnot json\nnor this\n{"id": 5, "text": "c"}\n')
    result = pipelines.embed(store, TableSource(path, batch_rows=2), key="id", text="text", encoder="hash:16",
                             name="x", progress=False)
    assert (result.rows_written, result.rows_failed) == (3, 2)
    assert store.get("x").errors().schema.field("id").type == pa.int64()


def test_jsonl_bad_lines_outside_a_job(tmp_path):
    path = _bad_jsonl(tmp_path / "b.jsonl")
    src = TableSource(path)
    assert src.read_columns(["id"]).column("id").to_pylist() == [1, 2, 3, 7]  # recovered keys only
    with pytest.raises(ValidationError, match=r"Cannot read b\.jsonl:2: not valid UTF-8.*Fix or drop that line"):
        list(src.batches(["id", "text"]))
    rows = [r for b in src.batches(["id", "text"], text="text") for r in b.to_pylist()]
    assert [list(r) for r in rows] == [["id", "text", ERROR_KIND, ERROR_MESSAGE]] * 6
    assert rows[0] == {"id": 1, "text": "good one", ERROR_KIND: None, ERROR_MESSAGE: None}
    assert rows[1] == {"id": 2, "text": None, ERROR_KIND: "undecodable",
                       ERROR_MESSAGE: "b.jsonl:2: not valid UTF-8 (invalid continuation byte at byte 22)"}
    assert [r[ERROR_KIND] for r in rows] == [None, "undecodable", "invalid-json", "undecodable", "invalid-json", None]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "table"])
def test_the_report_columns_come_with_every_source_and_only_when_asked(tmp_path, fmt):
    if fmt == "csv":
        source = _write_csv(tmp_path / "r.csv", ["1", "2"], ["a", "b"])
    elif fmt == "parquet":
        source = tmp_path / "r.parquet"
        pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), source)
    else:
        source = pa.table({"id": [1, 2], "text": ["a", "b"]})
    [batch] = list(TableSource(source).batches(["id", "text"], text="text"))
    assert batch.schema.names == ["id", "text", ERROR_KIND, ERROR_MESSAGE] and batch.column(ERROR_KIND).null_count == 2
    [batch] = list(TableSource(source).batches(["id", "text"]))
    assert batch.schema.names == ["id", "text"]


def test_a_dataframe_with_numbers_among_texts_reports_them_beside_the_rows():
    df = pd.DataFrame({"id": [1, 2, 3], "text": ["a", 4.5, None]})
    [batch] = list(TableSource(df).batches(["id", "text"], text="text"))
    assert batch.to_pylist() == [
        {"id": 1, "text": "a", ERROR_KIND: None, ERROR_MESSAGE: None},
        {"id": 2, "text": None, ERROR_KIND: "non-string", ERROR_MESSAGE: "a float value, not text"},
        {"id": 3, "text": None, ERROR_KIND: None, ERROR_MESSAGE: None},
    ]
    with pytest.raises(ValidationError, match=r"Column 'text' of <DataFrame with 3 rows> holds values of several "
                                              r"types \(float, str\)"):
        list(TableSource(df).batches(["id", "text"]))


def test_a_source_of_an_unknown_type_says_what_it_takes():
    with pytest.raises(ValidationError, match="Cannot read a source of type int: pass a path, an Arrow table or a "
                                              "DataFrame"):
        TableSource(42)


# -- 4. job specs without tomllib (Python 3.10) -----------------------------------------------------------------------


def test_job_specs_fall_back_to_tomli_without_tomllib(tmp_path, monkeypatch):
    import tomli  # a test dependency on every Python, so this path never silently skips
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now fails, as on Python 3.10
    monkeypatch.delitem(sys.modules, "pipelines.embedding._spec")
    monkeypatch.setattr(pipelines.embedding, "_spec", pipelines.embedding._spec)  # restored after the test, with sys.modules
    spec_module = importlib.import_module("pipelines.embedding._spec")
    assert spec_module.tomllib is tomli
    path = tmp_path / "job.toml"
    path.write_text('source = "r.csv"\nname = "j"\nkey = "id"\n[options]\nbatch_size = 8\n')
    job = spec_module.JobSpec.from_toml(path)
    assert (job.name, job.key, job.options) == ("j", ["id"], {"batch_size": 8})
    path.write_text("source = \n")
    with pytest.raises(ValidationError, match=r"job\.toml' is not valid TOML"):
        spec_module.JobSpec.from_toml(path)



def test_a_file_uri_reads_as_its_path(tmp_path):
    """Sources may be given as pyarrow filesystem URIs; ``file://`` is the local disk (the driver reads sources)."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), path)
    assert TableSource(path.as_uri()).read_columns(["id", "text"]).equals(TableSource(path).read_columns(["id", "text"]))
    with pytest.raises(ValidationError, match="does not exist"):
        TableSource((tmp_path / "missing.parquet").as_uri())

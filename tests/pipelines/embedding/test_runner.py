"""Batch embedding jobs end to end on real files, with the deterministic hash encoder (no model weights)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines
from featurestore import ValidationError
from featurestore.encoders import get_encoder


def _reviews(n: int, start: int = 0) -> pd.DataFrame:
    words = ["soft", "cotton", "dress", "tight", "fits", "lovely", "returned", "color", "fabric", "small"]
    rng = np.random.default_rng(start)
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 30))) for _ in range(n)]
    return pd.DataFrame({"id": np.arange(start, start + n), "review": texts})


@pytest.fixture
def reviews_file(tmp_path):
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pandas(_reviews(1000), preserve_index=False), path, row_group_size=100)
    return path


def test_embed_parquet_matches_encoder(store, reviews_file):
    result = pipelines.embed(store, reviews_file, key="id", text="review", encoder="hash:32", name="reviews_hash",
                             chunk_rows=128, partition_rows=300)
    assert (result.rows_read, result.rows_written, result.rows_failed) == (1000, 1000, 0)
    fs = store.get("reviews_hash")
    assert fs.count() == 1000 and len(fs.manifest.partitions) >= 3
    df = pq.read_table(reviews_file).to_pandas().set_index("id")
    keys = fs.keys().column("id").to_numpy()
    expected = get_encoder("hash:32").encode(df.loc[keys, "review"].tolist())
    np.testing.assert_allclose(fs.to_numpy(), expected, rtol=1e-6)
    run = store.sql("select rows_read, rows_written, rows_failed, status from runs where name = 'reviews_hash'").fetchall()
    assert run == [(1000, 1000, 0, "ok")]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "folder", "pandas"])
def test_sources(store, tmp_path, fmt):
    df = _reviews(300)
    if fmt == "csv":
        source = tmp_path / "r.csv"
        df.to_csv(source, index=False)
    elif fmt == "jsonl":
        source = tmp_path / "r.jsonl"
        df.to_json(source, orient="records", lines=True)
    elif fmt == "folder":
        source = tmp_path / "parts"
        source.mkdir()
        pq.write_table(pa.Table.from_pandas(df.iloc[:100], preserve_index=False), source / "a.parquet")
        pq.write_table(pa.Table.from_pandas(df.iloc[100:], preserve_index=False), source / "b.parquet")
    else:
        source = df
    result = pipelines.embed(store, source, key="id", text="review", encoder="hash:16", name="r", progress=False)
    assert result.rows_written == 300
    ids = store.get("r").keys().column("id").to_pylist()
    # CSV cells are text: keys keep their spelling (pass key_types to read them as numbers)
    assert sorted(ids) == sorted(str(i) if fmt == "csv" else i for i in range(300))


def test_rerun_skips_and_changed_text_is_reembedded(store, reviews_file, tmp_path):
    pipelines.embed(store, reviews_file, key="id", text="review", encoder="hash:16", name="r")
    again = pipelines.embed(store, reviews_file, key="id", text="review", encoder="hash:16", name="r")
    assert (again.rows_written, again.rows_skipped) == (0, 1000)
    df = pq.read_table(reviews_file).to_pandas()
    df.loc[df.id < 5, "review"] = "completely new text"
    changed = tmp_path / "changed.parquet"
    df.to_parquet(changed)
    third = pipelines.embed(store, changed, key="id", text="review", encoder="hash:16", name="r")
    assert (third.rows_written, third.rows_skipped) == (5, 995)
    fs = store.get("r")
    assert fs.count() == 1000
    new = store.sql("select embedding from r where id = 3").numpy()["embedding"][0]
    np.testing.assert_allclose(new, get_encoder("hash:16").encode(["completely new text"])[0], rtol=1e-6)


def test_bad_rows_go_to_the_errors_table(store, tmp_path):
    rows = [{"id": 1, "review": "fine"}, {"id": 2, "review": None}, {"id": 3, "review": "   "},
            {"id": 4, "review": 17}, {"id": 5, "review": "also fine"}]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = pipelines.embed(store, path, key="id", text="review", encoder="hash:16", name="r")
    assert (result.rows_written, result.rows_failed) == (2, 3)
    assert result.errors_by_reason == {"null": 1, "empty": 1, "non-string": 1}
    errors = store.sql('select id, kind, message, reason from "r@errors" order by id').fetchall()
    assert [e[:3] for e in errors] == [(2, "null", "the text is null"),
                                       (3, "empty", "the text is empty or only whitespace"),
                                       (4, "non-string", "a int value, not text")]
    assert [e[3] for e in errors] == [f"{kind}: {message}" for _, kind, message, _ in errors]
    assert store.get("r").errors().num_rows == 3


def test_undecodable_csv_text_is_an_error_row(store, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,review\n1,good text\n2,caf\xe9 latin-1\n3,more text\n")
    result = pipelines.embed(store, path, key="id", text="review", encoder="hash:16", name="r")
    assert (result.rows_written, result.rows_failed) == (2, 1)
    [(key, kind, message)] = store.sql('select id, kind, message from "r@errors"').fetchall()
    assert (key, kind, message) == ("2", "undecodable", "not valid UTF-8 (invalid continuation byte at byte 3)")


def test_a_non_text_column_counts_by_kind(store, tmp_path):
    path = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"id": [1, 2], "review": [3, 4]}), path)
    result = pipelines.embed(store, path, key="id", text="review", encoder="hash:16", name="r")
    assert (result.rows_written, result.errors_by_reason) == (0, {"non-string": 2})
    errors = store.sql('select kind, message from "r@errors"').fetchall()
    assert errors == [("non-string", "a int64 value, not text")] * 2


# Texts that spell what sources once used as in-band markers: they are texts like any other.
LOOKALIKES = ["__featurestore_non_string__:int", "__featurestore_bad_line__:invalid-json: r.jsonl:1: nope",
              "__featurestore_error_kind"]


@pytest.mark.parametrize("fmt", ["jsonl", "pandas", "parquet"])
def test_no_text_is_mistaken_for_a_source_report(store, tmp_path, fmt):
    texts = [*LOOKALIKES, 17]  # the number makes the column mixed: pandas and JSONL take their non-text path
    if fmt == "jsonl":
        source = tmp_path / "r.jsonl"
        source.write_text("".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(texts)))
    elif fmt == "pandas":
        source = pd.DataFrame({"id": range(len(texts)), "review": texts})
    else:
        source = tmp_path / "r.parquet"
        pq.write_table(pa.table({"id": range(len(LOOKALIKES)), "review": LOOKALIKES}), source)
    result = pipelines.embed(store, source, key="id", text="review", encoder="hash:16", name="r")
    assert result.rows_written == len(LOOKALIKES)
    got = store.sql("select embedding from r order by id").numpy()["embedding"]
    np.testing.assert_allclose(got, get_encoder("hash:16").encode(LOOKALIKES), rtol=1e-6)
    if fmt != "parquet":
        assert result.errors_by_reason == {"non-string": 1}
        errors = store.sql('select id, kind, message from "r@errors"').fetchall()
        assert errors == [(3, "non-string", "a int value, not text")]


@pytest.mark.parametrize("fmt", ["jsonl", "pandas"])
def test_keys_of_several_types_are_refused_before_anything_is_written(store, tmp_path, fmt):
    rows = [{"id": 1, "review": "a"}, {"id": "2", "review": "b"}]
    if fmt == "jsonl":
        source = tmp_path / "r.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        source = pd.DataFrame(rows)
    with pytest.raises(ValidationError, match=r"Column 'id' of .* holds values of several types \(int, str\)"):
        pipelines.embed(store, source, key="id", text="review", encoder="hash:16", name="r")
    assert "r" not in store


@pytest.mark.parametrize("ids, match", [
    ([1, 2, 2, 3], "appear more than once in this write: id=2"),
    ([1, None, 3, 4], "null value\\(s\\) in key column 'id' at row 1"),
])
def test_bad_keys_fail_before_any_work(store, ids, match):
    df = pd.DataFrame({"id": pd.array(ids, dtype="Int64"), "review": ["a", "b", "c", "d"]})
    with pytest.raises(ValidationError, match=match):
        pipelines.embed(store, df, key="id", text="review", encoder="hash:16", name="r")
    assert "r" not in store


def test_missing_columns_and_unknown_options(store):
    df = _reviews(3)
    with pytest.raises(ValidationError, match=r"has no column\(s\) \['text'\]"):
        pipelines.embed(store, df, key="id", encoder="hash:16", name="r")
    with pytest.raises(ValueError, match="Unknown option\\(s\\) \\['bach_size'\\]"):
        pipelines.embed(store, df, key="id", text="review", encoder="hash:16", name="r", bach_size=3)


@pytest.mark.parametrize("options", [{"batch_size": 8}, {"device": "cpu", "normalize": False}])
def test_encoder_options_beside_an_encoder_object_are_refused(store, options):
    with pytest.raises(ValueError, match=rf"option\(s\) {re.escape(str(sorted(options)))} given with a HashEncoder "
                                         r"object: options apply only when the encoder is given by name; configure "
                                         r"the Encoder object instead"):
        pipelines.embed(store, _reviews(3), key="id", text="review", encoder=get_encoder("hash:16"), name="r",
                        **options)
    assert "r" not in store
    unset = {k: None for k in options}  # options left unset (None, as the CLI passes them) are no options
    result = pipelines.embed(store, _reviews(3), key="id", text="review", encoder=get_encoder("hash:16"), name="r",
                             **unset)
    assert result.rows_written == 3


KILLABLE = """
import sys, time, numpy as np, pipelines, featurestore
from featurestore.encoders import get_encoder
enc = get_encoder("hash:16")
slow = type("Slow", (), {})()
def encode_batches(chunks):
    for c in chunks:
        time.sleep(0.05)
        yield enc.encode(list(c))
slow.encode_batches = encode_batches
slow.spec = enc.spec
slow.provenance = enc.provenance
pipelines.embed(featurestore.open(sys.argv[1]), sys.argv[2], key="id", text="review", encoder=slow, name="r",
                chunk_rows=50, partition_rows=100, progress=False,
                on_progress=lambda done, total: print(done, flush=True))
"""


def test_killed_job_rerun_ends_with_exactly_the_source_rows(store, reviews_file, tmp_path, read_line):
    script = tmp_path / "job.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(store.root), str(reviews_file)],
                            stdout=subprocess.PIPE, text=True)
    while True:
        line = read_line(proc)
        assert line, "job ended before it could be killed"
        if int(line) >= 400:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    partial = store.get("r").count()
    assert 0 < partial < 1000
    result = pipelines.embed(store, reviews_file, key="id", text="review", encoder="hash:16", name="r")
    assert result.rows_skipped == partial and result.rows_written == 1000 - partial
    fs = store.get("r")
    ids = fs.keys().column("id").to_numpy()
    assert len(ids) == len(np.unique(ids)) == 1000
    assert set(ids.tolist()) == set(range(1000))
    assert store.sql("select count(*), count(distinct id) from r").fetchone() == (1000, 1000)
    assert [r["status"] for r in fs.runs] == ["killed", "ok"]


def test_job_spec_toml(store, reviews_file, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f"""
store = "{store.root}"
source = "{reviews_file.name}"
key = "id"
text = "review"
encoder = "hash:8"
name = "from_spec"
limit = 100
""")
    [result] = pipelines.run_job(spec)
    assert result.rows_written == 100 and store.get("from_spec").dim == 8
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "x"\nname = "y"\ncolour = "red"\n')
    with pytest.raises(ValidationError, match="Unknown job spec field\\(s\\) \\['colour'\\]"):
        pipelines.run_job(bad)


def test_a_job_where_every_row_fails_still_records_them_and_later_rows_append(store, tmp_path):
    bad = pd.DataFrame({"id": [1, 2], "review": ["", None]})
    result = pipelines.embed(store, bad, key="id", text="review", encoder="hash:16", name="r")
    assert (result.rows_written, result.rows_failed) == (0, 2)
    assert store.get("r").count() == 0 and store.sql("select count(*) from r").fetchone()[0] == 0
    assert store.sql('select count(*) from "r@errors"').fetchone()[0] == 2
    good = pd.DataFrame({"id": [1, 2], "review": ["now fine", "also fine"]})
    assert pipelines.embed(store, good, key="id", text="review", encoder="hash:16", name="r").rows_written == 2
    assert store.sql("select count(*) from r").fetchone()[0] == 2 and store.doctor().ok


def test_reserved_column_names_are_refused_before_anything_is_written(store, tmp_path):
    src = tmp_path / "r.parquet"
    pq.write_table(pa.table({"__featurestore_hash_0": [1, 2], "text": ["a", "b"]}), src)
    with pytest.raises(ValidationError, match=r"\['__featurestore_hash_0'\] start with '__featurestore_'"):
        pipelines.embed(store, src, key="__featurestore_hash_0", text="text", encoder="hash:8", name="r")
    assert store.names() == []


@pytest.mark.parametrize("key", ["kind", "message", "reason"])
def test_keys_named_like_the_error_rows_columns_are_refused_before_anything_is_written(store, key):
    df = pd.DataFrame({key: [1, 2], "review": ["fine", None]})
    with pytest.raises(ValidationError, match=rf"Key column\(s\) \['{key}'\] clash with the columns of the error rows"):
        pipelines.embed(store, df, key=key, text="review", encoder="hash:8", name="r")
    assert store.names() == []


@pytest.mark.parametrize("key, text", [("hash0", "text"), ("id", "need0")])
def test_key_and_text_columns_may_have_any_ordinary_name(store, tmp_path, key, text):
    src = tmp_path / "r.parquet"
    pq.write_table(pa.table({key: [1, 2, 3], text: ["a", "b", None]}), src)
    result = pipelines.embed(store, src, key=key, text=text, encoder="hash:8", name="r")
    assert (result.rows_written, result.rows_failed) == (2, 1)
    assert store.get("r").keys().column(key).to_pylist() == [1, 2]

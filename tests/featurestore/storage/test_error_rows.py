"""Error rows as data: ``kind`` and ``message`` columns, ``reason`` derived in the view, older files still read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featurestore import ValidationError
from featurestore.storage import _writer

SPEC = {"encoder": "external:test-model", "dim": 4}


def _errors(ids, kinds, messages):
    return pa.table({"id": pa.array(ids, pa.int64()), "kind": pa.array(kinds, pa.string()),
                     "message": pa.array(messages, pa.string())})


def _record(store, errors, rows=None):
    with store.writer("r", spec=SPEC) as w:
        if rows is not None:
            w.append(rows)
        return w.record_errors(errors)


def test_the_view_shows_kind_message_and_a_derived_reason(store):
    assert _record(store, _errors([1, 2, None], ["null", "undecodable", "invalid-json"],
                                  ["the text is null", "a.jsonl:3: not valid UTF-8", None])) == 3
    rows = store.sql('select id, kind, message, reason from "r@errors" order by id nulls last').fetchall()
    assert rows == [(1, "null", "the text is null", "null: the text is null"),
                    (2, "undecodable", "a.jsonl:3: not valid UTF-8", "undecodable: a.jsonl:3: not valid UTF-8"),
                    (None, "invalid-json", None, "invalid-json")]
    errors = store.get("r").errors()
    assert errors.column_names == ["id", "kind", "message", "reason", "run_id"]
    assert store.get("r").runs[-1]["rows_failed"] == 3


@pytest.mark.parametrize("errors, match", [
    (pa.table({"id": [1], "message": ["m"]}), r"missing \['kind'\]"),
    (pa.table({"id": [1], "kind": ["null"]}), r"missing \['message'\]"),
    (pa.table({"kind": ["null"], "message": ["m"]}), r"missing \['id'\]"),
    (pa.table({"id": [1], "reason": ["null: m"]}), r"missing \['kind', 'message'\]"),
    (pa.table({"id": [1], "kind": ["null"], "message": ["m"], "reason": ["null: m"]}), "not 'reason'"),
    (pa.table({"id": [1], "kind": [3], "message": ["m"]}), "'kind' of the error rows must hold strings; got int64"),
    (pa.table({"id": [1], "kind": ["null"], "message": [3]}), "'message' of the error rows must hold strings"),
    (_errors([1, 2], ["null", None], ["m", "m"]), "1 error row.s. have a null kind: id=2"),
    ([1, 2], "Cannot convert list"),
])
def test_bad_error_rows_are_refused_and_store_nothing(store, errors, match):
    _record(store, _errors([9], ["empty"], ["blank"]))
    before = store.sql('select * from "r@errors"').fetchall()
    with pytest.raises((ValidationError, TypeError), match=match):
        _record(store, errors)
    assert store.sql('select * from "r@errors"').fetchall() == before


def test_unkeyed_errors_keep_one_row_per_kind_and_message(store):
    line = ["invalid-json", "invalid-json"], ["a.jsonl:1: not a JSON object", "a.jsonl:2: not a JSON object"]
    _record(store, _errors([None, None], *line))
    _record(store, _errors([None, None], *line))  # a rerun that fails on the same lines again
    rows = store.sql('select message from "r@errors" order by message').fetchall()
    assert rows == [("a.jsonl:1: not a JSON object",), ("a.jsonl:2: not a JSON object",)]


def test_error_files_of_an_older_featurestore_still_read(store, monkeypatch):
    # An older featurestore wrote one prose column, ``reason``; write such a file through the same commit path.
    monkeypatch.setattr(_writer, "error_table", lambda errors, key: errors)
    _record(store, pa.table({"id": pa.array([1, 2, None], pa.int64()),
                             "reason": ["null: the text is null", "invalid-json: a.jsonl:3: not JSON", "odd"]}))
    monkeypatch.undo()
    _record(store, _errors([3], ["empty"], ["the text is empty"]),
            rows={"id": np.array([2]), "embedding": np.ones((1, 4), np.float32)})  # id 2 now succeeds
    rows = store.sql('select id, kind, message, reason from "r@errors" order by id nulls last').fetchall()
    assert rows == [(1, "null", "the text is null", "null: the text is null"),
                    (3, "empty", "the text is empty", "empty: the text is empty"),
                    (None, "odd", None, "odd")]


def test_every_set_has_an_errors_view_with_the_columns_of_one_that_has_errors(store, tmp_path):
    """``"name@errors"`` exists before any error (scripts can always query it): same columns and key types, no rows."""
    import duckdb

    rows = {"id": np.arange(3), "embedding": np.ones((3, 4), np.float32)}
    with store.writer("clean", spec=SPEC) as w:
        w.append(rows)
    _record(store, _errors([7], ["null"], ["the text is null"]), rows=rows)  # "r": one error
    empty = store.sql('select * from "clean@errors"').arrow()
    full = store.sql('select * from "r@errors"').arrow()
    assert empty.num_rows == 0 and full.num_rows == 1
    assert empty.schema.names == full.schema.names == ["version", "id", "kind", "message", "reason", "run_id"]
    assert empty.schema == full.schema
    assert store.get("clean").errors().schema == store.get("r").errors().schema
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:  # the persisted catalog has it too
        con.execute(f"SET file_search_path = '{store.root}'")
        assert con.execute('select count(*) from "clean@errors"').fetchone() == (0,)
    assert store.doctor().ok


def test_errors_view_of_a_set_with_a_compound_string_key(store):
    spec = {"encoder": "external:test-model", "dim": 2}
    with store.writer("pairs", key=["user", "item"], spec=spec) as w:
        w.append({"user": ["a"], "item": [1], "embedding": np.ones((1, 2), np.float32)})
    table = store.sql('select * from "pairs@errors"').arrow()
    assert table.num_rows == 0 and table.schema.field("user").type == pa.string()
    assert table.schema.field("item").type == pa.int64()

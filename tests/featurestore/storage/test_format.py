"""``to_table``: the one converter from table-like input to Arrow, and the partition layout."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from featurestore import ValidationError
from featurestore.storage._format import EMBEDDING, changed_rows, key_tokens, to_table

IDS = [1, 2, 3]
MATRIX = np.arange(6, dtype=np.float32).reshape(3, 2)
WANT = pa.table({"id": pa.array(IDS, pa.int64()), "name": ["a", "b", "c"]})


class _Stream:
    """A foreign object that only speaks the Arrow C stream protocol."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


class _Array:
    """A foreign object that only speaks the Arrow C array protocol (a struct array: one record batch)."""

    def __init__(self, table: pa.Table) -> None:
        self.batch = table.to_batches()[0]

    def __arrow_c_array__(self, requested_schema=None):
        return self.batch.__arrow_c_array__(requested_schema)


@pytest.mark.parametrize("make", [
    lambda: WANT,
    lambda: WANT.to_batches()[0],
    lambda: pd.DataFrame({"id": IDS, "name": ["a", "b", "c"]}),
    lambda: {"id": np.asarray(IDS), "name": ["a", "b", "c"]},
    lambda: _Stream(WANT),
    lambda: _Array(WANT),
    lambda: pa.RecordBatchReader.from_batches(WANT.schema, WANT.to_batches()),
    lambda: duckdb.sql("select * from (values (1::BIGINT, 'a'), (2, 'b'), (3, 'c')) t(id, name) order by id"),
    lambda: pa.table({"id": IDS, "name": pa.array(["a", "b", "c"], pa.large_string())}),
    lambda: pa.table({"id": IDS, "name": pa.array(["a", "b", "c"], pa.string_view())}),
], ids=["table", "record-batch", "pandas", "dict", "c-stream", "c-array", "reader", "duckdb", "large-string",
        "string-view"])
def test_every_table_like_input_gives_the_same_table(make):
    got = to_table(make())
    assert got.replace_schema_metadata(None).equals(WANT), got.schema


def test_a_dict_with_a_matrix_gives_a_fixed_size_list_column():
    got = to_table({"id": np.asarray(IDS), "vec": MATRIX}, embedding="vec")
    assert got.column_names == ["id", EMBEDDING]
    assert got.schema.field(EMBEDDING).type == pa.list_(pa.float32(), 2)


@pytest.mark.parametrize("data, options, err, match", [
    ([1, 2, 3], {}, TypeError, "Cannot convert list to an Arrow table"),
    (object(), {}, TypeError, "__arrow_c_stream__"),
    ({"id": IDS, "embedding": np.zeros((3, 2, 2), np.float32)}, {}, ValidationError, "3-D array"),
    ({"id": IDS, "vec": MATRIX, "embedding": MATRIX}, {"embedding": "vec"}, ValidationError, "Both 'vec' and 'embedding'"),
    ({"id": IDS}, {"embedding": "vec"}, ValidationError, "No column 'vec'"),
])
def test_what_it_refuses(data, options, err, match):
    with pytest.raises(err, match=match):
        to_table(data, **options)


def test_mixed_pandas_columns_go_through_the_given_converter():
    frame = pd.DataFrame({"id": [1, 2], "text": ["a", 3]})
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        to_table(frame)
    got = to_table(frame, mixed=lambda values: pa.array([str(v) for v in values]))
    assert got.column("text").to_pylist() == ["a", "3"]


def test_changed_rows_skips_identical_rows_only():
    table = pa.table({"id": [1, 2, 3], "content_hash": ["h1", "new", "h3"]})
    tokens = key_tokens(table, ["id"]).to_pylist()
    keep = changed_rows(tokens, table.column("content_hash").to_pylist(), {1: "h1", 2: "h2"})
    assert keep.tolist() == [False, True, True]


def test_to_matrix_of_a_slice_holds_only_the_slice_rows():
    from featurestore.storage._format import to_matrix

    arr = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float32)), 2)
    np.testing.assert_array_equal(to_matrix(arr.slice(0, 3), 2), np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(to_matrix(arr.slice(4, 2), 2), np.arange(8, 12, dtype=np.float32).reshape(2, 2))
    np.testing.assert_array_equal(to_matrix(arr, 2), np.arange(12, dtype=np.float32).reshape(6, 2))

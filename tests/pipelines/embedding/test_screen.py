"""Which rows a job sets aside, and as what: one error kind and message per bad text, the source's report first."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.embedding._screen import classify_texts


def _nulls(n: int) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array([None] * n, pa.string())])


@pytest.mark.parametrize("value, typ, kind, message", [
    ("fine", pa.string(), None, None),
    (None, pa.string(), "null", "the text is null"),
    ("", pa.string(), "empty", "the text is empty or only whitespace"),
    (" \t\n", pa.large_string(), "empty", "the text is empty or only whitespace"),
    ("café".encode(), pa.binary(), None, None),
    (b"caf\xe9 au lait", pa.binary(), "undecodable", "not valid UTF-8 (invalid continuation byte at byte 3)"),
    (b"  ", pa.binary(), "empty", "the text is empty or only whitespace"),
    (17, pa.int64(), "non-string", "a int64 value, not text"),
    (["a"], pa.list_(pa.string()), "non-string", "a list<item: string> value, not text"),
    ("__featurestore_non_string__:int", pa.string(), None, None),  # once an in-band marker; now just a text
])
def test_each_bad_text_gets_a_kind_and_a_message(value, typ, kind, message):
    texts, kinds, messages = classify_texts(pa.chunked_array([pa.array([value], typ)]), _nulls(1), _nulls(1))
    assert (kinds[0], messages[0]) == (kind, message)
    if kind is None:
        assert texts[0] == (value.decode() if isinstance(value, bytes) else value)


def test_what_the_source_reported_comes_first():
    column = pa.chunked_array([pa.array([None, "fine"], pa.string())])
    reported = pa.chunked_array([pa.array(["invalid-json", None], pa.string())])
    said = pa.chunked_array([pa.array(["r.jsonl:3: not valid JSON", None], pa.string())])
    _, kinds, messages = classify_texts(column, reported, said)
    assert kinds.tolist() == ["invalid-json", None]
    assert messages.tolist() == ["r.jsonl:3: not valid JSON", None]

"""Sources on any filesystem pyarrow or fsspec reads: ``s3://bucket/reviews.parquet`` works as a local path does.

Tested through fsspec's in-memory filesystem (``memory://``), a real filesystem implementation that goes through the
same code as an object store (pyarrow's ``PyFileSystem``: listing, random-access Parquet reads, streamed CSV and
JSONL): the same rows, vectors and error rows as from local files, and a rerun resumes.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import featurestore
import pipelines
from featurestore.errors import ValidationError

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def bucket(tmp_path):
    """The same reviews as local files and as files in ``memory://<unique>/``, in Parquet (two row groups), CSV and
    JSONL (with a line that is not JSON)."""
    memory = fsspec.filesystem("memory")
    root = f"/bucket-{tmp_path.name}"
    table = pa.table({"id": np.arange(40), "text": [f"review {i}: a soft cotton dress" for i in range(40)]})
    local = tmp_path / "local"
    for fmt in ("parquet", "csv", "jsonl"):
        (local / fmt).mkdir(parents=True)
    for part, piece in enumerate([table.slice(0, 25), table.slice(25)]):
        pq.write_table(piece, local / "parquet" / f"part-{part}.parquet", row_group_size=10)
        pacsv.write_csv(piece, local / "csv" / f"part-{part}.csv")
        lines = [json.dumps(r) for r in piece.to_pylist()]
        if part == 1:
            lines.insert(3, "{not json")
        (local / "jsonl" / f"part-{part}.jsonl").write_text("\n".join(lines) + "\n")
    for path in local.rglob("*.*"):
        memory.pipe(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
    yield local, f"memory://{root}"
    memory.rm(root, recursive=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_remote_folder_gives_what_the_local_folder_gives(tmp_path, bucket, fmt):
    local, remote = bucket
    options = dict(encoder="hash:32", name="t", progress=False, key_types={"id": "int64"} if fmt == "csv" else None)
    source = lambda where: pipelines.TableSource(where, key_types=options["key_types"])  # noqa: E731
    a = pipelines.embed(tmp_path / "a", source(local / fmt), **{k: v for k, v in options.items() if k != "key_types"})
    b = pipelines.embed(tmp_path / "b", source(f"{remote}/{fmt}"),
                        **{k: v for k, v in options.items() if k != "key_types"})
    assert (b.rows_read, b.rows_written, b.rows_failed) == (a.rows_read, a.rows_written, a.rows_failed)
    assert b.rows_written == 40 and b.rows_failed == (1 if fmt == "jsonl" else 0)
    fa, fb = featurestore.open(tmp_path / "a").get("t"), featurestore.open(tmp_path / "b").get("t")
    ta, tb = fa.to_arrow().sort_by("id"), fb.to_arrow().sort_by("id")
    assert ta.column("id").equals(tb.column("id"))
    np.testing.assert_array_equal(fa.to_numpy()[np.argsort(fa.keys().column("id"))],
                                  fb.to_numpy()[np.argsort(fb.keys().column("id"))])
    assert fb.manifest.provenance["source"] == f"{remote}/{fmt}"
    if fmt == "jsonl":  # the error row names the remote file and line, as a local one does
        reason = featurestore.open(tmp_path / "b").sql('SELECT reason FROM "t@errors"').arrow().column(0)[0].as_py()
        assert reason.startswith("invalid-json: part-1.jsonl:4")
    again = pipelines.embed(tmp_path / "b", source(f"{remote}/{fmt}"),
                            **{k: v for k, v in options.items() if k != "key_types"})
    assert (again.rows_written, again.rows_skipped) == (0, 40)


def test_one_remote_file_and_the_cli(tmp_path, bucket):
    from click.testing import CliRunner

    from pipelines.cli import cli

    _, remote = bucket
    out = CliRunner().invoke(cli, ["embed", "--store", str(tmp_path / "s"), "--source",
                                   f"{remote}/parquet/part-1.parquet", "-e", "hash:8", "--name", "t", "--json",
                                   "--no-progress"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["rows_written"] == 15


def test_a_missing_remote_path_or_unknown_protocol_is_named(bucket):
    _, remote = bucket
    with pytest.raises(ValidationError, match="does not exist"):
        pipelines.TableSource(f"{remote}/nothing-here.parquet")
    with pytest.raises(ValidationError, match="nosuchfs://bucket/x.parquet"):
        pipelines.TableSource("nosuchfs://bucket/x.parquet")

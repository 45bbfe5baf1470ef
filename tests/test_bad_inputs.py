"""A catalogue of bad inputs: each one fails with a clear error that names the row, file or column (or becomes an
error row of a job), and leaves the store exactly as it was.

Every case runs in a fresh store that already holds two healthy feature sets, ``healthy`` (20 rows, two
partitions) and ``other`` (15 rows, two partitions; the manifest and partition cases corrupt this one). After a case:

- every file under the store has the same bytes and mtime as before (``catalog.duckdb``, lock files and
  ``catalog.stale`` aside) and no file or folder appeared (a folder holding only a writer's lock file aside);
- ``healthy`` still reads the same rows, through the API and through SQL.

``expect`` is an exception class (the error must be an instance of it and contain ``fragment``), ``ERROR_ROW``
(a job that must succeed and put the bad row in ``"job@errors"`` with a reason containing ``fragment``),
``ERROR_OR_RAISE`` (either of the two: a job may refuse a source line or record it as an error row, as long as it
names it), ``NOOP`` (the call succeeds and writes nothing) or ``REFUSE_OR_FLAG`` (for a damaged partition: reading
it raises an error naming the file, or ``store.doctor()`` reports that file). A fragment may be a tuple of fragments
that must all appear. Keys read back from CSV are compared as text (a CSV cell has no type).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featurestore
import pipelines
from featurestore import (
    FeatureStoreError,
    InvalidNameError,
    SpecMismatchError,
    UnknownEncoderError,
    ValidationError,
)

SPEC = {"encoder": "external:test-model", "metric": "cosine"}
DIM = 16
HEALTHY_ROWS = 20
OTHER_ROWS = 15
BAD_KEY = 2  # the bad row of the job sources

ERROR_ROW = "error row"
ERROR_OR_RAISE = "error row or a FeatureStoreError"
NOOP = "noop"
REFUSE_OR_FLAG = "refuse or flag"

# Files the store may touch without that being a change: the catalog index, its stale marker and lock files.
IGNORED_FILES = {"catalog.duckdb", "catalog.duckdb.wal", "catalog.stale"}


def _ignored(path: Path) -> bool:
    return path.name in IGNORED_FILES or path.name.endswith(".lock")


def snapshot(root: Path) -> dict[str, Any]:
    """Every file's bytes and mtime and every folder under ``root`` (ignored files and lock-only folders aside)."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            kids = list(p.iterdir())
            if kids and all(_ignored(k) and k.is_file() for k in kids):
                continue  # a feature set folder that only holds the lock of a refused writer
            out[rel + "/"] = "dir"
        elif not _ignored(p):
            st = p.lstat()
            out[rel] = (p.read_bytes() if p.is_file() else os.readlink(p), st.st_mtime_ns)
    return out


def diff(before: dict[str, Any], after: dict[str, Any], *, ignore_prefix: str | None = None) -> list[str]:
    keys = set(before) | set(after)
    if ignore_prefix:
        keys = {k for k in keys if not k.startswith(ignore_prefix)}
    out = []
    for k in sorted(keys):
        if k not in before:
            out.append(f"new: {k}")
        elif k not in after:
            out.append(f"removed: {k}")
        elif before[k] != after[k]:
            what = "bytes" if before[k][0] != after[k][0] else "mtime"
            if what == "bytes" and k.endswith(".json"):
                try:
                    old, new = json.loads(before[k][0]), json.loads(after[k][0])
                    what = "fields " + ", ".join(sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f)))
                except (ValueError, AttributeError):
                    pass
            out.append(f"changed ({what}): {k}")
    return out


# -- the store every case starts from ---------------------------------------------------------------------------

@dataclass
class Ctx:
    store: featurestore.Store
    tmp: Path  # a scratch folder outside the store
    vectors: np.ndarray

    @property
    def root(self) -> Path:
        return self.store.root

    def vdir(self, name: str = "other", version: int = 1) -> Path:
        return self.root / "sets" / name / f"v{version}"

    def manifest_path(self, name: str = "other") -> Path:
        return self.vdir(name) / "manifest.json"

    def manifest(self, name: str = "other") -> dict[str, Any]:
        return json.loads(self.manifest_path(name).read_text())

    def edit_manifest(self, fn: Callable[[dict[str, Any]], Any], name: str = "other") -> None:
        data = self.manifest(name)
        fn(data)
        self.manifest_path(name).write_text(json.dumps(data, indent=1))

    def part(self, name: str = "other", index: int = 0) -> Path:
        return self.vdir(name) / self.manifest(name)["partitions"][index]["file"]

    def healthy_sql(self) -> list[tuple]:
        return self.store.sql("select id, embedding from healthy order by id").fetchall()

    # the calls cases make
    def write(self, name: str, data: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("spec", SPEC)
        return self.store.write(name, data, **kwargs)

    def rows(self, ids: Any, matrix: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
        ids = np.asarray(ids)
        return {"id": ids, "embedding": self.vectors[: len(ids)] if matrix is None else matrix, **extra}

    def embed(self, source: Any, **kwargs: Any) -> Any:
        kwargs = {"key": "id", "text": "review", "encoder": "hash:16", "name": "job", "progress": False, **kwargs}
        return pipelines.embed(self.store, source, **kwargs)

    def read(self, name: str = "other") -> None:
        """What a reader does: the API and SQL over the set."""
        fs = self.store.get(name)
        fs.to_arrow()
        fs.to_numpy()
        self.store.sql(f"select * from {name}").fetchall()

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path


def _fill(store: featurestore.Store, vectors: np.ndarray) -> None:
    store.write("healthy", {"id": np.arange(12), "embedding": vectors[:12]}, spec=SPEC)
    store.write("healthy", {"id": np.arange(12, HEALTHY_ROWS), "embedding": vectors[12:HEALTHY_ROWS]}, spec=SPEC)
    store.write("other", {"id": np.arange(10), "embedding": vectors[20:30]}, spec=SPEC)
    store.write("other", {"id": np.arange(10, OTHER_ROWS), "embedding": vectors[30:35]}, spec=SPEC)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The healthy store, built once through the API; each case gets a copy.

    The copy's catalog.duckdb still names the template's folder: only doctor looks at that, and the doctor test
    below rebuilds it first (the other doctor check here only looks at findings about one partition)."""
    root = tmp_path_factory.mktemp("template") / "store"
    store = featurestore.open(root)
    _fill(store, _VECTORS)
    assert store.doctor().ok
    _HEALTHY.update(arrow=store.get("healthy").to_arrow(),
                    sql=store.sql("select id, embedding from healthy order by id").fetchall())
    assert _HEALTHY["arrow"].num_rows == len(_HEALTHY["sql"]) == HEALTHY_ROWS
    return root


_HEALTHY: dict[str, Any] = {}  # what the healthy set reads in the template


_VECTORS = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)


@pytest.fixture
def ctx(tmp_path: Path, template: Path) -> Ctx:
    shutil.copytree(template, tmp_path / "store")
    store = featurestore.open(tmp_path / "store", create=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Ctx(store, scratch, _VECTORS.copy())


@dataclass
class Case:
    id: str
    group: str
    act: Callable[[Ctx], Any]
    expect: Any  # an exception class (or tuple), ERROR_ROW, NOOP or REFUSE_OR_FLAG
    fragment: str | tuple[str, ...] = ""  # formatted with {manifest}, {part}, {tmp}, {model}
    setup: Callable[[Ctx], Any] | None = None


# -- builders -----------------------------------------------------------------------------------------------------

def _reviews(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n), "review": [f"review number {i} soft cotton" for i in range(n)]})


def _csv(ctx: Ctx, name: str, text: str) -> Path:
    return ctx.file(name, text)


def _jsonl(ctx: Ctx, name: str, rows: list[Any]) -> Path:
    return ctx.file(name, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def _with_bad_row(value: Any) -> list[dict[str, Any]]:
    rows = [{"id": i, "review": f"review number {i}"} for i in range(5)]
    rows[BAD_KEY]["review"] = value
    return rows


def _mixed_dir(ctx: Ctx) -> Path:
    d = ctx.tmp / "mixed"
    d.mkdir()
    _reviews(3).to_csv(d / "a.csv", index=False)
    _reviews(3).to_json(d / "b.jsonl", orient="records", lines=True)
    return d


def _parquet_dir_schema_clash(ctx: Ctx) -> Path:
    d = ctx.tmp / "clash"
    d.mkdir()
    pq.write_table(pa.table({"id": [0, 1], "review": ["a", "b"]}), d / "a.parquet")
    pq.write_table(pa.table({"id": ["x", "y"], "review": ["c", "d"]}), d / "b.parquet")
    return d


def _fsl(matrix: np.ndarray) -> pa.Array:
    return featurestore.storage._format.fixed_size_list(matrix)


def _nan(ctx: Ctx) -> np.ndarray:
    x = ctx.vectors[:4].copy()
    x[2, 5] = np.nan
    return x


def _inf(ctx: Ctx) -> np.ndarray:
    x = ctx.vectors[:4].copy()
    x[1, 0] = -np.inf
    return x


def _ragged(ctx: Ctx) -> pa.Table:
    emb = pa.array([ctx.vectors[0].tolist(), ctx.vectors[1].tolist(), ctx.vectors[2][:8].tolist()], pa.list_(pa.float32()))
    return pa.table({"id": [100, 101, 102], "embedding": emb})


def _replace_part(ctx: Ctx, table: pa.Table, index: int = 0) -> None:
    """Overwrite ``other``'s partition with ``table`` and make the manifest's size, CRC32 and rows agree with it."""
    path = ctx.part(index=index)
    meta = pq.read_schema(path).metadata
    pq.write_table(table.replace_schema_metadata(meta), path)
    crc = featurestore.storage._atomic.file_crc32(path)

    def fix(m: dict[str, Any]) -> None:
        m["partitions"][index].update(bytes=path.stat().st_size, crc32=crc, rows=table.num_rows)

    ctx.edit_manifest(fix)


def _schema_mismatch(ctx: Ctx) -> None:
    t = pq.read_table(ctx.part())
    t = t.rename_columns(["key" if c == "id" else c for c in t.column_names])  # the key column renamed
    _replace_part(ctx, t)


def _dim_mismatch(ctx: Ctx) -> None:
    t = pq.read_table(ctx.part())
    narrow = _fsl(np.ascontiguousarray(featurestore.storage._format.to_matrix(t.column("embedding"), DIM)[:, :8]))
    _replace_part(ctx, t.set_column(t.column_names.index("embedding"), "embedding", narrow))


def _dtype_mismatch(ctx: Ctx) -> None:
    t = pq.read_table(ctx.part())
    wide = pa.FixedSizeListArray.from_arrays(
        pa.array(featurestore.storage._format.to_matrix(t.column("embedding"), DIM).astype(np.float64).reshape(-1)), DIM)
    _replace_part(ctx, t.set_column(t.column_names.index("embedding"), "embedding", wide))


def _truncate(ctx: Ctx) -> None:
    path = ctx.part()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(ctx: Ctx) -> None:
    path = ctx.part()
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # in the (uncompressed) vectors: the file still parses
    path.write_bytes(bytes(data))


def _empty_part(ctx: Ctx) -> None:
    ctx.part().write_bytes(b"")


def _manifest_text(text: str) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.manifest_path().write_text(text)


def _manifest_edit(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.edit_manifest(fn)


def _set_part_file(ctx: Ctx, absolute: bool) -> None:
    healthy_part = ctx.part("healthy")
    target = str(healthy_part) if absolute else "../../healthy/v1/" + healthy_part.name

    def fn(m: dict[str, Any]) -> None:
        m["partitions"][0]["file"] = target

    ctx.edit_manifest(fn)


# saved models: one tiny real model, fitted once, copied into each case's store
_MODEL_CACHE: dict[str, Path] = {}


def _saved_model(tmp_root: Path) -> Path:
    if "path" not in _MODEL_CACHE:
        import stackers

        rng = np.random.default_rng(0)
        y = np.repeat([0, 1], 20)
        blocks = {"a": (rng.standard_normal((40, 4)) + y[:, None]).astype(np.float32),
                  "b": (rng.standard_normal((40, 3)) - y[:, None]).astype(np.float32)}
        model = stackers.StackingClassifier(meta="logistic", cv=2).fit(stackers.TrainingSet(blocks=blocks, y=y))
        _MODEL_CACHE["path"] = model.save(tmp_root / "model")
    return _MODEL_CACHE["path"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return _saved_model(tmp_path_factory.mktemp("saved-model"))


def _model_dir(ctx: Ctx) -> Path:
    return ctx.store.models_dir / "m"


def _install_model(ctx: Ctx, corrupt: Callable[[Path], Any]) -> None:
    dst = _model_dir(ctx)
    shutil.copytree(_MODEL_CACHE["path"], dst)
    corrupt(dst)


def _model_case(corrupt: Callable[[Path], Any]) -> Callable[[Ctx], None]:
    return lambda ctx: _install_model(ctx, corrupt)


def _edit_model_manifest(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        data = json.loads((path / "manifest.json").read_text())
        fn(data)
        (path / "manifest.json").write_text(json.dumps(data))
    return corrupt


def _load_model(ctx: Ctx) -> Any:
    import stackers

    return stackers.load(_model_dir(ctx))


def _toml(ctx: Ctx, text: str) -> Path:
    return ctx.file("job.toml", text)


# -- the catalogue ------------------------------------------------------------------------------------------------

def _cases() -> list[Case]:
    c: list[Case] = []
    add = lambda *a, **k: c.append(Case(*a, **k))  # noqa: E731

    # files: a job's source
    add("file-missing-source", "files", lambda x: x.embed(x.tmp / "nope.parquet"), FeatureStoreError, "nope.parquet")
    add("file-empty-csv", "files", lambda x: x.embed(_csv(x, "empty.csv", "")), FeatureStoreError, "empty.csv")
    add("file-empty-jsonl", "files", lambda x: x.embed(_csv(x, "empty.jsonl", "")), FeatureStoreError, "empty.jsonl")
    add("file-empty-parquet", "files", lambda x: x.embed(_csv(x, "empty.parquet", "")), FeatureStoreError, "empty.parquet")
    add("file-csv-missing-key-column", "files",
        lambda x: x.embed(_csv(x, "r.csv", "review\nsoft\nthin\n")), FeatureStoreError, "['id']")
    add("file-csv-missing-text-column", "files",
        lambda x: x.embed(_csv(x, "r.csv", "id,body\n1,soft\n")), FeatureStoreError, "['review']")
    add("file-csv-ragged-row", "files",
        lambda x: x.embed(_csv(x, "ragged.csv", "id,review\n1,soft\n2,thin,extra,fields\n3,ok\n")),
        FeatureStoreError, "ragged.csv")
    add("file-jsonl-bad-line", "files",
        lambda x: x.embed(_jsonl(x, "bad.jsonl", ['{"id": 0, "review": "a"}', '{"id": 1, "review": ', '{"id": 2, "review": "c"}'])),
        ERROR_OR_RAISE, "bad.jsonl:2")
    add("file-jsonl-line-not-an-object", "files",
        lambda x: x.embed(_jsonl(x, "arr.jsonl", [{"id": 0, "review": "a"}, "[1, 2]"])), ERROR_OR_RAISE, "arr.jsonl:2")
    add("file-parquet-not-parquet", "files",
        lambda x: x.embed(_csv(x, "fake.parquet", "id,review\n1,this is a csv\n")), FeatureStoreError, "fake.parquet")
    add("file-unknown-extension", "files",
        lambda x: x.embed(_csv(x, "r.txt", "id,review\n1,a\n")), FeatureStoreError, "r.txt")
    add("file-dir-mixed-formats", "files", lambda x: x.embed(_mixed_dir(x)), FeatureStoreError, "mixes formats")
    add("file-dir-without-data", "files",
        lambda x: x.embed(_csv(x, "docs/readme.txt", "hello").parent), FeatureStoreError, "docs")
    add("file-parquet-dir-schema-clash", "files", lambda x: x.embed(_parquet_dir_schema_clash(x)),
        FeatureStoreError, "clash")
    add("file-source-null-key", "files",
        lambda x: x.embed(_csv(x, "nullkey.csv", "id,review\n1,a\n,b\n3,c\n")), ValidationError, "nullkey.csv")
    add("file-source-duplicate-key", "files",
        lambda x: x.embed(_csv(x, "dup.csv", "id,review\n1,a\n2,b\n2,c\n")), ValidationError,
        ("dup.csv", "more than once", "id="))
    add("file-job-spec-not-toml", "files",
        lambda x: pipelines.run_job(_toml(x, 'source = "x.csv"\nname = \n')), ValidationError, "job.toml")
    add("file-job-spec-missing", "files", lambda x: pipelines.run_job(x.tmp / "nojob.toml"), ValidationError, "nojob.toml")

    # rows: store.write, appending to the healthy set or starting a new one
    add("row-wrong-dim", "rows", lambda x: x.write("healthy", x.rows([100, 101], x.vectors[:2, :8])), ValidationError, "dim=8")
    add("row-wrong-dim-new-set-spec", "rows",
        lambda x: x.write("fresh", x.rows([1, 2]), spec={**SPEC, "dim": 8}), ValidationError, "dim")
    add("row-nan", "rows", lambda x: x.write("healthy", x.rows([100, 101, 102, 103], _nan(x))), ValidationError, "id=102")
    add("row-inf", "rows", lambda x: x.write("healthy", x.rows([100, 101, 102, 103], _inf(x))), ValidationError, "id=101")
    add("row-nan-new-float16-set", "rows",
        lambda x: x.write("fresh", x.rows([100, 101, 102, 103], _nan(x).astype(np.float16))), ValidationError, "id=102")
    add("row-null-key", "rows",
        lambda x: x.write("healthy", pa.table({"id": pa.array([100, None, 102]), "embedding": _fsl(x.vectors[:3])})),
        ValidationError, "row 1")
    add("row-null-key-compound", "rows",
        lambda x: x.write("fresh", pa.table({"u": [1, 1, 2], "i": pa.array(["a", None, "b"]),
                                             "embedding": _fsl(x.vectors[:3])}), key=["u", "i"]),
        ValidationError, "'i' at row 1")
    add("row-duplicate-key", "rows", lambda x: x.write("healthy", x.rows([100, 101, 101, 102])), ValidationError, "id=101")
    add("row-duplicate-compound-key", "rows",
        lambda x: x.write("fresh", pa.table({"u": [1, 1, 1], "i": ["a", "b", "a"], "embedding": _fsl(x.vectors[:3])}),
                          key=["u", "i"]), ValidationError, "u=1, i='a'")
    add("row-string-embedding", "rows",
        lambda x: x.write("healthy", pa.table({"id": [100, 101], "embedding": ["a", "b"]})), ValidationError, "'embedding'")
    add("row-list-of-strings-embedding", "rows",
        lambda x: x.write("healthy", pa.table({"id": [100], "embedding": pa.array([["a"] * DIM])})),
        ValidationError, "'embedding'")
    add("row-int-embedding", "rows",
        lambda x: x.write("healthy", pa.table({"id": [100, 101], "embedding": pa.array([[1] * DIM, [2] * DIM], pa.list_(pa.int64()))})),
        ValidationError, "float32 or float16")
    add("row-int-matrix-embedding", "rows",
        lambda x: x.write("healthy", x.rows([100, 101], np.ones((2, DIM), dtype=np.int32))), ValidationError, "'embedding'")
    add("row-bool-embedding", "rows",
        lambda x: x.write("healthy", x.rows([100, 101], np.ones((2, DIM), dtype=bool))), ValidationError, "'embedding'")
    add("row-ragged-lists", "rows", lambda x: x.write("healthy", _ragged(x)), ValidationError, "id=102 has dim 8")
    add("row-ragged-lists-new-set", "rows", lambda x: x.write("fresh", _ragged(x)), ValidationError, "id=102 has dim 8")
    add("row-null-embedding", "rows",
        lambda x: x.write("healthy", pa.table({"id": [100, 101], "embedding": pa.array([x.vectors[0].tolist(), None],
                                                                             pa.list_(pa.float32()))})),
        ValidationError, "id=101")
    add("row-embedding-column-missing", "rows",
        lambda x: x.write("healthy", {"id": np.arange(3)}), ValidationError, "'embedding'")
    add("row-key-column-missing", "rows",
        lambda x: x.write("healthy", {"key": np.arange(3), "embedding": x.vectors[:3]}), ValidationError, "'id'")
    add("row-float-key", "rows",
        lambda x: x.write("fresh", {"id": np.array([0.5, 1.5]), "embedding": x.vectors[:2]}), ValidationError, "'id'")
    add("row-system-column-as-key", "rows",
        lambda x: x.write("fresh", x.rows([1, 2], run_id=np.array(["a", "b"])), key="run_id"), ValidationError, "'run_id'")
    add("row-matrix-3d", "rows",
        lambda x: x.write("healthy", {"id": np.arange(2), "embedding": np.ones((2, 4, 4), np.float32)}),
        (ValidationError, TypeError, ValueError), "embedding")
    add("row-float16-overflow", "rows",
        lambda x: x.write("fresh", x.rows([100, 101], np.full((2, DIM), 1e6, np.float32)), spec={**SPEC, "dtype": "float16"}),
        ValidationError, "id=100")
    add("row-float16-overflow-one-row", "rows",
        lambda x: x.write("fresh", x.rows([100, 101], np.vstack([np.zeros(DIM), np.full(DIM, 7e4)]).astype(np.float32)),
                          spec={**SPEC, "dtype": "float16"}), ValidationError, "id=101")
    add("row-key-type-differs", "rows",
        lambda x: x.write("healthy", {"id": np.array(["a", "b"]), "embedding": x.vectors[:2]}), ValidationError, "id: int64 -> string")
    add("row-key-int32-vs-int64", "rows",
        lambda x: x.write("healthy", {"id": np.array([100, 101], np.int32), "embedding": x.vectors[:2]}),
        ValidationError, "id: int64 -> int32")
    add("row-extra-column-on-append", "rows",
        lambda x: x.write("healthy", x.rows([100, 101], price=np.array([1.0, 2.0]))), ValidationError, "price")
    add("row-extra-nested-column", "rows",
        lambda x: x.write("fresh", x.rows([1, 2], tags=pa.array([["a"], ["b", "c"]]))), ValidationError, "'tags'")
    add("row-extra-struct-column", "rows",
        lambda x: x.write("fresh", x.rows([1, 2], meta=pa.array([{"a": 1}, {"a": 2}]))), ValidationError, "'meta'")
    add("row-event-time-not-timestamp", "rows",
        lambda x: x.write("fresh", x.rows([1, 2], event_time=np.array(["2026-01-01", "yesterday"]))), ValidationError, "'event_time'")
    add("row-event-time-int", "rows",
        lambda x: x.write("healthy", x.rows([100, 101], event_time=np.array([1, 2]))), ValidationError, "'event_time'")
    add("row-content-hash-not-string", "rows",
        lambda x: x.write("fresh", x.rows([1, 2], content_hash=np.array([1, 2]))), ValidationError, "'content_hash'")
    add("row-content-hash-null", "rows",
        lambda x: x.write("healthy", x.rows([100, 101], content_hash=pa.array(["h", None]))), ValidationError, "id=101")
    add("row-dim-0", "rows",
        lambda x: x.write("fresh", {"id": np.arange(3), "embedding": np.zeros((3, 0), np.float32)}), ValidationError, "dimension")
    add("row-empty-lists", "rows",
        lambda x: x.write("fresh", pa.table({"id": [1, 2], "embedding": pa.array([[], []], pa.list_(pa.float32()))})),
        ValidationError, "dimension")
    add("row-empty-write-new-set", "rows",
        lambda x: x.write("fresh", {"id": np.arange(0), "embedding": np.zeros((0, DIM), np.float32)}), NOOP)
    add("row-empty-write-existing-set", "rows",
        lambda x: x.write("healthy", {"id": np.arange(0), "embedding": np.zeros((0, DIM), np.float32)}), NOOP)
    add("row-not-a-table", "rows", lambda x: x.write("healthy", [1, 2, 3]), (TypeError, ValidationError), "list")

    # rows of a job: error rows, the job goes on
    add("job-empty-text", "rows", lambda x: x.embed(pd.DataFrame(_with_bad_row(""))), ERROR_ROW, "empty")
    add("job-whitespace-text", "rows", lambda x: x.embed(_jsonl(x, "ws.jsonl", _with_bad_row(" \t\n "))), ERROR_ROW, "empty")
    add("job-null-text", "rows", lambda x: x.embed(_jsonl(x, "null.jsonl", _with_bad_row(None))), ERROR_ROW, "null")
    add("job-non-string-text", "rows", lambda x: x.embed(_jsonl(x, "num.jsonl", _with_bad_row(17))), ERROR_ROW, "non-string")
    add("job-list-text", "rows", lambda x: x.embed(_jsonl(x, "list.jsonl", _with_bad_row(["a", "b"]))), ERROR_ROW, "non-string")
    add("job-non-string-text-pandas", "rows",
        lambda x: x.embed(pd.DataFrame(_with_bad_row(3.5))), ERROR_ROW, "non-string")
    add("job-undecodable-csv-text", "rows",
        lambda x: x.embed(_csv(x, "latin.csv", b"id,review\n0,good\n1,fine\n2,caf\xe9\n3,ok\n4,yes\n")), ERROR_ROW, "undecodable")

    # names
    bad_names = [("upper-case", "Reviews"), ("leading-digit", "1abc"), ("hyphen", "x-y"), ("too-long", "a" * 64),
                 ("empty", ""), ("none", None), ("space", "a b"), ("dot-dot", "../etc"), ("slash", "a/b"),
                 ("non-ascii", "naïve"), ("at-sign", "a@v1"), ("quote", 'a"b'), ("sql-select", "select"),
                 ("sql-from", "from"), ("sql-table", "table"), ("sql-order", "order"),
                 ("duckdb-left", "left"), ("duckdb-glob", "glob"), ("duckdb-natural", "natural"),
                 ("duckdb-similar", "similar"), ("duckdb-at", "at"), ("duckdb-by", "by"), ("duckdb-pivot", "pivot"),
                 ("runs", "runs"), ("feature-sets", "feature_sets"), ("errors", "errors")]
    for label, name in bad_names:
        add(f"name-{label}", "names", lambda x, n=name: x.write(n, x.rows([1, 2])), InvalidNameError, "name")
    add("name-job-upper-case", "names", lambda x: x.embed(_reviews(), name="Job"), InvalidNameError, "'Job'")
    add("name-job-left", "names", lambda x: x.embed(_reviews(), name="left"), InvalidNameError, "'left'")
    add("name-layers-clash", "names",
        lambda x: pipelines.embed_layers(x.store, _reviews(), name="x-y", layers=[None], text="review", encoder="hash:16"),
        InvalidNameError, "'x-y'")

    # manifests of the set `other`: an error naming the manifest file
    M = "{manifest}"
    add("manifest-not-json", "manifests", lambda x: x.read(), FeatureStoreError, M, _manifest_text("{not json"))
    add("manifest-empty", "manifests", lambda x: x.read(), FeatureStoreError, M, _manifest_text(""))
    add("manifest-json-array", "manifests", lambda x: x.read(), FeatureStoreError, M, _manifest_text("[1, 2]"))
    add("manifest-missing-dim", "manifests", lambda x: x.read(), FeatureStoreError, M, _manifest_edit(lambda m: m.pop("dim")))
    add("manifest-missing-partitions-crc", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m["partitions"][0].pop("crc32")))
    add("manifest-dim-string", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(dim="16")))
    add("manifest-dim-negative", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(dim=-1)))
    add("manifest-dim-huge", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(dim=10**12)))
    add("manifest-dim-disagrees-with-spec", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(dim=8)))
    add("manifest-rows-string", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m["partitions"][0].update(rows="10")))
    add("manifest-key-not-a-list", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(key="id")))
    add("manifest-dtype-float64", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(dtype="float64")))
    add("manifest-partition-path-dotdot", "manifests", lambda x: x.read(), FeatureStoreError, M,
        lambda x: _set_part_file(x, absolute=False))
    add("manifest-partition-path-absolute", "manifests", lambda x: x.read(), FeatureStoreError, M,
        lambda x: _set_part_file(x, absolute=True))
    add("manifest-version-disagrees-with-folder", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(version=7)))
    add("manifest-name-disagrees-with-folder", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(name="healthy")))
    add("manifest-format-version-newer", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(format_version=99)))
    add("manifest-unknown-field", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m.update(surprise=1)))
    add("manifest-columns-without-embedding", "manifests", lambda x: x.read(), FeatureStoreError, M,
        _manifest_edit(lambda m: m["columns"].pop("embedding")))

    # partitions of the set `other`: readers refuse naming the file, or doctor flags it
    P = "{part}"
    add("partition-truncated", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _truncate)
    add("partition-byte-flipped", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _flip)
    add("partition-deleted", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, lambda x: x.part().unlink())
    add("partition-zero-bytes", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _empty_part)
    add("partition-schema-differs-from-manifest", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _schema_mismatch)
    add("partition-dim-differs-from-manifest", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _dim_mismatch)
    add("partition-dtype-differs-from-manifest", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P, _dtype_mismatch)
    add("partition-row-count-differs-from-manifest", "partitions", lambda x: x.read(), REFUSE_OR_FLAG, P,
        _manifest_edit(lambda m: m["partitions"][0].update(rows=11)))

    # saved models: an error naming the model's files
    MOD = "{model}"
    add("model-manifest-not-json", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(lambda p: (p / "manifest.json").write_text("{oops")))
    add("model-manifest-json-array", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(lambda p: (p / "manifest.json").write_text("[]")))
    add("model-manifest-wrong-format", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(_edit_model_manifest(lambda m: m.update(format="sklearn.pickle"))))
    add("model-manifest-newer-format-version", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(_edit_model_manifest(lambda m: m.update(format_version=99))))
    add("model-manifest-missing-blocks", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(_edit_model_manifest(lambda m: m.pop("blocks"))))
    add("model-manifest-missing", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(lambda p: (p / "manifest.json").unlink()))
    add("model-arrays-missing", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(lambda p: (p / "arrays.npz").unlink()))
    add("model-arrays-not-npz", "models", _load_model, (ValueError, OSError), MOD,
        _model_case(lambda p: (p / "arrays.npz").write_bytes(b"not a zip file")))

    # specs
    add("spec-without-encoder", "specs", lambda x: x.write("fresh", x.rows([1, 2]), spec={"metric": "cosine"}),
        ValidationError, "'encoder'")
    add("spec-none", "specs", lambda x: x.write("fresh", x.rows([1, 2]), spec=None), ValidationError, "'encoder'")
    add("spec-encoder-not-a-string", "specs", lambda x: x.write("fresh", x.rows([1, 2]), spec={"encoder": 5}),
        ValidationError, "'encoder'")
    add("spec-differs-on-append", "specs",
        lambda x: x.write("healthy", x.rows([100, 101]), spec={**SPEC, "encoder": "external:other"}),
        SpecMismatchError, "encoder: 'external:test-model' -> 'external:other'")
    add("spec-metric-differs-on-append", "specs",
        lambda x: x.write("healthy", x.rows([100, 101]), spec={**SPEC, "metric": "dot"}), SpecMismatchError, "metric")
    add("spec-key-differs-on-append", "specs",
        lambda x: x.write("healthy", {"k": np.arange(2), "embedding": x.vectors[:2]}, key="k"), SpecMismatchError, "keyed by")
    add("spec-dtype-float64", "specs",
        lambda x: x.write("fresh", x.rows([1, 2]), spec={**SPEC, "dtype": "float64"}), ValidationError, "float64")
    add("spec-dtype-int8", "specs",
        lambda x: x.write("fresh", x.rows([1, 2]), spec={**SPEC, "dtype": "int8"}), ValidationError, "int8")
    add("spec-dtype-int8-with-dim", "specs",
        lambda x: x.write("fresh", x.rows([1, 2]), spec={**SPEC, "dtype": "int8", "dim": DIM}), ValidationError, "int8")
    add("spec-dtype-float16-on-float32-set", "specs",
        lambda x: x.write("healthy", x.rows([100, 101]), spec={**SPEC, "dtype": "float16"}), SpecMismatchError, "dtype")
    add("spec-dim-string", "specs",
        lambda x: x.write("fresh", x.rows([1, 2]), spec={**SPEC, "dim": "sixteen"}), ValidationError, "dim")
    add("spec-version-unknown-word", "specs",
        lambda x: x.write("healthy", x.rows([100, 101]), version="latest"), ValueError, "'latest'")
    add("spec-version-missing", "specs",
        lambda x: x.write("healthy", x.rows([100, 101]), version=9), SpecMismatchError, "no version 9")
    add("spec-job-unknown-encoder", "specs",
        lambda x: x.embed(_reviews(), encoder="nope:1"), UnknownEncoderError, "'nope'")
    add("spec-job-unknown-option", "specs", lambda x: x.embed(_reviews(), bach_size=3), ValueError, "bach_size")
    add("spec-job-dtype-float64", "specs", lambda x: x.embed(_reviews(), dtype="float64"), ValueError, "float64")
    add("spec-job-toml-unknown-field", "specs",
        lambda x: pipelines.run_job(_toml(x, 'source = "s.csv"\nname = "job"\ncolour = "red"\n')), ValidationError, "colour")
    return c


CASES = _cases()
assert len({c.id for c in CASES}) == len(CASES)
MANIFEST_CASES = [c for c in CASES if c.group == "manifests"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_nothing(ctx, case, saved_model):
    part = ctx.part() if case.group == "partitions" else None  # before the setup may delete it
    if case.setup is not None:
        case.setup(ctx)
        time.sleep(0.01)  # mtimes of anything touched later differ from the setup's
    fragments = case.fragment if isinstance(case.fragment, tuple) else (case.fragment,)
    fragments = [f.format(manifest=ctx.manifest_path(), part=part, tmp=ctx.tmp, model=_model_dir(ctx)) for f in fragments]
    before = snapshot(ctx.root)
    ignore = None

    if case.expect == ERROR_OR_RAISE:
        try:
            case.act(ctx)
        except Exception as exc:
            assert isinstance(exc, FeatureStoreError), f"{type(exc).__name__}: {exc}"
            assert all(f in str(exc) for f in fragments), f"{fragments} not all in: {exc}"
        else:
            ignore = "sets/job/"
            errors = ctx.store.sql('select reason from "job@errors"').fetchall()
            assert any(all(f in e[0] for f in fragments) for e in errors), f"no error row names {fragments}: {errors}"
    elif case.expect == ERROR_ROW:
        result = case.act(ctx)
        ignore = "sets/job/"
        assert result.rows_failed == 1 and result.rows_written == 4, result
        errors = ctx.store.sql('select id, reason from "job@errors"').fetchall()
        assert [str(e[0]) for e in errors] == [str(BAD_KEY)], errors
        assert all(f in errors[0][1] for f in fragments), errors
        assert sorted(str(k) for k in ctx.store.get("job").keys().column("id").to_pylist()) == ["0", "1", "3", "4"]
    elif case.expect == NOOP:
        result = case.act(ctx)
        assert result["rows_written"] == 0, result
    elif case.expect == REFUSE_OR_FLAG:
        try:
            case.act(ctx)
        except Exception as exc:  # a reader that refuses must say which file
            refused = f"refused with {type(exc).__name__}: {exc}"
            named = part.name in str(exc)
        else:
            refused, named = "accepted it", False
        if not named:
            report = ctx.store.doctor()
            flagged = [f for f in report.findings if f.path == str(part)]
            assert flagged, (f"no reader named {part.name} (the reader {refused}) and doctor did not flag it: "
                             f"{report.to_dict()['findings']}")
    else:
        with pytest.raises(Exception) as info:
            case.act(ctx)
        exc = info.value
        assert isinstance(exc, case.expect), f"expected {case.expect}, got {type(exc).__name__}: {exc}"
        missing = [f for f in fragments if f not in str(exc)]
        assert not missing, f"{missing} not in the message: {type(exc).__name__}: {exc}"

    changes = diff(before, snapshot(ctx.root), ignore_prefix=ignore)
    assert not changes, "the store changed: " + "; ".join(changes)
    assert ctx.store.get("healthy").to_arrow().equals(_HEALTHY["arrow"]), "the healthy set reads differently"
    if case.group != "manifests":  # SQL beside a broken manifest: see test_a_bad_manifest_leaves_the_other_sets_working
        assert ctx.healthy_sql() == _HEALTHY["sql"], "the healthy set reads differently in SQL"


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c.id for c in MANIFEST_CASES])
def test_a_bad_manifest_leaves_the_other_sets_working(ctx, case):
    case.setup(ctx)
    listed = {r["name"]: r for r in ctx.store.list()}
    assert listed["healthy"]["rows"] == HEALTHY_ROWS
    assert ctx.store.sql("select count(*) from healthy").fetchone()[0] == HEALTHY_ROWS
    ctx.write("healthy", ctx.rows(np.arange(100, 105)))
    assert ctx.store.get("healthy").count() == HEALTHY_ROWS + 5
    assert ctx.store.sql("select count(*) from healthy").fetchone()[0] == HEALTHY_ROWS + 5


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c.id for c in MANIFEST_CASES])
def test_doctor_names_a_bad_manifest(ctx, case):
    ctx.store.rebuild_catalog()
    assert ctx.store.doctor().ok
    case.setup(ctx)
    report = ctx.store.doctor()
    assert not report.ok
    manifest = str(ctx.manifest_path())
    assert any(manifest in f.path or manifest in f.detail for f in report.findings), report.to_dict()


KEYWORD_NAMES = ["left", "right", "glob", "natural", "similar", "at", "by", "join", "read_parquet", "range",
                 "values", "row", "struct", "columns", "unnest", "install"]


@pytest.mark.parametrize("name", KEYWORD_NAMES)
def test_a_name_is_refused_or_works_as_an_unquoted_view(store, name):
    """DuckDB keywords and table-function names: a name the store accepts must work unquoted in plain SQL."""
    x = np.ones((3, 4), np.float32)
    try:
        store.write(name, {"id": np.arange(3), "embedding": x}, spec=SPEC)
    except InvalidNameError:
        assert not (store.root / "sets" / name).exists() or not any(
            p for p in (store.root / "sets" / name).iterdir() if not p.name.endswith(".lock"))
        return
    assert store.sql(f"select count(*) from {name}").fetchone()[0] == 3
    assert store.sql(f"select {name}.id from {name} order by id").fetchall() == [(0,), (1,), (2,)]
    assert store.sql(f"select count(*) from {name} join feature_sets on feature_sets.name = '{name}'").fetchone()[0] == 3

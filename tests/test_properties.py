"""Property tests of the store: format round trips, and random sequences of writes, jobs and kills against a model.

(a) Whatever the dim, dtype and keys (unicode, separators, blank-looking strings, ints, compound keys), rows written
    read back equal through ``to_arrow``, ``to_numpy`` and SQL, one row per key.
(b) A state machine drives appends, identical re-appends, changed appends, resumed embedding jobs over a growing
    source, and jobs or writes killed at random points (in a child process, see ``tests/_crash.py``), against a plain
    dict model of what the store must hold; after every step the store equals the model.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import featurestore

_spec = importlib.util.spec_from_file_location("_fs_crash", Path(__file__).with_name("_crash.py"))
crash = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_fs_crash", crash)
_spec.loader.exec_module(crash)

SPEC = {"encoder": "external:x"}


class TempStore:
    """A fresh store in its own folder per example (the pytest fixtures are per test, not per example)."""

    def __enter__(self) -> featurestore.Store:
        self.dir = tempfile.mkdtemp(prefix="fs-prop-")
        return featurestore.open(Path(self.dir) / "store")

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- (a) format round trips ----------------------------------------------------------------------------------------
TRICKY = ["\x1f", "|", ",", " ", "\t", "\x00", "'", '"', "\\", "é", "ß", "中", "🙂", "a", "b", "\u200b", "\n"]
str_keys = st.one_of(
    st.text(alphabet=st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=6),
    st.sampled_from(["", " ", "  ", "   ", "\t ", "\x1f", "|", ",", "a\x1f", "\x1fb"]),  # blank-looking, separators
)
int_keys = st.integers(min_value=-(2**63), max_value=2**63 - 1)
KEY_KINDS = {
    "int": (int_keys,),
    "str": (str_keys,),
    "str,int": (str_keys, int_keys),
    "str,str": (str_keys, str_keys),
}


@st.composite
def feature_rows(draw):
    kind = draw(st.sampled_from(sorted(KEY_KINDS)))
    parts = KEY_KINDS[kind]
    keys = draw(st.lists(st.tuples(*parts), min_size=1, max_size=12, unique=True))
    dim = draw(st.integers(1, 64))
    dtype = draw(st.sampled_from(["float32", "float16"]))
    width = 16 if dtype == "float16" else 32
    elements = st.floats(width=width, allow_nan=False, allow_infinity=False)  # the whole finite range
    matrix = draw(hnp.arrays(np.dtype(dtype), (len(keys), dim), elements=elements))
    return kind, keys, matrix


def _columns(kind: str, keys: list[tuple]) -> tuple[dict, list[str]]:
    names = ["k0"] if "," not in kind else ["k0", "k1"]
    types = {"int": pa.int64(), "str": pa.string()}
    cols = {name: pa.array([k[i] for k in keys], types[t]) for i, (name, t) in enumerate(zip(names, kind.split(",")))}
    return cols, names


def _check_round_trip(store: featurestore.Store, name: str, kind: str, keys: list[tuple], matrix: np.ndarray) -> None:
    cols, names = _columns(kind, keys)
    key = names[0] if len(names) == 1 else names
    run = store.write(name, {**cols, "embedding": matrix}, key=key, spec=SPEC)
    n = len(keys)
    assert run["rows_written"] == n, run
    fs = store.get(name)
    assert fs.dim == matrix.shape[1] and fs.dtype == str(matrix.dtype)
    expected = {k: matrix[i].astype(np.float32) for i, k in enumerate(keys)}

    table = fs.to_arrow()
    got_keys = list(zip(*(table.column(c).to_pylist() for c in names)))
    assert sorted(got_keys, key=repr) == sorted(keys, key=repr), "to_arrow() keys differ"
    vectors = fs.to_numpy()
    assert vectors.shape == (n, matrix.shape[1]) and vectors.dtype == np.float32
    for k, v in zip(got_keys, vectors):
        np.testing.assert_array_equal(v, expected[k])
    assert list(zip(*(fs.keys().column(c).to_pylist() for c in names))) == got_keys

    cols_sql = ", ".join(f'"{c}"' for c in names)
    counts = store.sql(f"select count(*), (select count(*) from (select distinct {cols_sql} from {name})) from {name}")
    assert counts.fetchone() == (n, n) and fs.count() == n
    res = store.sql(f"select {cols_sql}, embedding from {name}").numpy()
    sql_keys = list(zip(*(res[c].tolist() for c in names)))
    assert sorted(sql_keys, key=repr) == sorted(keys, key=repr), "SQL keys differ"
    for k, v in zip(sql_keys, res["embedding"]):
        np.testing.assert_array_equal(v, expected[k])
    # a parameterised lookup of one key finds exactly its row
    first = keys[0]
    where = " and ".join(f'"{c}" = ${c}' for c in names)
    params = {c: first[i] for i, c in enumerate(names)}
    assert store.sql(f"select count(*) from {name} where {where}", params=params).fetchone()[0] == 1

    # re-appending the same rows writes nothing and changes nothing
    again = store.write(name, {**cols, "embedding": matrix}, key=key, spec=SPEC)
    assert (again["rows_written"], again["rows_skipped"]) == (0, n), again
    assert store.get(name).count() == n == store.sql(f"select count(*) from {name}").fetchone()[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feature_rows())
@example(("str,str", [("a\x1fb", "c"), ("a", "b\x1fc")], np.eye(2, 3, dtype=np.float32)))
@example(("str", [(" ",), ("  ",), ("",), ("\x1f",), ("|",), (",",)], np.ones((6, 1), np.float16)))
@example(("str,int", [("a\x1f1", 2), ("a", 12), ("a\x1f", 12)], np.arange(6, dtype=np.float32).reshape(3, 2)))
def test_round_trip(rows):
    kind, keys, matrix = rows
    note(f"kind={kind} keys={keys!r} dim={matrix.shape[1]} dtype={matrix.dtype}")
    with TempStore() as store:  # a store per example: every write rebuilds the catalog of all sets
        _check_round_trip(store, "t", kind, keys, matrix)


@pytest.mark.parametrize("same_vector", [False, True], ids=["new-vector", "same-vector"])
def test_compound_keys_that_join_alike_stay_two_rows_across_writes(store, same_vector):
    """("a\\x1fb", "c") and ("a", "b\\x1fc") are two keys, also when written by separate appends."""
    spec = SPEC
    first = {"k0": ["a\x1fb"], "k1": ["c"], "embedding": np.array([[1.0, 0.0]], np.float32)}
    second = {"k0": ["a"], "k1": ["b\x1fc"],
              "embedding": np.array([[1.0, 0.0] if same_vector else [0.0, 1.0]], np.float32)}
    store.write("t", first, key=["k0", "k1"], spec=spec)
    run = store.write("t", second, key=["k0", "k1"], spec=spec)
    assert run["rows_written"] == 1, f"the second key was taken for the first one and skipped: {run}"
    fs = store.get("t")
    sql_n = store.sql("select count(*) from t").fetchone()[0]
    keys = sorted(zip(fs.keys().column("k0").to_pylist(), fs.keys().column("k1").to_pylist()))
    assert (fs.count(), sql_n, keys) == (2, 2, [("a", "b\x1fc"), ("a\x1fb", "c")])
    assert fs.to_numpy().shape == (2, 2)


@pytest.mark.parametrize("same_text", [False, True], ids=["other-text", "same-text"])
def test_compound_keys_that_join_alike_in_an_embedding_job(store, same_text):
    import pipelines

    a = pa.table({"k0": ["a\x1fb"], "k1": ["c"], "text": ["one text"]})
    b = pa.table({"k0": ["a", "a\x1fb"], "k1": ["b\x1fc", "c"], "text": ["one text" if same_text else "another", "one text"]})
    pipelines.embed(store, a, key=["k0", "k1"], text="text", encoder="hash:8", name="j", progress=False)
    result = pipelines.embed(store, b, key=["k0", "k1"], text="text", encoder="hash:8", name="j", progress=False)
    assert (result.rows_written, result.rows_skipped) == (1, 1), result
    fs = store.get("j")
    assert fs.count() == 2 == store.sql("select count(*) from j").fetchone()[0]


# -- (b) random sequences of operations against a model -------------------------------------------------------------
# Kill points for random kills: (target, which calls count); the Nth call is drawn, and a draw past the last call
# lets the child finish (then the model moves to the complete state).
KILL_POINTS = [
    ("os:replace", "os.path.basename(str(args[0])).startswith('.tmp-') and str(args[0]).endswith('.parquet')"),
    ("os:replace", "str(args[1]).endswith('manifest.json')"),
    ("featurestore.storage._writer:write_manifest", None),
    ("featurestore.storage._atomic:fsync_path", None),
    ("pyarrow.parquet:write_table", None),
    ("featurestore.query._catalog:define_views", "kwargs.get('persistent') is True"),
    ("featurestore.storage._writer:Writer.record_errors", None),
]
JOB_OPTIONS = dict(key="id", text="review", encoder="hash:16", name="j", chunk_rows=16, partition_rows=32,
                   progress=False)
MAX_KILLS = 2  # per example: each costs a fresh interpreter (~1 s)


def _text(key: int, version: int) -> str | None:
    if version < 0:
        return None if version == -1 else "   "  # bad rows: null, blank
    return f"{crash.WORDS[key % 10]} {crash.WORDS[(key * 7 + version) % 10]} review {key} v{version}"


class StoreMachine(RuleBasedStateMachine):
    """Set ``s`` gets plain writes (model: key -> vector); set ``j`` gets embedding jobs over a growing source
    (model: key -> text); kills leave a set "dirty" until its next writer cleans it."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fs-machine-"))
        self.store = featurestore.open(self.dir / "store")
        self.s: dict[int, np.ndarray] = {}  # set s: what it must hold
        self.next_s = 0
        self.salt = 0
        self.source: dict[int, str | None] = {}  # the job's source: key -> text (None/blank: a bad row)
        self.next_j = 0
        self.j: dict[int, str] = {}  # set j: key -> the text its vector must come from
        self.j_pending: dict[int, str] | None = None  # after a killed job: the texts it may have committed too
        self.dirty: set[str] = set()  # sets whose last writer was killed (leftovers allowed until the next one)
        self.kills = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- set s: plain writes -----------------------------------------------------------------------------------
    def _draw_write(self, data, new: int, changed: int, same: int):
        existing = sorted(self.s)
        pick = data.draw(st.lists(st.sampled_from(existing), unique=True, max_size=min(len(existing), changed + same))
                         if existing else st.just([]))
        changed_keys, same_keys = pick[:changed], pick[changed:]
        self.salt += 1
        rows = {k: crash.vector(k, self.salt) for k in changed_keys}
        rows |= {k: self.s[k] for k in same_keys}
        rows |= {k: crash.vector(k, self.salt) for k in range(self.next_s, self.next_s + new)}
        order = data.draw(st.permutations(sorted(rows)))
        return rows, order, len(changed_keys) + new, len(same_keys)

    @rule(data=st.data(), new=st.integers(0, 20), changed=st.integers(0, 6), same=st.integers(0, 6))
    def write(self, data, new, changed, same):
        rows, order, n_written, n_skipped = self._draw_write(data, new, changed, same)
        if not rows:
            return
        run = self.store.write("s", {"id": np.array(order, np.int64), "embedding": np.stack([rows[k] for k in order])},
                               spec=SPEC)
        assert (run["rows_written"], run["rows_skipped"]) == (n_written, n_skipped), run
        self.s.update(rows)
        self.next_s += new
        self.dirty.discard("s")

    @precondition(lambda self: self.s)
    @rule(data=st.data())
    def reappend_same(self, data):
        keys = data.draw(st.lists(st.sampled_from(sorted(self.s)), min_size=1, unique=True))
        run = self.store.write("s", {"id": np.array(keys, np.int64), "embedding": np.stack([self.s[k] for k in keys])},
                               spec=SPEC)
        assert (run["rows_written"], run["rows_skipped"]) == (0, len(keys)), run
        self.dirty.discard("s")

    @precondition(lambda self: self.kills < MAX_KILLS)
    @rule(data=st.data(), new=st.integers(1, 20), changed=st.integers(0, 6), point=st.sampled_from(KILL_POINTS),
          n=st.integers(1, 4), when=st.sampled_from(["before", "after"]))
    def killed_write(self, data, new, changed, point, n, when):
        """A write killed at a random point is all or nothing: s holds the old rows or the new ones, exactly."""
        rows, order, _, _ = self._draw_write(data, new, changed, 0)
        self.kills += 1
        ids = ", ".join(str(k) for k in order)
        body = ("import numpy as np, featurestore\n"
                f"ids = [{ids}]\n"
                f"emb = np.stack([crash.vector(k, {self.salt}) for k in ids])\n"
                f"featurestore.open({str(self.store.root)!r}).write('s', {{'id': np.array(ids, np.int64), "
                f"'embedding': emb}}, spec={SPEC!r})\n")
        killed, _ = crash.run_armed(body, point[0], n, when, point[1], must_die=False)
        note(f"killed_write: point={point} n={n} {when} killed={killed}")
        event(f"write {'killed' if killed else 'finished'}")
        after = {**self.s, **rows}
        table = self.store.get("s").to_arrow() if "s" in self.store else None
        got = {} if table is None else dict(zip(table.column("id").to_pylist(),
                                                 crash.table_vectors(table)))
        matches_old = _same_rows(got, self.s)
        matches_new = _same_rows(got, after)
        assert matches_old or matches_new, "a killed write left part of its rows"
        if matches_new:
            self.s = after
            self.next_s += new
        else:
            self.next_s += new  # these keys stay unused
        if killed:
            self.dirty.add("s")

    # -- set j: embedding jobs -----------------------------------------------------------------------------------
    def _grow_source(self, data, grow: int, change: int, bad: int) -> None:
        for k in range(self.next_j, self.next_j + grow):
            self.source[k] = _text(k, 0)
        for k in range(self.next_j + grow, self.next_j + grow + bad):
            self.source[k] = _text(k, -1 - (k % 2))
        self.next_j += grow + bad
        if change and self.source:
            keys = data.draw(st.lists(st.sampled_from(sorted(self.source)), unique=True, max_size=change))
            for k in keys:
                self.salt += 1
                self.source[k] = _text(k, self.salt)
        path = self.dir / "source.parquet"
        ids = sorted(self.source)
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                                 "review": pa.array([self.source[k] for k in ids], pa.string())}), path,
                       row_group_size=24)

    def _good(self) -> dict[int, str]:
        return {k: t for k, t in self.source.items() if t is not None and t.strip()}

    @rule(data=st.data(), grow=st.integers(0, 60), change=st.integers(0, 5), bad=st.integers(0, 2))
    def embed(self, data, grow, change, bad):
        import pipelines

        self._grow_source(data, grow, change, bad)
        if not self.source:
            return
        target = {**self.j, **self._good()}
        changed = {k for k, t in target.items() if self.j.get(k) != t}
        result = pipelines.embed(self.store, self.dir / "source.parquet", **JOB_OPTIONS)
        if self.j_pending is None:  # after a kill, some of these rows may already be committed
            assert result.rows_written == len(changed), (result, sorted(changed))
        assert result.rows_written + result.rows_skipped + result.rows_failed == len(self.source), result
        self.j = target
        self.j_pending = None
        self.dirty.discard("j")

    @precondition(lambda self: self.kills < MAX_KILLS)
    @rule(data=st.data(), grow=st.integers(1, 90), change=st.integers(0, 5), point=st.sampled_from(KILL_POINTS),
          n=st.integers(1, 5), when=st.sampled_from(["before", "after"]))
    def killed_embed(self, data, grow, change, point, n, when):
        self._grow_source(data, grow, change, 1)
        self.kills += 1
        opts = ", ".join(f"{k}={v!r}" for k, v in JOB_OPTIONS.items())
        body = ("import pipelines, featurestore\n"
                f"pipelines.embed(featurestore.open({str(self.store.root)!r}), {str(self.dir / 'source.parquet')!r}, "
                f"{opts})\n")
        killed, _ = crash.run_armed(body, point[0], n, when, point[1], must_die=False)
        note(f"killed_embed: point={point} n={n} {when} killed={killed}")
        event(f"job {'killed' if killed else 'finished'}")
        target = {**self.j, **self._good()}
        if killed:
            self.j_pending = {**(self.j_pending or {}), **target}
            self.dirty.add("j")
        else:
            self.j, self.j_pending = target, None
            self.dirty.discard("j")

    # -- after every step ----------------------------------------------------------------------------------------
    @invariant()
    def store_equals_model(self):
        store = featurestore.open(self.store.root)
        if self.s:
            crash.assert_rows(store, "s", None, self.s)
        elif "s" in store:
            assert store.get("s").count() == 0
        if "j" in store:
            self._check_j(store)
        else:
            assert not self.j
        crash.assert_every_view_readable(store)
        left = crash.leftovers(store.root)
        assert all(f.split("/")[1] in self.dirty for f in left), (left, self.dirty)
        runs = store.sql("select name, status from runs").fetchall()
        assert all(status != "running" or name in self.dirty for name, status in runs), runs
        if not self.dirty:
            report = store.doctor()
            assert report.ok and report.findings == [], report.to_dict()

    def _check_j(self, store):
        from featurestore.encoders import get_encoder
        from featurestore.storage import _format as fmt

        enc = get_encoder("hash:16")
        if self.j_pending is None:
            keys, texts = list(self.j), list(self.j.values())
            vectors = enc.encode(texts) if texts else []
            hashes = fmt.text_hashes(texts, fmt.spec_fingerprint(enc.spec())).to_pylist()
            crash.assert_rows(store, "j", None, dict(zip(keys, vectors)), hashes=dict(zip(keys, hashes)))
            return
        # After a kill: each key holds the vector of its last embedded text or of the text the killed job was
        # embedding, once; no other key.
        table = store.get("j").to_arrow()
        keys = table.column("id").to_pylist()
        assert len(keys) == len(set(keys)), "duplicate keys after a killed job"
        assert store.sql("select count(*), count(distinct id) from j").fetchone() == (len(keys), len(keys))
        assert set(self.j) <= set(keys), f"committed rows vanished: {sorted(set(self.j) - set(keys))[:10]}"
        allowed = {k: {t for t in (self.j.get(k), self.j_pending.get(k)) if t} for k in keys}
        assert all(allowed[k] for k in keys), [k for k in keys if not allowed[k]]
        for k, v in zip(keys, crash.table_vectors(table)):
            assert any(np.allclose(v, enc.encode(t), rtol=1e-6, atol=0) for t in allowed[k]), k


def _same_rows(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=6, stateful_step_count=8, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

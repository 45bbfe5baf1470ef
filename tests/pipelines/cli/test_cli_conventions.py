"""Rules every `featurestore` command follows: one list style, one --json shape, JSON errors, quiet by default,
nothing cut without saying so, SQL parameters, the errors view, `show` formats."""

from __future__ import annotations

import json
import logging
import sys
import warnings

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomllib

import featurestore
from pipelines.cli import _common as _cli_common
from pipelines.cli import cli


def _ok(result):
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def _json(result):
    return json.loads(_ok(result).stdout)


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


# -- one list style ------------------------------------------------------------------------------------------------
# Repeatable options that are NOT lists of names, with the reason. Anything else that repeats must split commas.
NOT_LISTS = {
    "--param": "a value may hold commas (a JSON list: --param q=[0.1,0.2])",
    "--text": "stack predict: one column, or SET=COLUMN pairs",
}


def test_every_repeatable_option_also_takes_a_comma_list():
    offenders = []
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and p.multiple and p.opts[0] not in NOT_LISTS:
                ctx = click.Context(cmd)
                if p.process_value(ctx, ("a,b", "c")) != ["a", "b", "c"]:
                    offenders.append(f"featurestore {' '.join(path)} {p.opts[0]}")
    assert not offenders, f"these repeat but do not split comma lists: {offenders}"


@pytest.mark.parametrize("key_args", [["--key", "user,item"], ["--key", "user", "--key", "item"]])
def test_a_comma_list_and_a_repeated_flag_make_the_same_compound_key(runner, tmp_path, key_args):
    src = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"user": ["a", "a", "b"], "item": [1, 2, 1], "text": ["x", "y", "z"]}), src)
    store = tmp_path / "store"
    _ok(runner.invoke(cli, ["embed", "-s", str(store), "--source", str(src), *key_args, "-e", "hash:4", "--name", "p"]))
    fs = featurestore.open(store).get("p")
    assert fs.key == ["user", "item"] and fs.count() == 3


# -- --json: one shape per command, errors as JSON -----------------------------------------------------------------
def test_json_has_one_shape_per_command(runner, filled, tmp_path):
    root = str(filled.root)
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": range(3), "text": ["a", "b", "c"]}).to_csv(src, index=False)
    shapes = {
        "init": (["init", "-s", str(tmp_path / "other")], dict),
        "ls": (["ls", "-s", root], list),
        "show": (["show", "vecs", "-s", root], dict),
        "sql": (["sql", "select 1 as x", "-s", root], list),
        "embed (one set)": (["embed", "-s", root, "--source", str(src), "-e", "hash:4", "--name", "h"], list),
        "doctor": (["doctor", "-s", root], dict),
        "models ls": (["models", "ls", "-s", root], list),
    }
    for what, (args, shape) in shapes.items():
        assert isinstance(_json(runner.invoke(cli, [*args, "--json"])), shape), what


@pytest.mark.parametrize("args, code, kind, fragment", [
    (["show", "nope"], 1, "FeatureSetNotFoundError", "No feature set named 'nope'"),
    (["sql", "select * from nowhere"], 1, "CatalogException", "nowhere"),
    (["sql", "drop view vecs"], 1, "ReadOnlyQueryError", "read-only"),
    (["embed", "--source", "x.csv"], 2, "UsageError", "Missing --name, --encoder"),
    (["embed", "--source", "x.csv", "-e", "hash:4", "--name", "x", "--limit", "-3"], 2, "BadParameter", "--limit"),
    (["sql", "select $n", "--param", "n"], 2, "BadParameter", "NAME=VALUE"),
    (["models", "show", "nope"], 1, "ModelNotFoundError", "No model named 'nope'"),
])
def test_errors_are_json_on_stderr_with_json(runner, filled, args, code, kind, fragment):
    plain = runner.invoke(cli, [*args, "-s", str(filled.root)])
    as_json = runner.invoke(cli, [*args, "-s", str(filled.root), "--json"])
    assert plain.exit_code == as_json.exit_code == code, (plain.output, as_json.output)
    assert fragment in plain.stderr
    assert as_json.stdout == ""  # stdout only ever holds a result
    error = json.loads(as_json.stderr)
    assert error["kind"] == kind and error["exit_code"] == code and fragment in error["error"], error


def test_sql_format_json_errors_are_json_too(runner, filled):
    result = runner.invoke(cli, ["sql", "select * from nowhere", "-s", str(filled.root), "--format", "json"])
    assert result.exit_code == 1 and json.loads(result.stderr)["kind"] == "CatalogException"


# -- quiet by default ----------------------------------------------------------------------------------------------
def test_every_command_takes_quiet_verbose_and_log_level():
    for path, cmd in [((), cli), *_commands()]:
        names = {p.name for p in cmd.params}
        assert {"quiet", "verbose", "log_level"} <= names, f"featurestore {' '.join(path)}"


@pytest.fixture
def noisy_ls(monkeypatch):
    """`ls` that also warns the way libraries do: scikit-learn, transformers' logger, and one of our own."""
    from sklearn.exceptions import ConvergenceWarning

    from stackers import MissingKeysWarning

    real = featurestore.Store.list

    def noisy(self):
        warnings.warn("lbfgs failed to converge", ConvergenceWarning, stacklevel=2)
        warnings.warn("2 keys of the labels are missing from 'vecs'", MissingKeysWarning, stacklevel=2)
        logged.append(logging.getLogger("transformers.modeling_utils").isEnabledFor(logging.WARNING))
        return real(self)

    logged: list[bool] = []

    monkeypatch.setattr(featurestore.Store, "list", noisy)
    yield logged
    _cli_common.apply_verbosity(logging.WARNING)


@pytest.mark.parametrize("flags, ours, theirs", [
    ([], True, False),                   # default: our warnings as one line, libraries' hidden
    (["-v"], True, True),                # -v: everything
    (["--log-level", "info"], True, True),
    (["-q"], False, False),              # -q: only errors
    (["--log-level", "ERROR"], False, False),
])
def test_library_warnings_only_with_verbose(noisy_ls, filled, flags, ours, theirs, capfd):
    for args in (["ls", "-s", str(filled.root), *flags], [*flags, "ls", "-s", str(filled.root)]):  # command or group
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with pytest.raises(SystemExit) as exit_:
                cli.main(args, prog_name="featurestore")
        assert exit_.value.code == 0
        err = capfd.readouterr().err
        assert ("missing from 'vecs'" in err) is ours, err
        assert ("lbfgs failed to converge" in err) is theirs, err
        assert noisy_ls.pop() is theirs  # a library's log line (transformers' "Loading weights" and such)
        if ours and not theirs:
            assert "warning: 2 keys of the labels are missing from 'vecs'" in err


def test_quiet_is_the_default_for_hugging_face_progress_bars(runner, filled, monkeypatch):
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    _ok(runner.invoke(cli, ["ls", "-s", str(filled.root)]))
    import os

    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    _ok(runner.invoke(cli, ["ls", "-s", str(filled.root), "-v"]))
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    _cli_common.apply_verbosity(logging.WARNING)


@pytest.mark.slow
def test_a_real_torch_embed_prints_no_loading_bar_unless_verbose(tmp_path):
    """transformers draws a "Loading weights" bar when torch loads MiniLM: hidden by default, shown with -v."""
    import subprocess

    src = tmp_path / "t.csv"
    pd.DataFrame({"id": range(3), "text": ["soft cotton", "runs small", "lovely"]}).to_csv(src, index=False)

    def run(*flags):
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "embed", "-s", str(tmp_path / f"s{len(flags)}"),
                               "--source", str(src), "-e", "sentence-transformers:all-MiniLM-L6-v2", "--name", "m",
                               "--backend", "torch", *flags], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert "Loading weights" not in run()
    assert "Loading weights" in run("-v")


# -- nothing cut without saying so ---------------------------------------------------------------------------------
LONG = "a_feature_set_whose_name_is_longer_than_a_narrow_column_holds_x"  # 63 characters, the most allowed


def test_ls_and_show_print_long_names_and_every_run_whole(runner, tmp_path):
    store = featurestore.open(tmp_path / "store")
    encoder = "external:" + "a-very-long-model-identifier/" * 4
    for i in range(14):  # 14 runs: every one is listed
        store.write(LONG, {"id": [i], "embedding": np.ones((1, 4), np.float32) * (i + 1)}, spec={"encoder": encoder})
    narrow = {"COLUMNS": "40"}
    listed = _ok(runner.invoke(cli, ["ls", "-s", str(store.root)], env=narrow)).stdout
    assert LONG in listed and encoder in listed
    shown = _ok(runner.invoke(cli, ["show", LONG, "-s", str(store.root)], env=narrow)).stdout
    for run in store.get(LONG).runs:
        assert run["run_id"] in shown
    assert "runs (14)" in shown and encoder in shown


def test_tables_wrap_rather_than_cut_in_a_narrow_terminal():
    from rich.console import Console

    out = _cli_common.table("name", "encoder")
    out.add_row(LONG, "x")
    console = Console(width=40, record=True, file=open("/dev/null", "w"))
    console.print(out)
    text = console.export_text()
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") >= 3)
    assert "…" not in text and cells.startswith(LONG)


# -- show: spec as JSON/TOML, partitions -----------------------------------------------------------------------------
def test_show_prints_the_spec_as_json_or_toml_and_partitions_on_request(runner, filled):
    root = str(filled.root)
    spec = filled.get("vecs").spec
    assert _json(runner.invoke(cli, ["show", "vecs", "-s", root, "--spec"])) == spec
    as_toml = tomllib.loads(_ok(runner.invoke(cli, ["show", "vecs", "-s", root, "--spec", "--format", "toml"])).stdout)
    assert as_toml == {k: v for k, v in spec.items() if v is not None}
    everything = tomllib.loads(_ok(runner.invoke(cli, ["show", "vecs", "-s", root, "--format", "toml"])).stdout)
    assert everything["rows"] == 20 and everything["runs"][0]["status"] == "ok"
    info = _json(runner.invoke(cli, ["show", "vecs", "-s", root, "--partitions", "--json"]))
    [part] = info["partition_files"]
    m = filled.get("vecs").manifest
    assert part == {"file": m.partitions[0].file, "kind": "rows", "rows": 20, "bytes": m.partitions[0].bytes,
                    "created_at": m.partitions[0].created_at, "run_id": m.partitions[0].run_id,
                    "crc32": m.partitions[0].crc32, "stats": m.partitions[0].stats}
    text = _ok(runner.invoke(cli, ["show", "vecs", "-s", root, "--partitions"])).stdout
    assert m.partitions[0].file in text and m.partitions[0].created_at in text


# -- sql --param ---------------------------------------------------------------------------------------------------
def test_sql_params_numbers_text_lists_and_vector_files(runner, filled, tmp_path):
    root = str(filled.root)
    matrix = filled.get("vecs").to_numpy()
    ids = filled.get("vecs").keys().column("id").to_numpy()
    query = matrix[ids.tolist().index(5)]
    np.save(tmp_path / "q.npy", query)
    (tmp_path / "q.json").write_text(json.dumps(query.tolist()))
    top = 'select id from vecs order by array_cosine_similarity(embedding, $q::FLOAT[8]) desc limit 1'
    for value in ("@" + str(tmp_path / "q.npy"), "@" + str(tmp_path / "q.json"), json.dumps(query.tolist())):
        assert _json(runner.invoke(cli, ["sql", top, "-s", root, "--param", f"q={value}", "--json"])) == [{"id": 5}]
    rows = _json(runner.invoke(cli, ["sql", "select count(*) as n from vecs where id < $n and $s = 'abc'", "-s", root,
                                     "-p", "n=3", "-p", "s=abc", "--json"]))
    assert rows == [{"n": 3}]


@pytest.mark.parametrize("param, fragment", [
    ("n", "NAME=VALUE"),
    ("1x=3", "NAME=VALUE"),
    ("q=@/nonexistent/v.npy", "no such file"),
])
def test_bad_sql_params_are_usage_errors(runner, filled, param, fragment):
    result = runner.invoke(cli, ["sql", "select 1", "-s", str(filled.root), "--param", param])
    assert result.exit_code == 2 and fragment in result.stderr, result.output


# -- the errors view exists for every set written by a job ------------------------------------------------------------
def test_errors_view_exists_before_any_error(runner, tmp_path):
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": range(3), "text": ["a", "b", "c"]}).to_csv(src, index=False)
    root = str(tmp_path / "store")
    _ok(runner.invoke(cli, ["embed", "-s", root, "--source", str(src), "-e", "hash:4", "--name", "clean"]))
    rows = _json(runner.invoke(cli, ["sql", 'select count(*) as n from "clean@errors"', "-s", root, "--json"]))
    assert rows == [{"n": 0}]


def test_json_stdout_holds_only_the_json_when_a_library_prints(tmp_path):
    """Libraries print on stdout mid-job (Ray forwards its raylet's warnings there, also from its exit handlers): with
    ``--json`` that text goes to stderr, so stdout parses."""
    import subprocess
    from pathlib import Path

    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a red dress", "blue jeans", "a hat"]}), tmp_path / "t.parquet")
    noisy = ("import atexit, featurestore.encoders.text._hash as h; encode = h.HashEncoder._encode_list\n"
             "def loud(self, texts, **kw):\n    print('WARNING from a library thread'); return encode(self, texts, **kw)\n"
             "h.HashEncoder._encode_list = loud; atexit.register(print, 'a late line at exit')\n"
             "import sys; from pipelines.cli import main; sys.argv[0] = 'featurestore'; main()")
    proc = subprocess.run([sys.executable, "-c", noisy, "embed", "--store", str(tmp_path / "s"), "--source",
                           str(tmp_path / "t.parquet"), "-e", "hash:8", "--name", "t", "--json", "--no-progress"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)[0]["rows_written"] == 3
    assert "WARNING from a library thread" in proc.stderr and "a late line at exit" in proc.stderr

"""`featurestore drop`, `featurestore diff` and `featurestore sql --as-of` through CliRunner on real stores."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from click.testing import CliRunner

import featurestore
from pipelines.cli import _versions as _cli_versions
from pipelines.cli import cli

SPEC = {"encoder": "external:cli-versions"}


@pytest.fixture
def store(tmp_path):
    store = featurestore.open(tmp_path / "store")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 8)).astype(np.float32)
    store.write("vecs", {"id": np.arange(20), "embedding": base[:20]}, spec=SPEC)
    store.write("vecs", {"id": np.arange(5, 30), "embedding": base[5:30] * 2}, spec={**SPEC, "scale": 2},
                version="new")
    return store


def _run(store, *args, input=None):
    return CliRunner().invoke(cli, [*args, "-s", str(store.root)], input=input)


def _json(result):
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def test_diff_text_and_json(store):
    d = _json(_run(store, "diff", "vecs@v1", "vecs@v2", "--json"))
    assert (d["shared"], d["added"], d["removed"], d["identical"]) == (15, 10, 5, 0)
    assert d["spec_changed"] == ["scale"] and d["cosine_min"] == pytest.approx(1.0)
    text = _run(store, "diff", "vecs@v1", "vecs").stdout
    assert "*scale" in text and "added: 10 (e.g. 20, 21, 22, 23, 24)" in text and "mean 1.0000" in text


def test_drop_needs_yes_without_a_terminal_and_asks_on_one(store, monkeypatch):
    result = _run(store, "drop", "vecs@v2")
    assert result.exit_code == 2 and "pass --yes" in result.stderr
    assert store.versions("vecs") == [1, 2]
    monkeypatch.setattr(_cli_versions, "_interactive", lambda: True)  # a person at a terminal
    result = _run(store, "drop", "vecs@v2", input="n\n")
    assert result.exit_code == 1 and store.versions("vecs") == [1, 2]
    result = _run(store, "drop", "vecs@v2", input="y\n")
    assert result.exit_code == 0 and "dropped vecs v2 (25 rows" in result.stdout and "latest is now v1" in result.stdout
    assert store.versions("vecs") == [1]


def test_drop_json_errors_and_doctor_clean_after(store):
    out = _json(_run(store, "drop", "vecs", "--yes", "--json"))
    assert out["versions"] == [1, 2] and out["latest"] is None and out["rows"] == 45
    again = _run(store, "drop", "vecs", "--yes", "--json")
    assert again.exit_code == 1 and json.loads(again.stderr)["kind"] == "FeatureSetNotFoundError"
    bad = _run(store, "drop", "vecs@2026-01-01", "--yes")
    assert bad.exit_code == 2 and "names a time" in bad.stderr
    doctor = _run(store, "doctor", "--json")
    assert doctor.exit_code == 0 and json.loads(doctor.stdout)["findings"] == []


def test_sql_as_of(store):
    time.sleep(0.01)
    t = datetime.now(timezone.utc).isoformat()
    time.sleep(0.01)
    store.write("vecs", {"id": np.arange(100, 110), "embedding": np.ones((10, 8), np.float32)}, spec={**SPEC, "scale": 2})
    now = _json(_run(store, "sql", "select count(*) as n from vecs", "--json"))
    then = _json(_run(store, "sql", "select count(*) as n from vecs", "--as-of", t, "--json"))
    view = _json(_run(store, "sql", f'select count(*) as n from "vecs@{t}"', "--json"))
    assert (now, then, view) == ([{"n": 35}], [{"n": 25}], [{"n": 25}])
    bad = _run(store, "sql", "select 1", "--as-of", "noon")
    assert bad.exit_code == 1 and "as_of must be" in bad.stderr

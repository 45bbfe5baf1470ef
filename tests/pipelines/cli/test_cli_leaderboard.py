"""`featurestore leaderboard`: the sorted table on stdout (or JSON), and the PNG, table and JSON written to --out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import featurestore
from pipelines.cli import cli

N, K, DIM = 360, 3, 10


@pytest.fixture(scope="module")
def board_store(tmp_path_factory):
    """Three stored sets: a strong and a weak layer of one encoder, and noise from another; labels with groups."""
    root = tmp_path_factory.mktemp("cli_lb")
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, N)
    ids = np.arange(N) * 5 + 2
    means = rng.standard_normal((K, DIM))
    store = featurestore.open(root / "store")
    noise = rng.standard_normal
    for name, X, spec in (("strong", 1.2 * means[y] + noise((N, DIM)), {"encoder": "external:m", "layer": 4}),
                          ("weak", 0.4 * means[y] + noise((N, DIM)), {"encoder": "external:m", "layer": 1}),
                          ("noise", noise((N, DIM)), {"encoder": "external:noise"})):
        order = rng.permutation(N)
        store.write(name, {"id": ids[order], "embedding": X[order].astype(np.float32)}, spec=spec)
    labels = root / "labels.parquet"
    pq.write_table(pa.table({"id": ids, "target": [f"c{v}" for v in y], "site": np.arange(N) // 6}), labels)
    return root, store, labels


def test_leaderboard_command_prints_the_sorted_table_and_writes_the_png(board_store):
    root, store, labels = board_store
    out_dir = root / "lb"
    result = CliRunner().invoke(cli, ["leaderboard", "noise", "weak,strong", "-s", str(store.root), "--labels",
                                      str(labels), "--label", "target", "--groups", "site", "--n-boot", "200",
                                      "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "model", "encoder", "layer"]
    ranked = [line.split()[1] for line in lines[2:] if line[:1].isdigit()]
    probes = [m for m in ranked if m.startswith("probe:")]
    assert probes == ["probe:strong", "probe:weak", "probe:noise"] and len(ranked) == 5
    assert "external:m: probe:strong (layer 4)" in result.stdout
    assert lines[-1] == f"best set: strong; plot: {out_dir / 'leaderboard.png'} (table and JSON beside it)"
    png = out_dir / "leaderboard.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (out_dir / "leaderboard.txt").read_text().strip() in result.stdout
    written = json.loads((out_dir / "leaderboard.json").read_text())
    assert [r["model"] for r in written["rows"]] == ranked and written["groups"] == "site"


def test_leaderboard_command_json(board_store):
    root, store, labels = board_store
    result = CliRunner().invoke(cli, ["leaderboard", "strong", "noise", "-s", str(store.root), "--labels", str(labels),
                                      "--label", "target", "--n-boot", "50", "--out", str(root / "lb_json"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["best_set"] == "strong" and data["n_boot"] == 50 and data["groups"] is None
    assert data["paths"]["plot"] == str(root / "lb_json" / "leaderboard.png")
    assert {r["model"] for r in data["rows"]} == {"probe:strong", "probe:noise", "concat", "stack"}
    assert data["headline"].split(" (")[0] in {"stack beats best baseline", "stack is below best baseline",
                                               "no significant gain over best baseline"}


@pytest.mark.parametrize("args, code, message", [
    (["leaderboard", "nope", "--labels", "{labels}"], 1, "No feature set named 'nope'"),
    (["leaderboard", "strong", "--labels", "{labels}"], 1, "no label column 'label'"),
    (["leaderboard", "--labels", "{labels}"], 2, "Missing argument 'SETS...'"),
    (["leaderboard", "strong"], 2, "Missing option '--labels'"),
])
def test_leaderboard_command_errors(board_store, args, code, message):
    root, store, labels = board_store
    argv = [a.format(labels=labels) for a in args] + ["-s", str(store.root), "--out", str(root / "never")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (root / "never").exists()

"""leaderboard: each stored set's tuned probe, the concat and the stack ranked on held-out rows of the user's labels."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import stackers

N, K, DIM = 500, 3, 12


def _constructed(store, write_set, seed: int = 0) -> pd.DataFrame:
    """Four stored sets with a known order: two layers of one encoder (layer 6 strongly informative, layer 2
    weakly), and two sets of pure noise from another encoder. Rows are written in a shuffled order."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=N)
    ids = np.arange(N) * 3 + 11
    means = rng.standard_normal((K, DIM))
    blocks = {
        "enc_layer6": 0.9 * means[y] + rng.standard_normal((N, DIM)),
        "enc_layer2": 0.35 * means[y] + rng.standard_normal((N, DIM)),
        "noise_a": rng.standard_normal((N, DIM)),
        "noise_b": rng.standard_normal((N, DIM)),
    }
    specs = {"enc_layer6": {"encoder": "external:enc", "layer": 6},
             "enc_layer2": {"encoder": "external:enc", "layer": 2},
             "noise_a": {"encoder": "external:noise"}, "noise_b": {"encoder": "external:noise"}}
    for name, X in blocks.items():
        order = rng.permutation(N)
        write_set(store, name, ids[order], X[order], spec=specs[name])
    return pd.DataFrame({"id": ids, "label": np.array(["ant", "bee", "cat"])[y], "site": np.arange(N) // 10})


SETS = ["noise_a", "enc_layer2", "noise_b", "enc_layer6"]  # the informative set listed last on purpose


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    import featurestore
    from tests.stackers.conftest import _write_set

    store = featurestore.open(tmp_path_factory.mktemp("lb") / "store")
    labels = _constructed(store, _write_set)
    return stackers.leaderboard(store, SETS, labels=labels, groups="site", n_boot=300), labels


def test_leaderboard_ranks_the_known_best_set_first(board):
    lb, _ = board
    probes = [m for m in lb.order if m.startswith("probe:")]
    assert probes[0] == "probe:enc_layer6" and probes[1] == "probe:enc_layer2"
    assert set(probes[2:]) == {"probe:noise_a", "probe:noise_b"}
    assert lb.best_set == "enc_layer6"
    res = lb.comparison.results
    # Not just the order: the informative layer is far above noise (macro-F1 near chance is ~1/3).
    assert res["probe:enc_layer6"]["macro_f1"]["low"] > res["probe:enc_layer2"]["macro_f1"]["high"]
    for noise in ("probe:noise_a", "probe:noise_b"):
        assert res["probe:enc_layer2"]["macro_f1"]["low"] > res[noise]["macro_f1"]["high"]
        assert res[noise]["macro_f1"]["value"] < 0.5
    table = lb.table()
    assert list(table.index) == lb.order and list(table["rank"]) == list(range(1, len(lb.order) + 1))
    values = table["macro_f1"].to_numpy()
    assert np.all(values[:-1] >= values[1:])  # sorted, best first
    assert {"concat", "stack"} <= set(table.index) and len(table) == len(SETS) + 2


def test_leaderboard_groups_layers_by_encoder(board):
    lb, _ = board
    table = lb.table()
    assert table.loc["probe:enc_layer6", "encoder"] == "external:enc" and table.loc["probe:enc_layer6", "layer"] == 6
    assert table.loc["probe:enc_layer2", "layer"] == 2 and table.loc["stack", "encoder"] == "(all sets)"
    assert lb.encoders() == {"external:enc": ["probe:enc_layer6", "probe:enc_layer2"],
                             "external:noise": [m for m in lb.order if m.startswith("probe:noise")]}
    text = lb.to_text()
    assert "external:enc: probe:enc_layer6 (layer 6)" in text and "> probe:enc_layer2 (layer 2)" in text
    assert text.splitlines()[0].split()[:4] == ["#", "model", "encoder", "layer"]
    assert lb.headline in text


def test_leaderboard_held_out_rows_are_whole_groups_and_gaps_are_paired(board):
    lb, labels = board
    assert lb.n_train + lb.n_test == N and 0.15 < lb.n_test / N < 0.35
    held = set(lb.heldout_keys.column("id").to_pylist())
    assert len(held) == lb.n_test
    site_of = dict(zip(labels["id"], labels["site"]))
    held_sites = {site_of[k] for k in held}
    assert not held_sites & {site_of[k] for k in labels["id"] if k not in held}  # no site on both sides
    top = lb.table().iloc[0]
    assert top["gap"] == 0 and top["gap_low"] == 0 and top["gap_high"] == 0  # a model minus itself, per resample
    d = lb.to_dict()
    json.dumps(d, allow_nan=False)
    assert [r["model"] for r in d["rows"]] == lb.order and d["groups"] == "site" and d["best_set"] == "enc_layer6"
    assert d["rows"][-1]["gap_to_best"]["high"] < 0


def test_leaderboard_plot_is_a_png(board, tmp_path):
    lb, _ = board
    path = lb.plot(tmp_path / "sub" / "board.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.parametrize("kwargs, match", [
    ({"test_size": 1.5}, "The 'test_size' parameter of leaderboard must be a float in (0, 1)"),
    ({"n_boot": -1}, "The 'n_boot' parameter of leaderboard must be an int >= 0. Got -1 instead."),
])
def test_leaderboard_rejects_bad_params(store, kwargs, match):
    with pytest.raises(stackers.InvalidParameterError, match=re.escape(match)):
        stackers.leaderboard(store, ["x"], labels={"id": [1], "label": ["a"]}, **kwargs)


def test_leaderboard_needs_a_label_column(store, write_set):
    labels = _constructed(store, write_set)
    with pytest.raises(ValueError, match="no label column 'target'"):
        stackers.leaderboard(store, ["noise_a"], labels=labels.drop(columns="label"), label="target")

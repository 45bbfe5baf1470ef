"""stackers.learning_curve on the 8x8 digits: the draws, the intervals, the table, the summary and the files."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stackers
from stackers.evaluate._learning_curve import STACK

N_PER_CLASS = (5, 20, 1000)  # 1000 exceeds the pool: replaced by the pool's smallest class count


@pytest.fixture(scope="module")
def digits_data() -> stackers.TrainingSet:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:60] for c in range(10)]))  # 60 of each digit
    X, y = (X[keep] / 16.0).astype(np.float32), y[keep]
    noise = np.random.default_rng(0).normal(size=(len(y), 16)).astype(np.float32)
    return stackers.TrainingSet(blocks={"top": X[:, :32], "bottom": X[:, 32:], "noise": noise}, y=y)


FAMILIES = {"top": "halves", "bottom": "halves", "noise": "noise"}


@pytest.fixture(scope="module")
def curve(digits_data) -> stackers.LearningCurve:
    return stackers.learning_curve(digits_data, n_per_class=N_PER_CLASS, draws=2, test_size=0.2, seed=3,
                                   stack_top=2, families=FAMILIES, contrast=("halves", "noise"), n_boot=200,
                                   progress=False)


def test_the_test_set_is_fixed_and_stratified_and_apart_from_the_pool(curve, digits_data):
    test, pool = curve.test_rows, curve.pool_rows
    assert len(np.intersect1d(test, pool)) == 0
    assert np.array_equal(np.sort(np.r_[test, pool]), np.arange(digits_data.n_rows))
    assert len(test) == 120
    assert np.array_equal(np.bincount(digits_data.y[test]), np.full(10, 12))  # stratified: 12 of each digit


def test_each_draw_has_exactly_n_rows_per_class_from_the_pool_never_the_test_set(curve, digits_data):
    y = digits_data.y
    assert sorted(curve.train_rows) == [(5, 0), (5, 1), (20, 0), (20, 1), (curve.n_per_class[-1], 0)]
    for (n, _), rows in curve.train_rows.items():
        assert len(np.unique(rows)) == len(rows)
        assert np.isin(rows, curve.pool_rows).all()
        assert not np.isin(rows, curve.test_rows).any()
        assert np.array_equal(np.bincount(y[rows], minlength=10), np.full(10, n))
    assert not np.array_equal(curve.train_rows[(5, 0)], curve.train_rows[(5, 1)])  # draws differ
    s = curve.scores
    assert set(s.loc[s["n_per_class"] == 20, "n_train"]) == {200}


def test_the_same_seed_draws_the_same_rows(digits_data, curve):
    again = stackers.learning_curve(digits_data, n_per_class=(5,), draws=2, test_size=0.2, seed=3, stack_top=0,
                                    families=FAMILIES, n_boot=0, progress=False)
    assert np.array_equal(again.test_rows, curve.test_rows)
    assert np.array_equal(again.train_rows[(5, 1)], curve.train_rows[(5, 1)])


def test_sizes_beyond_the_pool_become_the_largest_possible_with_a_note(curve, digits_data):
    pool_counts = np.bincount(digits_data.y[curve.pool_rows])
    assert curve.n_per_class == [5, 20, int(pool_counts.min())]
    assert curve.n_per_class[-1] == 48  # 60 - 12 held out, for every digit: one draw, the whole pool
    assert any("n=1000 per class would exceed the training pool" in note for note in curve.notes)
    assert "n=1000" in curve.summary()


def test_table_shape_and_columns(curve):
    t = curve.table()
    assert len(t) == 3 * (3 + 1)  # 3 sizes x (3 sets + the stack)
    assert list(t["set"][:4]) == ["top", "bottom", "noise", STACK]
    assert set(t["family"]) == {"halves", "noise", STACK}
    assert {"accuracy", "low", "high", "interval", "draws", "n_train"} <= set(t.columns)
    assert len(curve.scores) == (2 + 2 + 1) * 4  # draws x (sets + stack)
    wide = curve.wide()
    assert list(wide.index) == ["top", "bottom", "noise", STACK]
    assert list(wide.columns) == ["family", "stage", "n=5", "n=20", f"n={curve.n_per_class[-1]}"]


def test_intervals_are_t_over_draws_or_a_bootstrap_for_the_whole_pool(curve):
    t, s = curve.table(), curve.scores
    for row in t.itertuples():
        assert 0 <= row.low <= row.accuracy <= row.high <= 1
    row = t[(t["set"] == "top") & (t["n_per_class"] == 5)].iloc[0]
    vals = s.loc[(s["set"] == "top") & (s["n_per_class"] == 5), "accuracy"].to_numpy()
    half = 12.706 * vals.std(ddof=1) / math.sqrt(2)  # t(0.975, df=1)
    assert row["interval"] == "t over 2 draws"
    assert row["accuracy"] == pytest.approx(vals.mean())
    assert row["low"] == pytest.approx(max(0.0, vals.mean() - half))
    assert row["high"] == pytest.approx(min(1.0, vals.mean() + half))
    whole = t[(t["set"] == "top") & (t["n_per_class"] == curve.n_per_class[-1])].iloc[0]
    assert whole["draws"] == 1 and whole["interval"].startswith("bootstrap over")
    assert whole["low"] < whole["accuracy"] < whole["high"]


def test_scores_are_the_probes_on_the_test_rows(curve, digits_data):
    """A spot check by hand: the top block's probe of draw (20, 1) refitted and scored on the test rows."""
    rows, test = curve.train_rows[(20, 1)], curve.test_rows
    X, y = digits_data.blocks["top"], digits_data.y
    probe = stackers.LogisticProbeCV(cv=5, random_state=3).fit(X[rows], y[rows])
    s = curve.scores
    got = s.loc[(s["set"] == "top") & (s["n_per_class"] == 20) & (s["draw"] == 1), "accuracy"].item()
    assert got == pytest.approx(float(np.mean(probe.predict(X[test]) == y[test])))


def test_the_stack_takes_the_sets_with_the_best_inner_cv_scores(curve):
    s = curve.scores
    for _, part in s.groupby(["n_per_class", "draw"]):
        single = part[part["set"] != STACK].sort_values("cv_score", ascending=False)
        members = part.loc[part["set"] == STACK, "members"].item()
        assert members.split(",") == list(single["set"][:2])
        assert "noise" not in members


def test_summary_is_computed_from_the_numbers(curve):
    text = curve.summary()
    n_lo, n_hi = curve.n_per_class[0], curve.n_per_class[-1]
    best_lo = curve.best_set(n_lo)
    assert best_lo in ("top", "bottom") and curve.best_set() in ("top", "bottom")
    gap_lo = curve._mean(curve._family_best("halves", n_lo), n_lo) - curve._mean("noise", n_lo)
    assert f"{gap_lo:+.3f} at {n_lo} labels per class" in text
    assert f"halves: best at n={n_hi} is {curve.best_set()}" in text
    assert "Stack of the top 2 sets" in text
    assert gap_lo > 0.3  # two halves of a digit beat pure noise by far


def test_save_writes_the_report_files(curve, tmp_path):
    paths = curve.save(tmp_path / "report")
    assert set(paths) == {"table", "scores", "markdown", "png", "summary"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 20_000
    assert paths["summary"].read_text().strip() == curve.summary()
    md = paths["markdown"].read_text().splitlines()
    assert md[0].startswith("| set | family | stage | n=5 |") and len(md) == 2 + 4
    import pandas as pd

    assert len(pd.read_csv(paths["table"])) == len(curve.table())
    assert curve.to_dict()["best_set"] == curve.best_set()


@pytest.mark.parametrize("kwargs, match", [
    ({"draws": 0}, "'draws' parameter of learning_curve"),
    ({"metric": "roc_auc"}, "'metric' parameter of learning_curve"),
    ({"n_per_class": [1, 5]}, "'n_per_class' parameter of learning_curve must be a non-empty list of ints >= 2"),
    ({"n_per_class": []}, "'n_per_class' parameter"),
    ({"test_size": 1.5}, "'test_size' parameter"),
    ({"families": {"top": "a"}}, r"missing \['bottom', 'noise'\]"),
    ({"families": FAMILIES, "contrast": ("halves", "pixels")}, "'contrast' parameter of learning_curve must be two"),
    ({"test_size": 0.995}, "at least 2 rows per class"),
])
def test_bad_parameters_are_refused_naming_them(digits_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stackers.learning_curve(digits_data, **{"progress": False, **kwargs})


def test_unlabelled_or_grouped_data_is_refused(digits_data):
    with pytest.raises(ValueError, match="needs labels"):
        stackers.learning_curve(stackers.TrainingSet(blocks=digits_data.blocks), progress=False)
    grouped = stackers.TrainingSet(blocks=digits_data.blocks, y=digits_data.y, groups=np.arange(digits_data.n_rows))
    with pytest.raises(ValueError, match="rows of one group could straddle"):
        stackers.learning_curve(grouped, progress=False)
    with pytest.raises(ValueError, match="'data' parameter of learning_curve"):
        stackers.learning_curve({"top": digits_data.blocks["top"]}, progress=False)

"""Whitening and CORAL: their defining formulas, their use per block inside the stacker, saving without pickle."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import scipy.linalg
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.utils.estimator_checks import parametrize_with_checks

import stackers
from stackers import CORAL, StackingClassifier, Whitening
from stackers.classify._format import ARRAYS, MANIFEST


def _correlated(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Rows with a full, far-from-identity covariance (and mean ``shift``)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) * np.linspace(0.2, 3.0, d)
    return rng.standard_normal((n, d)) @ mixing + shift


def _cov(X: np.ndarray) -> np.ndarray:
    return np.cov(X, rowvar=False, bias=True)


def _shrunk(X: np.ndarray, a: float) -> np.ndarray:
    S = _cov(X)
    return (1 - a) * S + a * np.trace(S) / S.shape[0] * np.eye(S.shape[0])


# -- the transforms -------------------------------------------------------------------------------------------------
# CORAL is not in the common checks: its fit needs target rows, which they cannot pass.
@parametrize_with_checks([Whitening(), Whitening(shrinkage=0.2)])
def test_whitening_sklearn_checks(estimator, check):
    check(estimator)


def test_whitening_gives_identity_covariance():
    X = _correlated(800, 6, seed=0, shift=5.0)
    w = Whitening(shrinkage=0.0).fit(X)
    Z = w.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(_cov(Z), np.eye(6), atol=1e-10)
    # ZCA: the symmetric inverse square root (the whitening that rotates the data least), not e.g. PCA whitening
    np.testing.assert_allclose(w.matrix_, w.matrix_.T, atol=1e-12)
    np.testing.assert_allclose(w.matrix_, scipy.linalg.fractional_matrix_power(_cov(X), -0.5).real, rtol=1e-8)


@pytest.mark.parametrize("a", [0.1, 0.5])
def test_whitening_with_shrinkage_follows_the_shrunk_eigenvalues(a):
    X = _correlated(800, 6, seed=1)
    Z = Whitening(shrinkage=a).fit(X).transform(X)
    lam = np.linalg.eigvalsh(_cov(X))
    expected = np.sort(lam / ((1 - a) * lam + a * lam.mean()))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(_cov(Z))), expected, rtol=1e-8)
    assert not np.allclose(_cov(Z), np.eye(6), atol=1e-2)  # shrinkage is really applied


def test_auto_shrinkage_is_ledoit_wolf():
    X = _correlated(60, 20, seed=2)  # few rows for the dims: the sample covariance is poorly conditioned
    T = _correlated(80, 20, seed=3)
    w = Whitening().fit(X)
    c = CORAL().fit(X, target=T)
    lw = ledoit_wolf_shrinkage(X - X.mean(axis=0), assume_centered=True)
    assert w.shrinkage_ == pytest.approx(lw) and 0 < lw < 1
    assert c.shrinkage_source_ == pytest.approx(lw)
    assert c.shrinkage_target_ == pytest.approx(ledoit_wolf_shrinkage(T - T.mean(axis=0), assume_centered=True))
    np.testing.assert_allclose(w.matrix_, scipy.linalg.fractional_matrix_power(_shrunk(X, lw), -0.5).real,
                               rtol=1e-7, atol=1e-10)


def test_coral_matches_the_target_covariance_and_mean():
    X = _correlated(700, 5, seed=4, shift=-2.0)
    T = _correlated(500, 5, seed=5, shift=3.0)
    assert not np.allclose(_cov(X), _cov(T), atol=0.5)
    R = CORAL(shrinkage=0.0).fit(X, target=T).transform(X)
    np.testing.assert_allclose(_cov(R), _cov(T), atol=1e-9)
    np.testing.assert_allclose(R.mean(axis=0), T.mean(axis=0), atol=1e-9)


@pytest.mark.parametrize("a", [0.0, 0.3])
def test_coral_equals_the_reference_formula(a):
    """Sun & Saenko 2016: Ds* = Ds Cs^(-1/2) Ct^(1/2), here with shrunk covariances; match_mean adds the mean move."""
    X = _correlated(400, 4, seed=6, shift=1.0)
    T = _correlated(300, 4, seed=7, shift=-1.0)
    A = scipy.linalg.fractional_matrix_power(_shrunk(X, a), -0.5).real @ scipy.linalg.sqrtm(_shrunk(T, a)).real
    paper = CORAL(shrinkage=a, match_mean=False).fit(X, target=T)
    np.testing.assert_allclose(paper.transform(X), X @ A, rtol=1e-7, atol=1e-9)
    centred = CORAL(shrinkage=a).fit(X, target=T)
    np.testing.assert_allclose(centred.transform(X), (X - X.mean(axis=0)) @ A + T.mean(axis=0), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("make, match", [
    (lambda X: CORAL().fit(X), "CORAL.fit needs the target domain's rows"),
    (lambda X: CORAL().fit(X, target=X[:, :3]), "The target rows have 3 features, but X has 4"),
    (lambda X: CORAL().fit(X, target=X[:1]), "CORAL needs at least 2 target rows to estimate their covariance; got 1"),
    (lambda X: CORAL(match_mean="yes").fit(X, target=X), "The 'match_mean' parameter of CORAL must be"),
    (lambda X: Whitening(shrinkage=1.5).fit(X), r"The 'shrinkage' parameter of Whitening must be .*Got 1.5"),
    (lambda X: Whitening().fit(X[:1]), "minimum of 2 is required"),
    (lambda X: Whitening().fit(X).transform(X[:, :3]), "X has 3 features, but Whitening is expecting 4"),
])
def test_transforms_reject_bad_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        make(_correlated(50, 4, seed=8))


# -- inside the stacker ---------------------------------------------------------------------------------------------
def _domains(synthetic):
    """Two blocks of a labelled source domain, and an unlabelled target domain whose blocks are rescaled and moved."""
    blocks, y = synthetic(n=300, k=3, dims=(6, 8), seed=0)
    target, _ = synthetic(n=200, k=3, dims=(6, 8), seed=0)
    rng = np.random.default_rng(9)
    target = {b: X @ np.diag(rng.uniform(0.3, 3.0, X.shape[1])) + 1.5 for b, X in target.items()}
    return blocks, y, target


FAST = {"meta": "logistic", "cv": 3}


@pytest.mark.parametrize("align, with_target", [("whiten", False), ("whiten", True), ("coral", True)])
def test_align_is_the_transform_applied_per_block(synthetic, align, with_target):
    """The stacker with align equals the plain stacker fitted on the aligned blocks, and predicts for rows as
    documented: whitened by the target's (or the training rows') whitening, or, under CORAL, as they are."""
    blocks, y, target = _domains(synthetic)
    kw = {"target": target} if with_target else {}
    model = StackingClassifier(align=align, **FAST).fit(blocks, y, **kw)
    if align == "coral":
        train = {b: CORAL().fit(X, target=target[b]).transform(X) for b, X in blocks.items()}
        later = target
    else:
        train = {b: Whitening().fit_transform(X) for b, X in blocks.items()}
        fitted_on = target if with_target else blocks
        later = {b: Whitening().fit(fitted_on[b]).transform(target[b]) for b in blocks}
    plain = StackingClassifier(**FAST).fit(train, y)
    np.testing.assert_allclose(model.oof_predictions_, plain.oof_predictions_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(target), plain.predict_proba(later), rtol=1e-9, atol=1e-12)
    assert sorted(model.aligners_) == ["b0", "b1"]
    assert all(type(a) is {"whiten": Whitening, "coral": CORAL}[align] for a in model.aligners_.values())


def test_without_align_nothing_is_fitted(synthetic):
    blocks, y, target = _domains(synthetic)
    model = StackingClassifier(**FAST).fit(blocks, y)
    assert model.aligners_ == {}


@pytest.mark.parametrize("align, with_target", [("whiten", False), ("whiten", True), ("coral", True)])
def test_aligned_stacker_saves_loads_and_predicts_identically(synthetic, tmp_path, align, with_target):
    blocks, y, target = _domains(synthetic)
    kw = {"target": target} if with_target else {}
    model = StackingClassifier(align=align, **FAST).fit(blocks, y, **kw)
    loaded = stackers.load(model.save(tmp_path / "m"))
    assert loaded.align == align
    assert np.array_equal(loaded.predict_proba(target), model.predict_proba(target))
    assert np.array_equal(loaded.predict(blocks), model.predict(blocks))
    for name, aligner in model.aligners_.items():
        again = loaded.aligners_[name]
        assert type(again) is type(aligner) and again.get_params() == aligner.get_params()
        for field, value in vars(aligner).items():
            if field.endswith("_"):
                assert np.array_equal(getattr(again, field), value), field
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["format_version"] == 3  # older stackers, which would ignore the aligners, refuse it
    with zipfile.ZipFile(tmp_path / "m" / ARRAYS) as z:
        assert {n for n in z.namelist() if n.startswith("align")} == {
            f"align{i}.{f}.npy" for i in range(2)
            for f in (("mean", "matrix") if align == "whiten" else ("mean_source", "mean_target", "matrix"))}


def test_unaligned_model_keeps_format_2(synthetic, tmp_path):
    blocks, y, _ = _domains(synthetic)
    StackingClassifier(**FAST).fit(blocks, y).save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and "align" not in manifest["params"]
    assert all("align" not in b for b in manifest["blocks"])


def _rewrite_npz(folder, edit) -> None:
    with np.load(folder / ARRAYS, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(folder / ARRAYS, **arrays)


def _edit_manifest(folder, edit) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("tamper, match", [
    (lambda f: _rewrite_npz(f, lambda a: a.update({"align1.matrix": a["align1.matrix"][:4, :4]})),
     r"'align1.matrix.npy' has shape \(4, 4\); the manifest implies \(8, 8\)"),
    (lambda f: _rewrite_npz(f, lambda a: a.update({"align0.mean_target": a["align0.mean_target"].astype(np.int64)})),
     r"'align0.mean_target.npy' has dtype int64; expected a float dtype"),
    (lambda f: _rewrite_npz(f, lambda a: a.pop("align0.mean_source")), r"lacks the array\(s\) \['align0.mean_source"),
    (lambda f: _rewrite_npz(f, lambda a: a.update({"align0.extra": np.zeros(3)})), "does not describe"),
    (lambda f: _rewrite_npz(f, lambda a: a["align1.matrix"].__setitem__((0, 0), np.nan)), "NaN or infinite"),
    (lambda f: _edit_manifest(f, lambda m: m["blocks"][0]["align"].update({"class": "Whitening"})),
     "blocks\\[0\\].align must be class 'CORAL'"),
    (lambda f: _edit_manifest(f, lambda m: m["params"].update({"align": None})), r"blocks\[0\].align is set but"),
    (lambda f: _edit_manifest(f, lambda m: m["params"].update({"align": "zca"})), "params.align must be null or"),
    (lambda f: _edit_manifest(f, lambda m: m["blocks"][1].pop("align")), r"blocks\[1\].align must be class"),
    (lambda f: _edit_manifest(f, lambda m: m["blocks"][0]["align"]["params"].update({"shrinkage": 7})),
     "The 'shrinkage' parameter of CORAL must be"),
    (lambda f: _edit_manifest(f, lambda m: m["blocks"][0]["align"]["fitted"].update({"shrinkage_target_": "x"})),
     r"fitted.shrinkage_target_ must be a number in \[0, 1\]"),
])
def test_load_verifies_the_aligners(synthetic, tmp_path, tamper, match):
    blocks, y, target = _domains(synthetic)
    folder = StackingClassifier(align="coral", **FAST).fit(blocks, y, target=target).save(tmp_path / "m")
    tamper(folder)
    with pytest.raises(ValueError, match=match):
        stackers.load(folder)


@pytest.mark.parametrize("params, fit_kw, match", [
    ({"align": "coral"}, {}, r"align='coral' recolours the training rows .* fit\(X, y, target=T\)"),
    ({"align": "zca"}, {}, r"The 'align' parameter of StackingClassifier must be one of \{'coral', 'whiten'\} or None"),
    ({}, {"target": "same"}, "target= .* is only used with align='whiten' or align='coral'"),
    ({"align": "coral"}, {"target": "narrow"}, "target block 'b1' has 5 features, but the training block has 8."),
    ({"align": "whiten"}, {"target": "one block"}, r"target lacks block\(s\) \['b1'\]"),
    ({"align": "coral"}, {"target": "array"}, "target must name its blocks like X"),
    ({"align": "coral"}, {"target": "one row"}, "target block 'b0' has 1 row; align='coral' needs at least 2"),
])
def test_stacker_align_rejects_bad_inputs(synthetic, params, fit_kw, match):
    blocks, y, target = _domains(synthetic)
    bad = {"same": target, "narrow": {"b0": target["b0"], "b1": target["b1"][:, :5]},
           "one block": {"b0": target["b0"]}, "array": target["b0"],
           "one row": {b: X[:1] for b, X in target.items()}}
    kw = {k: bad[v] for k, v in fit_kw.items()}
    with pytest.raises(ValueError, match=match):
        StackingClassifier(**params, **FAST).fit(blocks, y, **kw)


def test_single_array_model_takes_a_plain_target(synthetic):
    blocks, y, target = _domains(synthetic)
    model = StackingClassifier(align="coral", **FAST).fit(blocks["b0"], y, target=target["b0"])
    np.testing.assert_allclose(model.aligners_["x"].mean_target_, target["b0"].mean(axis=0))
    assert model.predict(target["b0"]).shape == (200,)

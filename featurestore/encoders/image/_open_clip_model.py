"""Which open_clip model a name means, and where its weights are, without the network.

``open_clip:<arch>/<tag>`` (a pretrained tag, looked up in the local Hugging Face cache), ``open_clip:<arch>/random``
(random init, seeded: what tests use, as no package ships CLIP weights), ``open_clip:<arch>@<file>`` (a checkpoint on
disk) and ``open_clip:hf-hub:<repo>``; each resolves to an architecture, a weights file (or a seed) and its sha256,
which go into the spec. Downloads happen only with ``allow_download=True``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurestore.encoders.image._base import (
    state_dict_sha256,
)
from featurestore.encoders.runtime._cache import file_sha256
from featurestore.encoders.runtime._model_lookup import downloads_allowed
from featurestore.errors import EncoderNotAvailableError, ValidationError
from featurestore.utils._optional import import_optional

_SAFE_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def open_clip_module() -> Any:
    return import_optional("open_clip", extra="clip")


@contextlib.contextmanager
def quiet_logs() -> Any:
    """open_clip logs "initialized randomly" on the root logger for every random model: not news here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


class OpenClipModel:
    """What a name resolves to: how to build the model, and its identity (sha256 of the weights)."""

    def __init__(self, model: str, *, allow_download: bool) -> None:
        self.text = model
        self.allow_download = allow_download
        self.seed = 0
        self.file: Path | None = None
        self.tag_cfg: dict[str, Any] = {}
        if model.startswith("hf-hub:"):
            self.kind, self.arch = "hf-hub", model
            if not model[len("hf-hub:"):].strip("/"):
                raise ValidationError("'open_clip:hf-hub:' names no repository (e.g. 'open_clip:hf-hub:org/repo').")
            return
        arch, at, file = model.partition("@")
        if at:
            if not file:
                raise ValidationError(f"'open_clip:{model}' names no checkpoint file after '@'.")
            self.kind, self.arch, self.file = "file", arch, Path(file).expanduser()
        else:
            arch, _, tag = arch.partition("/")
            if not tag:
                raise ValidationError(f"'open_clip:{model}' names no weights: use 'open_clip:{arch}/<pretrained tag>', "
                                 f"'open_clip:{arch}@<checkpoint file>' or 'open_clip:{arch}/random'.")
            self.arch = arch
            if tag == "random" or (tag.startswith("random-") and tag[7:].isdigit()):
                self.kind, self.seed = "random", int(tag[7:] or 0) if tag != "random" else 0
            else:
                self.kind, self.tag = "tag", tag
        oc = open_clip_module()
        if oc.get_model_config(self.arch) is None:
            raise ValidationError(f"Unknown open_clip arch {self.arch!r} in 'open_clip:{model}'. Known: "
                             "open_clip.list_models(); add your own with open_clip.add_model_config(path).")
        if self.kind == "tag":
            self.tag_cfg = dict(oc.get_pretrained_cfg(self.arch, self.tag) or {})
            if not self.tag_cfg:
                tags = oc.list_pretrained_tags_by_model(self.arch)
                raise ValidationError(f"Unknown pretrained tag {self.tag!r} for {self.arch!r}. Tags: "
                                 f"{', '.join(tags) or 'none'}; or '@<checkpoint file>', or 'random'.")

    @property
    def canonical(self) -> str:
        if self.kind == "random":
            return f"{self.arch}/random" + (f"-{self.seed}" if self.seed else "")
        if self.kind == "file":
            return f"{self.arch}@{self.file}"
        return self.text

    @functools.cached_property
    def weights_file(self) -> Path | None:
        """The checkpoint on this machine (None for random init); refused offline when it is not here."""
        if self.kind == "random":
            return None
        if self.kind == "file":
            assert self.file is not None
            if not self.file.is_file():
                raise EncoderNotAvailableError(f"No checkpoint file {str(self.file)!r} for 'open_clip:{self.text}'.")
            return self.file.resolve()
        if self.kind == "hf-hub":
            return _hf_weights(self.local_dir)
        return _tag_file(self.arch, self.tag, self.tag_cfg, allow_download=self.allow_download)

    @functools.cached_property
    def local_dir(self) -> Path:
        """An hf-hub repository's snapshot folder in the local cache (config and weights)."""
        hub = import_optional("huggingface_hub", extra="clip")
        repo = self.text[len("hf-hub:"):].strip("/")
        try:
            return Path(hub.snapshot_download(repo, local_files_only=not downloads_allowed(self.allow_download),
                                              allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin"]))
        except Exception as exc:  # noqa: BLE001 - hub errors have many kinds; all mean "not here"
            raise EncoderNotAvailableError(_offline_message(f"hf-hub:{repo}", "the local Hugging Face cache",
                                                            exc)) from None

    @functools.cached_property
    def sha256(self) -> str:
        if self.kind == "random":
            return _random_sha(self.arch, self.seed)
        assert self.weights_file is not None
        return file_sha256(self.weights_file)

    def build(self, device: str) -> tuple[Any, Any]:
        """(model in eval mode on ``device``, its eval preprocess)."""
        oc = open_clip_module()
        torch = import_optional("torch", extra="clip")
        with quiet_logs(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.kind == "hf-hub":
                model, _, preprocess = oc.create_model_and_transforms(f"local-dir:{self.local_dir}", device=device)
            elif self.kind == "random":
                model, _, preprocess = oc.create_model_and_transforms(self.arch, pretrained=None, device=device)
            else:
                cfg = self.tag_cfg
                model, _, preprocess = oc.create_model_and_transforms(
                    self.arch, pretrained=str(self.weights_file), device=device,
                    force_quick_gelu=bool(cfg.get("quick_gelu", False)), image_mean=cfg.get("mean"),
                    image_std=cfg.get("std"), image_interpolation=cfg.get("interpolation"),
                    image_resize_mode=cfg.get("resize_mode"))
        return model.eval(), preprocess

    def tokenizer(self) -> Any:
        name = f"local-dir:{self.local_dir}" if self.kind == "hf-hub" else self.arch
        return open_clip_module().get_tokenizer(name)


@functools.lru_cache(maxsize=16)
def _random_sha(arch: str, seed: int) -> str:
    oc = open_clip_module()
    torch = import_optional("torch", extra="clip")
    with quiet_logs(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return state_dict_sha256(oc.create_model(arch, pretrained=None))


def _hf_weights(folder: Path) -> Path:
    for name in _SAFE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise EncoderNotAvailableError(f"No open_clip weights ({', '.join(_SAFE_NAMES)}) in {str(folder)!r}.")


def _tag_file(arch: str, tag: str, cfg: Mapping[str, Any], *, allow_download: bool) -> Path:
    """A pretrained tag's checkpoint from the HF cache or open_clip's URL cache; downloaded only when allowed."""
    allowed = downloads_allowed(allow_download)
    hf = cfg.get("hf_hub")
    if hf:
        hub = import_optional("huggingface_hub", extra="clip")
        repo, filename = os.path.split(hf)  # as open_clip reads it: a trailing "/" means the default file names
        names = [filename] if filename else list(_SAFE_NAMES)
        last: Exception | None = None
        for name in names:
            try:
                return Path(hub.hf_hub_download(repo, name, local_files_only=not allowed))
            except Exception as exc:  # noqa: BLE001 - not cached / not on the hub: try the next name
                last = exc
        raise EncoderNotAvailableError(_offline_message(f"{arch}/{tag}", f"the Hugging Face cache ({repo})", last))
    url = cfg.get("url", "")
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if target.is_file():
        return target
    if allowed and url:
        return Path(open_clip_module().pretrained.download_pretrained_from_url(url))
    raise EncoderNotAvailableError(_offline_message(f"{arch}/{tag}", str(target), None))


def _offline_message(name: str, where: str, exc: Exception | None) -> str:
    return (f"The open_clip weights {name!r} are not on this machine (looked in {where}); offline, nothing is "
            "downloaded.\n  Help: pass a local checkpoint ('open_clip:<arch>@/path/file'), or allow the download "
            "(allow_download=True or FEATURESTORE_ALLOW_DOWNLOAD=1)." + (f" ({type(exc).__name__})" if exc else ""))

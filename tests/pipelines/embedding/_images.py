"""Image test helpers: real image files of every awkward kind, and ``tiny-image:<dim>``, an instant image encoder.

Loaded by path (``load()``) from the image tests and from crash-test children, so the encoder is registered in any
process that runs a job. Nothing here is mocked: files are real JPEG/PNG bytes on disk, decoded by ``load_image``.
"""

from __future__ import annotations

import importlib.util
import io
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()


def load() -> Any:
    """This module, registered once per process under one name (so the encoder class and its counters are shared)."""
    name = "_fs_test_images"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- an instant image encoder -------------------------------------------------------------------------------------
class TinyPixels:
    """Picklable preprocess: RGB image -> (3, 8, 8) float32 in [0, 1] (bilinear resize)."""

    def __call__(self, image: Any) -> Any:
        import torch
        from PIL import Image

        pixels = np.asarray(image.resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _register() -> type:
    from featurestore.encoders import get_encoder, list_encoders, register
    from featurestore.encoders.image._base import IMAGE_OPTIONS, ImageEncoder
    from featurestore.encoders.image._io import MAX_PIXELS

    class TinyImageEncoder(ImageEncoder):
        """``tiny-image:<dim>``: a fixed random projection of 8x8 pixels; ``layer`` picks another projection.

        ``counts["images"]``: images through any encoder's ``encode_pixels``; ``counts["passes"]``: images through
        a shared pass (``encode_pixels_with``), i.e. what a model would have run on.
        """

        options = IMAGE_OPTIONS
        counts: dict[str, int] = {}

        def __init__(self, model: str = "16", *, layer: str | None = None, device: str | None = None,
                     batch_size: int | None = None, max_pixels: int = MAX_PIXELS, **_: Any) -> None:
            self._dim = int(model)
            self.layer, self.device, self.batch_size, self.max_pixels = layer, device, batch_size, max_pixels
            self.name = f"tiny-image:{model}"

        @property
        def preprocess(self) -> Any:
            return TinyPixels()

        @property
        def dim(self) -> int:
            return self._dim

        def spec(self) -> dict[str, Any]:
            return {"encoder": self.name, "dim": self._dim, "dtype": "float32", "metric": "cosine",
                    "modality": "image", "layer": self.layer, "preprocessing": {"resize": [8, 8]}}

        def provenance(self) -> dict[str, Any]:
            return self.image_provenance([])

        def _weights(self) -> np.ndarray:
            seed = zlib.crc32(str(self.layer).encode())
            return np.random.default_rng(seed).standard_normal((3 * 8 * 8, self._dim))

        def encode_pixels(self, batch: Any) -> np.ndarray:
            counts = type(self).counts
            counts["images"] = counts.get("images", 0) + len(batch)
            flat = batch.reshape(len(batch), -1).numpy().astype(np.float64)
            return (flat @ self._weights()).astype(np.float32)

        def encode_pixels_with(self, others: Any, batch: Any) -> list[np.ndarray]:
            counts = type(self).counts
            counts["passes"] = counts.get("passes", 0) + len(batch)
            return super().encode_pixels_with(others, batch)

    if "tiny-image" not in list_encoders():
        register("tiny-image")(TinyImageEncoder)
    return type(get_encoder("tiny-image:16"))


Tiny = _register()


# -- image files ------------------------------------------------------------------------------------------------------
def rgb(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A deterministic (h, w, 3) uint8 image with some structure (a gradient plus noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 200, w, dtype=np.float64)[None, :, None]
    return np.clip(ramp + rng.integers(0, 55, (h, w, 3)), 0, 255).astype(np.uint8)


def save(path: Path, image: Any, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> Path:
    from PIL import Image

    return save(path, Image.fromarray(rgb(seed, size)), format="JPEG", quality=90)


def png_bomb() -> bytes:
    """A small PNG whose header claims 40,000 x 40,000 pixels: a decompression bomb, refused from the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


#: every awkward kind of file: name -> (what the job must do: "stored" or the reason's words), see ``write_kinds``
KINDS = {
    "corrupt.jpg": "not an image",
    "truncated.jpg": "truncated",
    "zero.jpg": "zero-byte file",
    "missing.jpg": "missing file",
    "cmyk.jpg": "stored",
    "sixteen.png": "stored",
    "palette_alpha.png": "stored",
    "rgba.png": "stored",
    "exif_rotated.jpg": "stored",
    "bomb.png": "decompression bomb",
}


def write_kinds(folder: Path) -> dict[str, Path]:
    """One file per entry of KINDS under ``folder`` (``missing.jpg`` is not written): name -> path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in KINDS}
    paths["corrupt.jpg"].write_bytes(b"this is a text file, not a JPEG\n" * 10)
    good = io.BytesIO()
    Image.fromarray(rgb(1, (64, 64))).save(good, format="JPEG", quality=95)
    paths["truncated.jpg"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    paths["zero.jpg"].write_bytes(b"")
    save(paths["cmyk.jpg"], Image.fromarray(rgb(2)).convert("CMYK"), format="JPEG")
    ramp = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 80).astype(np.uint16)
    save(paths["sixteen.png"], Image.fromarray(ramp), format="PNG")
    palette = Image.fromarray(rgb(3)).convert("P", palette=Image.ADAPTIVE, colors=16)
    save(paths["palette_alpha.png"], palette, format="PNG", transparency=0)
    rgba = np.dstack([rgb(4), np.linspace(0, 255, 24 * 32).reshape(24, 32).astype(np.uint8)])
    save(paths["rgba.png"], Image.fromarray(rgba), format="PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    save(paths["exif_rotated.jpg"], Image.fromarray(rgb(5, (20, 40))), format="JPEG", exif=exif.tobytes())
    paths["bomb.png"].write_bytes(png_bomb())
    return paths

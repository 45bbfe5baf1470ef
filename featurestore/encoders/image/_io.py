"""One way to turn a file, a path or bytes into an RGB image, or a short reason why not.

Every image encoder and the image sources decode through :func:`load_image`, so a given file either gives the same
pixels everywhere or fails with the same :class:`ImageDecodeError` reason (recorded as an error row by embedding
jobs). What it guarantees:

- the EXIF orientation is applied (a phone photo taken sideways is upright, as every viewer shows it);
- the result is 8-bit RGB: CMYK, 16-bit and 32-bit grayscale, palettes, LA and RGBA (alpha composited on white,
  not dropped: dropping alpha turns transparent pixels into whatever colour they happen to store, often black);
- the pixels are fully decoded here (``load()``), so a truncated file fails here, not later inside a model batch;
- decompression bombs are refused from the header alone, before any pixel is decoded. Pillow's own guard
  (``Image.MAX_IMAGE_PIXELS``, a warning up to twice the limit) is turned into an error, without touching the
  global, so the effective limit is the smaller of ``max_pixels`` and Pillow's;
- only raster formats are opened (``IMAGE_FORMATS``): PDF, EPS and the like would run external programs or render
  documents.

Pillow is imported on first use: ``import featurestore`` never needs it.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import TYPE_CHECKING, Any

from featurestore.errors import ImageDecodeError, InvalidTypeError, ValidationError
from featurestore.utils._optional import import_optional

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["IMAGE_FORMATS", "MAX_PIXELS", "load_image", "to_rgb"]

#: Pillow's own default limit (``Image.MAX_IMAGE_PIXELS``): about a 9459 x 9459 image, ~256 MB as RGB
MAX_PIXELS = 89_478_485
#: the raster formats load_image opens; anything else is "not an image"
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "ICO", "JPEG2000", "QOI",
                 "AVIF")
#: leading bytes of formats we open: a file that starts so but that Pillow cannot identify is damaged, not foreign
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
_WHITE = (255, 255, 255)


def _pil() -> Any:
    return import_optional("PIL.Image", extra="vision", what="Decoding images")


def load_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *,
               max_pixels: int = MAX_PIXELS) -> PILImage.Image:
    """Decode ``source`` (a path or the file's bytes) into an upright, fully loaded 8-bit RGB image.

    Raises ImageDecodeError whose ``reason`` says what is wrong in a few words ("missing file", "zero-byte file",
    "truncated", "not an image", "decompression bomb: 200000000 pixels > limit 89478485", ...); TypeError for a
    ``source`` that is neither a path nor bytes.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValidationError(f"The 'max_pixels' parameter of load_image must be a positive int. Got {max_pixels!r} "
                         "instead.")
    Image = _pil()
    where: str | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        data = read_image_bytes(where)
    else:
        raise InvalidTypeError(f"An image source is a path or bytes. Got {type(source).__name__} instead.")
    if not data:
        raise ImageDecodeError("zero-byte file", where)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_formats(Image))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageDecodeError(_bomb_reason(data, max_pixels), where) from None
        except Image.UnidentifiedImageError:
            damaged = data.startswith(_MAGIC)
            raise ImageDecodeError("truncated or corrupt header" if damaged else "not an image", where) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's plugins raise these for bad headers
            raise ImageDecodeError(_reason(exc, "corrupt header"), where) from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"decompression bomb: {width * height} pixels > limit {max_pixels}", where)
            try:
                image.load()
                return to_rgb(image)
            except ImageDecodeError as exc:
                raise ImageDecodeError(exc.reason, where) from None
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                raise ImageDecodeError(_bomb_reason(data, max_pixels), where) from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise ImageDecodeError(_reason(exc, "corrupt image data"), where) from None


def _reason(exc: BaseException, kind: str) -> str:
    """"truncated" when the data ends early (Pillow says so in several spellings), else ``kind: <Pillow's words>``."""
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return "truncated"
    return f"{kind}: {exc}"


def _formats(Image: Any) -> list[str]:
    """IMAGE_FORMATS this Pillow can open (plugins vary by build and version: MPO opens through JPEG in some)."""
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def read_image_bytes(path: str) -> bytes:
    """A file's bytes, or ImageDecodeError with the reason every image path uses ("missing file", ...)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageDecodeError("missing file", path) from None
    except IsADirectoryError:
        raise ImageDecodeError("a directory, not a file", path) from None
    except PermissionError:
        raise ImageDecodeError("permission denied", path) from None
    except OSError as exc:
        raise ImageDecodeError(f"unreadable file: {exc.strerror or exc}", path) from None


def _bomb_reason(data: bytes, max_pixels: int) -> str:
    """The reason, with the size read from the header: Pillow refused the file inside ``open``, before ``size``."""
    Image = _pil()
    limit = min(max_pixels, int(Image.MAX_IMAGE_PIXELS or max_pixels))
    pixels = _header_pixels(data)
    return f"decompression bomb: {pixels} pixels > limit {limit}" if pixels else f"decompression bomb: > {limit} pixels"


def _header_pixels(data: bytes) -> int | None:
    """width x height from a PNG, GIF, BMP or JPEG header, without Pillow's size guard; None when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width * height
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width * height
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width * height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width * height
            i += 2 + length
    return None


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Upright 8-bit RGB: EXIF orientation first (it reads the original's metadata), then the mode.

    Used on images load_image decoded and on PIL images users pass in directly, so both give the same pixels.
    """
    Image = _pil()
    from PIL import ImageOps

    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for malformed EXIF blocks
        raise ImageDecodeError(f"bad EXIF orientation: {exc}") from None
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(Image, image)
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, F


def _sixteen_bit_to_rgb(Image: Any, image: PILImage.Image) -> PILImage.Image:
    """16-bit grayscale scaled to 8 bits (x / 257, rounded): Pillow's own convert clips at 255 (mostly white)."""
    import numpy as np

    values = np.asarray(image).astype(np.float64)
    gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")

"""load_image: every bad-image kind fails with its reason; every odd mode comes back as upright 8-bit RGB."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from featurestore.encoders import ImageDecodeError, load_image
from featurestore.errors import FeatureStoreError

Image = pytest.importorskip("PIL.Image")


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _rgb(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width x height`` RGB pixels, with no pixel data: ~60 bytes on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b""))


BAD = {
    "zero-byte": (b"", "zero-byte file"),
    "not an image": (b"hello, this is a text file\n" * 4, "not an image"),
    "corrupt bytes": (b"\x00\x01\x02garbage" * 20, "not an image"),
    "truncated JPEG": (_jpeg(_rgb())[:400], "truncated"),
    "truncated PNG": (_png_bytes(Image.fromarray(_rgb()))[:300], "truncated"),
    "PNG cut inside its header": (_png_bytes(Image.fromarray(_rgb()))[:20], "truncated"),
    "PNG signature, then garbage": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "truncated or corrupt header"),
    "bomb over twice the limit": (_png_claiming(20_000, 10_000), "decompression bomb: 200000000 pixels > limit "
                                                                  "89478485"),
    "bomb over the limit (Pillow's warning)": (_png_claiming(10_000, 10_000), "decompression bomb: 100000000 pixels"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_images_raise_with_their_reason_from_bytes_and_from_files(kind, tmp_path):
    data, reason = BAD[kind]
    with pytest.raises(ImageDecodeError) as raised:
        load_image(data)
    assert raised.value.reason.startswith(reason), raised.value.reason
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError) as raised:
        load_image(path)
    assert raised.value.reason.startswith(reason) and str(path) in str(raised.value)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, FeatureStoreError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="^missing file: .*nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="^a directory"):
        load_image(tmp_path)


def test_a_smaller_max_pixels_refuses_a_normal_image():
    data = _png_bytes(Image.fromarray(_rgb(32, 32)))
    assert load_image(data, max_pixels=1024).size == (32, 32)
    with pytest.raises(ImageDecodeError, match=r"decompression bomb: 1024 pixels > limit 1023"):
        load_image(data, max_pixels=1023)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the global is never changed


def test_the_error_pickles_whole_for_dataloader_workers():
    err = pickle.loads(pickle.dumps(ImageDecodeError("truncated", "/x/a.jpg")))
    assert (err.reason, err.source, str(err)) == ("truncated", "/x/a.jpg", "truncated: /x/a.jpg")


@pytest.mark.parametrize("bad", [None, 3, ["a.png"]])
def test_a_source_of_another_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="path or bytes"):
        load_image(bad)


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5, True])
def test_max_pixels_is_checked(max_pixels):
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(b"x", max_pixels=max_pixels)


# -- modes ------------------------------------------------------------------------------------------------------------

def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=100)
    image = load_image(buf.getvalue())
    assert image.mode == "RGB" and image.size == (16, 8)
    r, g, b = np.asarray(image, dtype=int).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode.startswith("I;16")
    image = load_image(_png_bytes(source))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image)[0, :, 0], [0, 100, 255])


def test_palette_png_with_transparency_is_composited_on_white():
    palette = Image.new("P", (4, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putdata([0, 1, 0, 1])
    palette.info["transparency"] = 0  # index 0 (stored black) is transparent
    data = _png_bytes(palette)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    pixels = np.asarray(load_image(data))
    np.testing.assert_array_equal(pixels[0], [[255, 255, 255], [255, 0, 0], [255, 255, 255], [255, 0, 0]])


def test_rgba_and_la_are_composited_on_white():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = [0, 0, 0, 0]          # transparent black -> white
    rgba[0, 1] = [0, 0, 255, 255]      # opaque blue stays
    rgba[0, 2] = [0, 0, 0, 128]        # half black -> grey
    pixels = np.asarray(load_image(_png_bytes(Image.fromarray(rgba, "RGBA"))), dtype=int)
    np.testing.assert_array_equal(pixels[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(pixels[0, 1], [0, 0, 255])
    assert 120 <= pixels[0, 2, 0] <= 130
    la = Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8), "LA")
    np.testing.assert_array_equal(np.asarray(load_image(_png_bytes(la)))[0], [[255] * 3, [50] * 3])


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8), "L")
    pixels = np.asarray(load_image(_png_bytes(gray)))
    assert pixels.shape == (1, 3, 3) and (pixels == pixels[..., :1]).all()


def test_exif_orientation_is_applied(tmp_path: Path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)  # 20 wide, 10 high; the left half red
    array[:, :10] = [255, 0, 0]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg(array, exif=exif.tobytes()))
    image = load_image(path)
    assert image.size == (10, 20)  # upright: now 10 wide, 20 high
    pixels = np.asarray(image, dtype=int)
    assert pixels[:5, :, 0].mean() > 200 and pixels[-5:, :, 0].mean() < 60  # red moved to the top


def test_a_pil_image_is_fully_loaded_and_the_file_closed(tmp_path: Path):
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes(Image.fromarray(_rgb(8, 8))))
    image = load_image(path)
    path.unlink()  # nothing is read lazily any more
    np.testing.assert_array_equal(np.asarray(image), _rgb(8, 8))

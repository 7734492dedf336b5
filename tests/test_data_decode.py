"""The safe decoder: every awkward-but-valid image decodes correctly, every bad one gets a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.decode import ImageDecodeError, decode, read_header


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (30, 10), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored 30x10 shows as 10 wide, 30 high
    arr, header = decode(_bytes(img, "JPEG", exif=exif), "phone.jpg")
    assert arr.shape == (30, 10, 3)
    assert (header.width, header.height) == (30, 10)  # as stored on disk


def test_16bit_png_is_scaled_not_saturated():
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)  # uint16 -> mode I;16
    arr, header = decode(_bytes(img, "PNG"), "deep.png", channels=1)
    assert header.mode.startswith("I")
    assert arr[0, :, 0].tolist() == [0, 4, 128, 255]


def test_transparent_pixels_are_composited_on_white_not_revealed():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # hidden red under alpha 0
    rgba[0, 0] = (0, 0, 255, 255)  # one opaque blue pixel
    arr, _ = decode(_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "alpha.png")
    assert arr[0, 0].tolist() == [0, 0, 255]
    assert arr[1, 1].tolist() == [255, 255, 255]


def test_palette_with_transparency_composited():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 1  # palette index 1 (red) is transparent
    arr, _ = decode(_bytes(img, "PNG", transparency=1), "pal.png")
    assert arr[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb():
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    arr, header = decode(_bytes(img, "JPEG"), "print.jpg")
    assert header.mode == "CMYK"
    r, g, b = arr[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    arr, _ = decode(buf.getvalue(), "anim.gif")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


@pytest.mark.parametrize("shape", [(1, 1), (1000, 10), (10, 1000)])
def test_tiny_and_elongated_images_resize_to_a_square(shape):
    img = Image.new("RGB", shape, (10, 200, 30))
    for mode in ("crop", "squash"):
        arr, _ = decode(_bytes(img, "PNG"), "x.png", size=16, resize_mode=mode)
        assert arr.shape == (16, 16, 3)
        assert arr[8, 8].tolist() == [10, 200, 30]


def test_crop_keeps_aspect_squash_does_not():
    arr = np.zeros((10, 40, 3), dtype=np.uint8)
    arr[:, :10] = 255  # white left quarter: cropped away by a centre crop, kept by squash
    data = _bytes(Image.fromarray(arr), "PNG")
    cropped, _ = decode(data, "w.png", size=10, resize_mode="crop")
    squashed, _ = decode(data, "w.png", size=10, resize_mode="squash")
    assert cropped[:, 0].max() < 20
    assert squashed[:, 0].min() > 200


def test_grayscale_kept_single_channel():
    arr, _ = decode(_bytes(Image.new("L", (5, 5), 77), "PNG"), "g.png", channels=1)
    assert arr.shape == (5, 5, 1) and arr[0, 0, 0] == 77


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_caught_by_the_full_decode(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _bytes(Image.fromarray(noise), fmt)
    with pytest.raises(ImageDecodeError, match="damaged or truncated"):
        decode(data[: len(data) // 2], f"cut.{fmt.lower()}")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"just some notes\n", "text"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "PostScript"),
        (bytes(range(256)) * 4, "allowed format"),
    ],
)
def test_non_images_get_a_reason(content, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode(content, "fake.jpg")


def test_tiff_renamed_png_is_refused():
    with pytest.raises(ImageDecodeError, match="TIFF but named .png"):
        decode(_bytes(Image.new("RGB", (4, 4)), "TIFF"), "sneaky.png")


def test_pixel_cap(monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "100")
    with pytest.raises(ImageDecodeError, match="exceeds the cap"):
        decode(_bytes(Image.new("RGB", (20, 20)), "PNG"), "big.png")
    arr, _ = decode(_bytes(Image.new("RGB", (10, 10)), "PNG"), "ok.png")
    assert arr.shape == (10, 10, 3)


def test_read_header_does_not_need_the_pixels(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    data = _bytes(Image.fromarray(noise), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])  # truncated: header fine, pixels not
    h = read_header(path)
    assert (h.width, h.height, h.mode, h.format) == (48, 64, "RGB", "PNG")
    with pytest.raises(ImageDecodeError):
        decode(path)

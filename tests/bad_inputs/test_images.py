"""Bad and awkward image files, one by one through `engine.data.decode` and all together in a dataset.

Hostile or broken files must be refused with a reason that names the problem (the dataset lists
them by path); awkward but valid ones must decode to the right pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import dataset_stats, open_dataset
from engine.data.decode import ImageDecodeError, decode, max_pixels, read_header
from tests.bad_inputs.conftest import animated, encode, png16, quadrant_jpeg, raw_png, red_corner, truncated
from tests.conftest import make_class_folders

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n%%EOF\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n"


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- refused, with the reason -----------------------------------------------------------------------


def test_bomb_past_pillows_hard_limit(tmp_path):
    path = _file(tmp_path, "bomb.png", raw_png(20_000, 20_000))  # 400 Mpx declared in a 60-byte file
    with pytest.raises(ImageDecodeError, match=r"^refused as a decompression bomb \(Image size \(400000000 pixels\)"):
        decode(path)


def test_pillows_bomb_warning_is_an_error_even_above_our_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_PIXELS", str(10**9))  # our cap out of the way: Pillow's warning must refuse
    path = _file(tmp_path, "warn.png", raw_png(10_000, 9_000))  # 90 Mpx: past MAX_IMAGE_PIXELS, below 2x
    assert 10_000 * 9_000 > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing leaks out as a mere warning
        for read in (decode, read_header):
            with pytest.raises(ImageDecodeError, match="decompression bomb"):
                read(path)


def test_our_pixel_cap(tmp_path):
    assert max_pixels() == 40_000_000
    path = _file(tmp_path, "huge.png", raw_png(8_000, 6_000))  # 48 Mpx: below Pillow's warning
    with pytest.raises(ImageDecodeError, match=r"^8000x6000 pixels exceeds the cap of 40,000,000 \(LOUPE_MAX_PIXELS\)"):
        decode(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_caught_by_the_full_decode(tmp_path, fmt):
    path = _file(tmp_path, f"cut.{fmt.lower()}", truncated(fmt))
    assert read_header(path).format == fmt  # the header alone looks fine
    if fmt == "JPEG":
        Image.open(path).verify()  # and verify() passes a half JPEG: only decoding every pixel tells
    with pytest.raises(ImageDecodeError, match="damaged or truncated"):
        decode(path)


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("page.jpg", HTML, "not an image: the file is an HTML page"),
        ("notes.jpg", b"label: cat\nsource: phone\n", "not an image: the file is text"),
        ("empty.jpg", b"", "the file is empty (0 bytes)"),
        ("empty.png", b"", "the file is empty (0 bytes)"),
        ("vector.png", EPS, "not an allowed image: the file is PostScript/EPS"),
    ],
)
def test_non_images(tmp_path, name, data, reason):
    path = _file(tmp_path, name, data)
    for read in (decode, read_header):
        with pytest.raises(ImageDecodeError) as err:
            read(path)
        assert str(err.value) == reason


def test_format_allow_list(tmp_path):
    tiff = encode(Image.new("RGB", (4, 4), (9, 9, 9)), "TIFF")
    with pytest.raises(ImageDecodeError, match=r"^the file is TIFF but named \.png; rename or convert it$"):
        decode(_file(tmp_path, "scan.png", tiff))
    arr, header = decode(_file(tmp_path, "scan.tif", tiff))  # the same file under its own name is fine
    assert header.format == "TIFF" and arr[0, 0].tolist() == [9, 9, 9]
    with pytest.raises(ImageDecodeError, match="named .png"):
        decode(_file(tmp_path, "photo.png", encode(Image.new("RGB", (4, 4)), "JPEG")))


# --- decoded correctly ------------------------------------------------------------------------------


def test_16bit_gray_png_is_scaled_not_saturated():
    values = np.array([[0, 257, 1000, 32768, 65535, 65535]] * 6, dtype=np.uint16)
    data = png16(values)
    arr, header = decode(data, "deep.png", channels=1)
    assert header.mode == "I;16"
    assert arr[0, :, 0].tolist() == [0, 1, 4, 128, 255, 255]  # value / 257, rounded
    colour, _ = decode(data, "deep.png", channels=3)
    assert colour[0, :, 0].tolist() == colour[0, :, 2].tolist() == [0, 1, 4, 128, 255, 255]
    small, _ = decode(png16(np.full((8, 8), 32768, np.uint16)), "d.png", size=4, channels=1)
    assert small.shape == (4, 4, 1) and np.all(small == 128)  # the resize path scales the same way


def test_16bit_rgb_png_keeps_its_colours():
    values = np.zeros((4, 4, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32768, 2560
    arr, _ = decode(png16(values), "rgb16.png")
    assert arr[2, 2].tolist() == [255, 128, 10]  # the high byte of each 16-bit value


def test_alpha_is_composited_on_white_and_hidden_pixels_never_show():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # hidden red everywhere, under alpha 0
    rgba[:, :4] = (0, 0, 255, 255)  # left half opaque blue
    rgba[0, 7] = (0, 0, 0, 128)  # half-transparent black
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    arr, _ = decode(data, "alpha.png")
    assert arr[0, 0].tolist() == [0, 0, 255] and arr[5, 6].tolist() == [255, 255, 255]
    assert arr[0, 7].tolist() == [127, 127, 127]
    small, _ = decode(data, "alpha.png", size=4, resize_mode="squash")
    assert np.array_equal(small[..., 0], small[..., 1])  # only blue/white/grey mixes: no red bleeds in


@pytest.mark.parametrize(
    "mode, make",
    [
        (
            "LA",
            lambda: Image.fromarray(
                np.dstack([np.full((4, 4), 30, np.uint8), np.array([[255, 0] * 2] * 4, np.uint8)]), "LA"
            ),
        ),
        ("RGB+tRNS", lambda: Image.new("RGB", (4, 4), (255, 0, 0))),
    ],
)
def test_other_transparency_kinds(mode, make):
    img = make()
    kw = {"transparency": (255, 0, 0)} if mode == "RGB+tRNS" else {}
    arr, _ = decode(encode(img, "PNG", **kw), "t.png")
    if mode == "LA":
        assert arr[0, 0].tolist() == [30, 30, 30] and arr[0, 1].tolist() == [255, 255, 255]
    else:  # the transparent colour is the background, as a browser shows it
        assert np.all(arr == 255)


def test_palette_with_partial_alpha_table():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putdata([0, 1])
    arr, _ = decode(encode(img, "PNG", transparency=bytes([0, 255])), "pal.png")  # index 0 (red) fully clear
    assert arr[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_cmyk_jpeg():
    arr, header = decode(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), "print.jpg", size=8)
    assert header.mode == "CMYK" and arr.shape == (8, 8, 3)
    r, g, b = arr[4, 4].tolist()
    assert r > 230 and g < 30 and b < 30


@pytest.mark.parametrize(
    "orientation, corner",
    [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left"), (2, "top-right")],
)
@pytest.mark.parametrize("size", [None, 16])
def test_exif_rotated_phone_photo_comes_out_upright(orientation, corner, size):
    arr, header = decode(quadrant_jpeg(orientation), "phone.jpg", size=size)
    assert (header.width, header.height) == (64, 32)  # as stored
    if size is None:
        assert arr.shape[:2] == ((64, 32) if orientation in (6, 8) else (32, 64))
    assert red_corner(arr) == corner


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_give_the_first_frame(fmt):
    arr, _ = decode(animated(fmt), f"anim.{fmt.lower()}")
    assert arr.shape == (6, 6, 3)
    assert arr[3, 3, 0] > 200 and arr[3, 3, 2] < 50  # red, the first frame, not blue


def test_one_pixel_image():
    arr, _ = decode(encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"), "dot.png", size=8)
    assert arr.shape == (8, 8, 3) and np.all(arr == [12, 34, 56])


@pytest.mark.parametrize("shape", [(4000, 3), (3, 4000)])
def test_elongated_image_centre_crop(shape):
    w, h = shape
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (255, 0, 0)
    if w > h:
        arr[:, w // 2 - 10 : w // 2 + 10] = (0, 255, 0)  # only the middle is green
    else:
        arr[h // 2 - 10 : h // 2 + 10] = (0, 255, 0)
    out, header = decode(encode(Image.fromarray(arr), "PNG"), "strip.png", size=16)
    assert (header.width, header.height) == shape
    assert out.shape == (16, 16, 3) and np.all(out == [0, 255, 0])  # the centre square
    squashed, _ = decode(encode(Image.fromarray(arr), "PNG"), "strip.png", size=16, resize_mode="squash")
    assert squashed[0, 0, 0] == 255 and (squashed[..., 1] > 0).any()  # the whole strip: red ends kept


def test_elongated_image_never_resampled_to_a_huge_intermediate(monkeypatch):
    """A 60000x1 strip at 256 px would be resized to 15 Mpx x 256 rows (11 GB) before cropping."""
    sizes = []
    real = Image.Image.resize

    def spy(self, size, *a, **kw):
        sizes.append(tuple(size))
        return real(self, size, *a, **kw)

    monkeypatch.setattr(Image.Image, "resize", spy)
    arr, _ = decode(encode(Image.new("RGB", (60_000, 1), (1, 2, 3)), "PNG"), "line.png", size=256)
    assert arr.shape == (256, 256, 3) and np.all(arr == [1, 2, 3])
    assert sizes and max(w * h for w, h in sizes) <= 256 * 256


# --- all of it inside one dataset -------------------------------------------------------------------


BAD = {
    "cat/bomb.png": (raw_png(20_000, 20_000), "refused as a decompression bomb"),
    "cat/huge.png": (raw_png(8_000, 6_000), "exceeds the cap of 40,000,000"),
    "cat/cut.jpg": (truncated("JPEG"), "the image data is damaged or truncated"),
    "dog/cut.png": (truncated("PNG"), "the image data is damaged or truncated"),
    "dog/page.jpg": (HTML, "not an image: the file is an HTML page"),
    "dog/empty.jpg": (b"", "the file is empty (0 bytes)"),
    "cat/scan.png": (encode(Image.new("RGB", (4, 4)), "TIFF"), "the file is TIFF but named .png"),
    "dog/vector.png": (EPS, "PostScript/EPS"),
}


def _awkward() -> dict[str, bytes]:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # hidden red under alpha 0: must come out white
    return {
        "cat/deep.png": png16(np.full((16, 16), 32768, np.uint16)),
        "cat/clear.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "cat/phone.jpg": quadrant_jpeg(6),
        "dog/anim.gif": animated("GIF", size=(16, 16)),
        "dog/print.jpg": encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"),
        "dog/dot.png": encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"),
        "dog/strip.png": encode(Image.new("RGB", (4000, 3), (0, 200, 0)), "PNG"),
    }


def test_dataset_lists_every_bad_file_and_opens_the_rest(tmp_path):
    root = make_class_folders(tmp_path / "ds", {"cat": 5, "dog": 5})
    good = _awkward()
    for rel, data in {**{k: v[0] for k, v in BAD.items()}, **good}.items():
        (root / rel).write_bytes(data)
    ds = open_dataset(str(root), image_size=16)
    reasons = {c["path"]: c["reason"] for c in ds.scan.corrupt}
    assert set(reasons) == set(BAD)
    for rel, (_, why) in BAD.items():
        assert why in reasons[rel], rel
    stats = dataset_stats(ds)
    assert stats["corrupt"] == sorted(ds.scan.corrupt, key=lambda c: c["path"])
    assert stats["num_files"] == 10 + len(BAD) + len(good) and stats["num_images"] == 10 + len(good)
    used = np.concatenate(list(ds.splits.values()))
    bad_idx = {ds.source.files.index(p) for p in BAD}
    assert not bad_idx & set(used.tolist()) and len(used) == 10 + len(good)
    assert stats["images"]["width"]["max"] == 4000  # the strip counts; the bomb's claimed size does not

    def row(rel: str) -> np.ndarray:
        return np.asarray(ds.images[ds.source.files.index(rel)])

    assert ds.channels == 3
    assert np.all(row("cat/deep.png") == 128)
    assert np.all(row("cat/clear.png") == 255)
    assert red_corner(row("cat/phone.jpg")) == "top-right"
    assert row("dog/anim.gif")[8, 8, 0] > 200 and row("dog/anim.gif")[8, 8, 2] < 50
    assert row("dog/print.jpg")[8, 8, 0] > 230 and row("dog/print.jpg")[8, 8, 1] < 30
    assert np.all(row("dog/dot.png") == [12, 34, 56])
    assert np.all(row("dog/strip.png") == [0, 200, 0])


def test_decode_reads_only_its_file(tmp_path):
    """Decoding never writes anything next to the image (no sidecar or temp files)."""
    path = _file(tmp_path, "phone.jpg", quadrant_jpeg(6))
    before = sorted(p.name for p in tmp_path.iterdir())
    decode(path, size=8)
    with pytest.raises(ImageDecodeError):
        decode(_file(tmp_path, "x.png", truncated("PNG")))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["x.png"])

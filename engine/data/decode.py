"""The one safe image decoder: every image Loupe reads, for training or prediction, goes through here.

Why one place: the same photo must look the same to the model at training and at prediction time
(EXIF orientation, palette/alpha/16-bit handling, resize mode), and every untrusted file must pass
the same checks (format allow-list, pixel cap, full decode so truncated files are caught).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.env import env_int
from engine.files import FileRefused, open_regular, read_regular

#: extensions we treat as images, and the Pillow format each must really be
EXTENSION_FORMATS: dict[str, tuple[str, ...]] = {
    ".jpg": ("JPEG", "MPO"),
    ".jpeg": ("JPEG", "MPO"),
    ".png": ("PNG",),
    ".bmp": ("BMP",),
    ".gif": ("GIF",),
    ".webp": ("WEBP",),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
}
#: formats Pillow may even try to parse: never EPS/PSD/etc. (EPS runs Ghostscript)
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: background that transparent pixels are composited on (hidden RGB under alpha 0 must not leak)
BACKGROUND = (255, 255, 255)


#: pixels per image (env LOUPE_MAX_PIXELS)
DEFAULT_MAX_PIXELS = 40_000_000
#: bytes read per image file (env LOUPE_MAX_IMAGE_BYTES): a 40-megapixel 16-bit RGBA TIFF stored raw is 320 MB,
#: a photo a few MB; a tiny image padded to gigabytes is refused before a byte of it is read
DEFAULT_MAX_IMAGE_BYTES = 512 * 1024**2


def max_image_bytes() -> int:
    """Our cap on the bytes of one image file, so a padded or endless file is never read whole."""
    return env_int("LOUPE_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def max_pixels() -> int:
    """Our own pixel cap, below Pillow's bomb threshold so its warning never fires first."""
    return env_int("LOUPE_MAX_PIXELS", DEFAULT_MAX_PIXELS)


class ImageDecodeError(ValueError):
    """An image that cannot be used; the message is the reason, for the corrupt-files list."""


@dataclass
class Header:
    width: int
    height: int
    mode: str
    format: str


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSION_FORMATS


def read_image_file(path: str | Path) -> bytes:
    """The bytes of one image file: a regular file (symlinks resolved) under the byte cap, else
    `ImageDecodeError` with the reason. Every image file Loupe reads is read here."""
    try:
        return read_regular(path, max_image_bytes(), "LOUPE_MAX_IMAGE_BYTES")
    except FileRefused as e:
        raise ImageDecodeError(str(e)) from None
    except (OSError, ValueError) as e:  # missing, unreadable, or a name holding a NUL byte
        raise ImageDecodeError(f"cannot read the file ({getattr(e, 'strerror', None) or e})") from None


def _open(data: bytes | BinaryIO, name: str) -> Image.Image:
    fp = io.BytesIO(data) if isinstance(data, bytes) else data
    if isinstance(data, bytes) and not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    if isinstance(data, bytes) and len(data) > max_image_bytes():
        raise ImageDecodeError(
            f"the file is {len(data):,} bytes, over the cap of {max_image_bytes():,} bytes per image "
            "(LOUPE_MAX_IMAGE_BYTES)"
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; for untrusted files that is a refusal
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(_not_image_reason(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"refused as a decompression bomb ({str(e).rstrip('.')})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"unreadable image header ({e})") from None
    suffix = Path(name).suffix.lower()
    expected = EXTENSION_FORMATS.get(suffix)
    if expected and img.format not in expected:
        raise ImageDecodeError(f"the file is {img.format} but named {suffix}; rename or convert it")
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"the image has no pixels ({w}x{h})")
    if w * h > max_pixels():
        raise ImageDecodeError(f"{w}x{h} pixels exceeds the cap of {max_pixels():,} (LOUPE_MAX_PIXELS); downscale it")
    return img


def _not_image_reason(data: bytes | BinaryIO) -> str:
    if isinstance(data, bytes):
        head = data[:256]
    else:
        data.seek(0)
        head = data.read(256)
    if not head:
        return "the file is empty (0 bytes)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "not an image: the file is an HTML page"
    if head.startswith(b"%!PS"):
        return "not an allowed image: the file is PostScript/EPS"
    try:
        head.decode("utf-8")
        return "not an image: the file is text"
    except UnicodeDecodeError:
        return "not an image in an allowed format (JPEG, PNG, BMP, GIF, WebP, TIFF)"


def read_header(path: Path) -> Header:
    """Size, mode and format without decoding pixels: what the quick scan needs."""
    try:
        with open_regular(path, max_image_bytes(), "LOUPE_MAX_IMAGE_BYTES") as f, _open(f, path.name) as img:
            return Header(img.width, img.height, img.mode, img.format or "")
    except ImageDecodeError:
        raise
    except FileRefused as e:
        raise ImageDecodeError(str(e)) from None
    except (OSError, ValueError) as e:  # e.g. the file vanished or is unreadable
        raise ImageDecodeError(f"cannot read the file ({getattr(e, 'strerror', None) or e})") from None


def to_array(img: Image.Image, channels: int = 3) -> np.ndarray:
    """Convert any Pillow mode to uint8 (H, W, channels) the way the whole project does.

    16-bit and 32-bit images are scaled to 8 bits (not clipped, which would saturate to white);
    transparency is composited on `BACKGROUND`; CMYK and palettes go through Pillow's converters.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":  # float pixels: scaled by their finite range; NaN and inf count as the darkest value
            finite = np.isfinite(arr)
            lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
            arr = np.where(finite, arr, lo).astype(np.float64)
            arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        elif mode == "I" and arr.max() <= 255 and arr.min() >= 0:
            pass  # 8-bit values stored in 32-bit ints
        else:
            arr = arr.astype(np.float64) / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        img = Image.fromarray(gray, "L")
    elif "transparency" in img.info and mode in ("P", "L", "RGB") or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # P/L/RGB carry transparency as a palette alpha table or one transparent colour (PNG tRNS)
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if channels == 1:
        img = img.convert("L")
        return np.asarray(img, dtype=np.uint8)[:, :, None]
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def resize(img: Image.Image, size: int, mode: str = "crop") -> Image.Image:
    """Bring an image to `size` x `size`: `crop` keeps the aspect (shorter side, centre crop), `squash` doesn't."""
    if img.size == (size, size):
        return img
    if mode == "squash":
        return img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    if mode != "crop":
        raise ValueError(f"unknown resize mode {mode!r}; use 'crop' or 'squash'")
    # crop the centred square in the source, then resample only that: resizing the whole image first
    # would make a 40000x1 strip 40000*size pixels wide (gigabytes) just to throw nearly all of it away
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=3.0)


def decode(
    data: bytes | Path, name: str = "", size: int | None = None, channels: int = 3, resize_mode: str = "crop"
) -> tuple[np.ndarray, Header]:
    """Fully decode one image into uint8 (H, W, channels), optionally at `size` x `size`.

    Raises `ImageDecodeError` with the reason for anything unusable, so a dataset scan can list it
    and carry on. Returns the header as found on disk too (for statistics).
    """
    if isinstance(data, Path):
        name = name or data.name
        data = read_image_file(data)
    img = _open(data, name)
    header = Header(img.width, img.height, img.mode, img.format or "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # frames are checked on seek too
            if size is not None and img.format == "JPEG":
                img.draft("RGB" if channels == 3 else "L", (size, size))  # DCT-domain downscale: much faster
            img.load()  # full decode: truncated files raise here, not later
            if getattr(img, "is_animated", False):
                img.seek(0)
            img = ImageOps.exif_transpose(img)
            if size is not None:
                img = _prepare_mode(img)
                img = resize(img, size, resize_mode)
            arr = to_array(img, channels)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"refused as a decompression bomb ({str(e).rstrip('.')})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(f"the image data is damaged or truncated ({e})") from None
    return arr, header


def _prepare_mode(img: Image.Image) -> Image.Image:
    """Resample only in a mode that resizes correctly (no palettes, no 16-bit, alpha composited)."""
    if img.mode in ("RGB", "L"):
        return img
    arr = to_array(img, 1 if img.mode in GRAY_MODES else 3)
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)

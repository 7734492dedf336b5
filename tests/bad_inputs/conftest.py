"""Builders for the bad inputs of issue 8: each makes one awkward or hostile file from scratch."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG written by hand, so the header can claim any size and the depth can be 16 bits per
    channel (Pillow writes neither). `rows` are the unfiltered scanlines; None gives a file whose
    header promises `width` x `height` but whose data is a few bytes: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of `values` (H, W) gray or (H, W, 3) RGB uint16, big-endian as PNG stores it."""
    color_type = 0 if values.ndim == 2 else 2
    h, w = values.shape[:2]
    be = values.astype(">u2").reshape(h, -1).tobytes()
    stride = len(be) // h
    rows = b"".join(b"\x00" + be[r * stride : (r + 1) * stride] for r in range(h))  # filter 0 per row
    return raw_png(w, h, rows, bit_depth=16, color_type=color_type)


def truncated(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    """Noise in `fmt`, cut in half: the header reads fine, the pixels do not."""
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    return data[: len(data) // 2]


def quadrant_jpeg(orientation: int, size: tuple[int, int] = (64, 32)) -> bytes:
    """A JPEG stored with a red top-left quadrant on blue, tagged with EXIF `orientation`."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (0, 0, 255)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)


def red_corner(arr: np.ndarray) -> str:
    """Which quadrant of a decoded image is red: 'top-left', 'top-right', 'bottom-left' or 'bottom-right'."""
    h, w = arr.shape[:2]
    quads = {
        "top-left": arr[: h // 2, : w // 2],
        "top-right": arr[: h // 2, w // 2 :],
        "bottom-left": arr[h // 2 :, : w // 2],
        "bottom-right": arr[h // 2 :, w // 2 :],
    }
    redness = {k: float(q[..., 0].mean()) - float(q[..., 2].mean()) for k, q in quads.items()}
    return max(redness, key=redness.get)


def animated(fmt: str, colours=((255, 0, 0), (0, 0, 255)), size=(6, 6)) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colours]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)


def make_zip(
    path: Path,
    entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A zip of exactly these entries (names as given: nothing normalised, so hostile names survive)."""
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, payload in items:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            zf.writestr(info, payload, compress_type=compression)
    return path


def snapshot(root: Path) -> set[str]:
    """Every path under `root` (files, folders and links), to prove nothing appeared where it should not."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}

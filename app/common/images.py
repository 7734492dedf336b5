"""How the pages show dataset images: thumbnail width, the conversion for st.image, and the small encoded images
that go into a page's own HTML (the embedding map's hover)."""

from __future__ import annotations

import base64
import io

import numpy as np

THUMB_PX = 96  # thumbnails are shown this wide
HOVER_PX = 64  # the embedding map's hover images are encoded at most this wide (and shown THUMB_PX wide)
TINY_PX = 32  # images at most this wide are encoded at their own size (lossless, enlarged by the browser)


def for_display(img: np.ndarray, px: int = THUMB_PX) -> np.ndarray:
    """(H, W[, C]) uint8 ready for st.image: a single channel squeezed, tiny images (8x8 digits, 28x28
    Fashion-MNIST) enlarged by pixel repetition so the browser does not blur them."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    factor = px // max(img.shape[:2])
    if factor > 1:
        img = img.repeat(factor, axis=0).repeat(factor, axis=1)
    return img


def data_url(img: np.ndarray, px: int = HOVER_PX) -> str:
    """(H, W[, C]) uint8 as a `data:` URL small enough to send thousands of at once (the embedding map's hover).

    Tiny images (at most `TINY_PX` wide: digits, Fashion-MNIST) stay at their own size as lossless PNG, a few
    hundred bytes, for the browser to enlarge pixelated; larger ones are shrunk to at most `px` wide and sent as
    JPEG (about 1-2 KB at 64 px, where a PNG of a photo is twice that)."""
    from PIL import Image

    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    pic = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    buf = io.BytesIO()
    if max(pic.size) <= TINY_PX:
        pic.save(buf, format="PNG")
        mime = "image/png"
    else:
        pic.thumbnail((px, px))
        pic.save(buf, format="JPEG", quality=80)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"

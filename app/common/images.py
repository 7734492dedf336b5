"""How the pages show dataset images: thumbnail width and the conversion for st.image."""

from __future__ import annotations

import numpy as np

THUMB_PX = 96  # thumbnails are shown this wide


def for_display(img: np.ndarray, px: int = THUMB_PX) -> np.ndarray:
    """(H, W[, C]) uint8 ready for st.image: a single channel squeezed, tiny images (8x8 digits, 28x28
    Fashion-MNIST) enlarged by pixel repetition so the browser does not blur them."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    factor = px // max(img.shape[:2])
    if factor > 1:
        img = img.repeat(factor, axis=0).repeat(factor, axis=1)
    return img

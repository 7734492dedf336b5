"""Turning attribution maps into pictures, and checking them with a deletion curve.

Kept apart from the attribution code so the page can redraw an overlay (other colour map, alpha,
sign) without recomputing the explanation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIGNS = ("positive", "absolute", "all")


def _normalise(heatmap: np.ndarray, sign: str) -> np.ndarray:
    """Map to [0, 1]: positive evidence only, magnitude, or signed with 0.5 meaning 'no effect'."""
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, not {sign!r}")
    h = np.nan_to_num(np.asarray(heatmap, np.float64))
    if sign == "positive":
        h = np.clip(h, 0, None)
        m = h.max()
        return h / m if m > 0 else h
    if sign == "absolute":
        h = np.abs(h)
        m = h.max()
        return h / m if m > 0 else h
    m = np.abs(h).max()
    return (h / m + 1) / 2 if m > 0 else np.full_like(h, 0.5)


def heatmap_image(heatmap: np.ndarray, cmap: str = "jet", sign: str = "positive") -> np.ndarray:
    """The heatmap alone through a matplotlib colour map: uint8 (H, W, 3)."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](_normalise(heatmap, sign))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(
    pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet", sign: str = "positive"
) -> np.ndarray:
    """Blend the coloured heatmap over the image (gray images become RGB): uint8 (H, W, 3)."""
    img = np.asarray(pixels)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    h = np.asarray(heatmap, np.float32)
    if h.shape != img.shape[:2]:
        h = F.interpolate(torch.from_numpy(h)[None, None], size=img.shape[:2], mode="bilinear", align_corners=False)[
            0, 0
        ].numpy()
    col = heatmap_image(h, cmap, sign).astype(np.float32)
    out = (1 - alpha) * img.astype(np.float32) + alpha * col
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur per channel (sigma ~ size/16): a baseline that keeps colours but removes detail."""
    h = x.shape[-1]
    sigma = sigma or max(1.0, h / 16)
    r = int(min(3 * sigma, (min(x.shape[-2:]) - 1)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="reflect") if r else x
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect") if r else y
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def make_baseline(x: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """'black' (zeros), 'blur' (Gaussian-blurred input) or 'noise' (uniform, seeded) reference image."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "blur":
        return blur(x)
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(x.shape, generator=g).to(x)
    raise ValueError(f"baseline must be 'black', 'blur' or 'noise', not {kind!r}")


def deletion_curve(
    rm, x: torch.Tensor, heatmap: np.ndarray, target: int, steps: int = 20, baseline: str = "blur"
) -> dict:
    """Replace the most-attributed pixels first by the baseline in `steps` steps; the target probability
    should fall fast for a faithful map, so a lower area under the curve is better."""
    from engine.predict.run_model import predict_tensor

    x = x[:1]
    h, w = x.shape[-2:]
    order = np.argsort(-np.asarray(heatmap, np.float64).reshape(-1), kind="stable")
    fractions = np.linspace(0, 1, steps + 1)
    ref = make_baseline(x, baseline)
    batch = x.repeat(steps + 1, 1, 1, 1)
    flat_mask = torch.zeros(steps + 1, h * w, dtype=torch.bool)
    for i, f in enumerate(fractions):
        flat_mask[i, torch.from_numpy(order[: int(round(f * h * w))].copy())] = True
    mask = flat_mask.view(steps + 1, 1, h, w).to(x.device)
    batch = torch.where(mask, ref.expand_as(batch), batch)
    probs = predict_tensor(rm, batch)[:, target].astype(np.float64)
    auc = float(np.sum((probs[1:] + probs[:-1]) / 2 * np.diff(fractions)))
    return {"fractions": fractions.tolist(), "probs": probs.tolist(), "auc": auc}

"""THE pixel contract: how stored images become model input and back.

Images are decoded once into uint8 (H, W, C) arrays (`engine.data.decode`, the decoded cache); every
model takes float pixels in [0, 1], NCHW. Normalisation (mean/std) lives inside the model wrapper, not
here, so attacks and attributions work in pixel space and an epsilon of 8/255 means eight grey levels
whatever the backbone (ARCHITECTURE.md, "Definitions that must be exact"). Training batches, features,
predictions, attacks and the pages all convert through this module, so the model sees the same numbers
everywhere:

- `to_tensor`: uint8 -> float32 x / 255, NCHW;
- `to_uint8`: float in [0, 1] -> uint8 round(clamp(x, 0, 1) * 255) (half to even), HWC.

The NCHW result is a permuted view of the NHWC storage (channels_last strides), which convolutions
prefer; call `.contiguous()` where a plain NCHW layout is needed.
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(pixels: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 pixels -> float32 NCHW in [0, 1] (x / 255).

    (H, W) grey -> (1, 1, H, W); (H, W, C) -> (1, C, H, W); (N, H, W, C) -> (N, C, H, W). A numpy array
    is read without a copy unless it is read-only (a memmap) or not C-contiguous; `device` moves the
    uint8 pixels before converting, which sends a quarter of the bytes a float tensor would.
    """
    if isinstance(pixels, torch.Tensor):
        t = pixels
    else:
        arr = np.ascontiguousarray(pixels)
        if not arr.flags.writeable:  # torch warns on read-only memory (the decoded cache is a read-only memmap)
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.dtype != torch.uint8:
        raise TypeError(f"to_tensor takes uint8 pixels, got {t.dtype}; decode images with engine.data.decode first.")
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"to_tensor takes (H, W), (H, W, C) or (N, H, W, C) pixels, got shape {tuple(t.shape)}.")
    if device is not None:
        t = t.to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8 numpy, channels last: (C, H, W) -> (H, W, C), (N, C, H, W) -> (N, H, W, C).

    Values are clamped to [0, 1] first (an attack or augmentation may step a hair outside), then
    round(x * 255), ties to even, so `to_uint8(to_tensor(p)) == p` for every uint8 image p.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"to_uint8 takes (C, H, W) or (N, C, H, W) pixels, got shape {tuple(x.shape)}.")
    out = x.detach().float().clamp(0, 1).mul(255.0).round_().to(torch.uint8)
    out = out.permute(1, 2, 0) if out.dim() == 3 else out.permute(0, 2, 3, 1)
    return np.ascontiguousarray(out.cpu().numpy())

"""Batch augmentation on the training device (ARCHITECTURE.md, "Speed by design").

Why batches and not per-image transforms: a per-image PIL/torchvision pipeline in DataLoader workers
costs a Python call per image per op and, on a 2-core machine, competes with the model for the CPU.
Here one call augments a whole (N, C, H, W) batch with a handful of tensor ops wherever the batch
already lives (CPU or CUDA), in the spirit of airbench:

- horizontal flip, random translation (whole pixels, the "random crop with padding" of the fast
  CIFAR recipes), random resized crop (zoom) and rotation are folded into ONE affine matrix per
  image and applied with a single sampling grid + `grid_sample` pass (one resampling, so no blur
  piles up from chaining geometric ops); when only the flip is on, it is a `torch.where` instead;
- colour jitter (brightness, contrast, saturation) and random grayscale are per-image factors
  broadcast over the batch.

Every random number is drawn from `generator` when one is given, so a seeded run is reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import RunConfig
from engine.data.pixels import to_tensor, to_uint8

# ITU-R BT.601 luma weights: what PIL and torchvision use for grayscale conversion.
_LUMA = (0.299, 0.587, 0.114)
_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of the random resized crop (torchvision's default)


def is_identity(cfg: RunConfig, channels: int = 3) -> bool:
    """True when `cfg` enables no augmentation for images with `channels` channels."""
    colour = cfg.color_jitter > 0 or (channels == 3 and cfg.grayscale_p > 0)
    return not (cfg.hflip or cfg.rotation > 0 or cfg.crop_scale < 1.0 or cfg.translate > 0 or colour)


def max_shift(cfg: RunConfig, side: int) -> int:
    """The largest random translation in whole pixels on a `side`-pixel image: `translate` x side, rounded,
    and at least 1 pixel when translation is on (a share below half a pixel would otherwise do nothing)."""
    return max(1, round(cfg.translate * side)) if cfg.translate > 0 else 0


def _uniform(n: int, lo: float, hi: float, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """`n` float32 samples from U[lo, hi) on `device`.

    Drawn on the generator's own device (a CPU generator cannot fill a CUDA tensor) and then moved,
    so any generator works with any batch; a generator on the batch's device avoids the copy.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device)
    return (lo + (hi - lo) * u).to(device)


def _affine_theta(
    n: int, h: int, w: int, cfg: RunConfig, flip: Tensor | None, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """(n, 2, 3) sampling matrices mapping output to input coordinates (normalised to [-1, 1]).

    input = t + S @ R @ F @ output, where F is the optional flip, R the rotation and S the crop's
    size as a fraction of the image (a crop smaller than the image is a zoom-in), t the crop centre
    plus the translation. R is conjugated by the pixel aspect so a rotation stays a rotation on
    non-square images. A translation is a whole number of pixels (2 / side in normalised units per
    pixel), so with nothing else on, every output pixel is an input pixel, not a blend of two.
    """
    sx = torch.ones(n, device=device)
    sy = torch.ones(n, device=device)
    tx = torch.zeros(n, device=device)
    ty = torch.zeros(n, device=device)
    if cfg.crop_scale < 1.0:
        area = _uniform(n, cfg.crop_scale, 1.0, device, generator)
        # Aspect ratio log-uniform (3/4 and 4/3 equally likely), limited to [area, 1/area] so the
        # crop fits inside the image and keeps exactly the drawn area (torchvision re-draws instead).
        log_hi = torch.minimum(torch.full_like(area, math.log(_RATIO[1])), -torch.log(area))
        log_r = log_hi * (2 * _uniform(n, 0.0, 1.0, device, generator) - 1)  # symmetric: log(3/4) = -log(4/3)
        ratio = torch.exp(log_r)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)  # clamp: float rounding only
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        # Centre anywhere that keeps the crop inside the image (before rotation).
        tx = (1 - sx) * _uniform(n, -1.0, 1.0, device, generator)
        ty = (1 - sy) * _uniform(n, -1.0, 1.0, device, generator)
    for side, t in ((w, tx), (h, ty)):
        shift = max_shift(cfg, side)
        if shift:  # uniform over the 2 * shift + 1 whole-pixel offsets
            offset = torch.floor(_uniform(n, -shift, shift + 1, device, generator)).clamp_(-shift, shift)
            t += offset * (2 / side)
    cos = torch.ones(n, device=device)
    sin = torch.zeros(n, device=device)
    if cfg.rotation > 0:
        angle = _uniform(n, -cfg.rotation, cfg.rotation, device, generator) * (math.pi / 180)
        cos, sin = torch.cos(angle), torch.sin(angle)
    fx = torch.where(flip, -1.0, 1.0) if flip is not None else torch.ones(n, device=device)
    aspect = h / w
    # S @ R_norm @ diag(fx, 1), with R_norm = D^-1 R D and D = diag(w/2, h/2).
    theta = torch.stack(
        [
            torch.stack([sx * cos * fx, -sx * sin * aspect, tx], dim=1),
            torch.stack([sy * sin / aspect * fx, sy * cos, ty], dim=1),
        ],
        dim=1,
    )
    return theta


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """`F.affine_grid(theta, (n, c, h, w), align_corners=False)` by broadcasting.

    Same numbers, but `affine_grid` runs a batched matmul over an (n, h*w, 3) base grid, which on
    a 2-core CPU took several times longer than `grid_sample` itself (128 images at 64 px: ~12 ms
    against ~0.5 ms for this version and ~2.5 ms for the resampling).
    """
    n = theta.shape[0]
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    a = theta.reshape(n, 6, 1, 1)
    xs, ys = xs.view(1, 1, w), ys.view(1, h, 1)
    gx = a[:, 0] * xs + a[:, 1] * ys + a[:, 2]
    gy = a[:, 3] * xs + a[:, 4] * ys + a[:, 5]
    return torch.stack([gx, gy], dim=-1)


def _gray(x: Tensor) -> Tensor:
    """(N, 1, H, W) luma of a 3-channel batch (one multiply-and-sum pass)."""
    return (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _color_jitter(x: Tensor, s: float, generator: torch.Generator | None) -> Tensor:
    """Brightness, contrast, then saturation (3 channels only), each factor in [1-s, 1+s] per image.

    Fixed order (torchvision shuffles it per call); with per-image factors the order matters little
    and a fixed one keeps it a few fused ops. Clamped after each step, as torchvision does, so a
    brightened image's contrast is computed from in-range pixels. Contrast pivots on the image's
    mean luma, taken from per-channel means rather than a full grayscale image.
    """
    n, c = x.shape[:2]
    lo, hi = max(0.0, 1.0 - s), 1.0 + s
    shape = (n, 1, 1, 1)
    bright = _uniform(n, lo, hi, x.device, generator).view(shape).to(x.dtype)
    contrast = _uniform(n, lo, hi, x.device, generator).view(shape).to(x.dtype)
    x = (x * bright).clamp_(0, 1)
    means = x.mean(dim=(2, 3))  # (N, C)
    mean = (means @ means.new_tensor(_LUMA) if c == 3 else means[:, 0]).view(shape)
    x = torch.addcmul(mean * (1 - contrast), x, contrast).clamp_(0, 1)  # mean + contrast * (x - mean)
    if c == 3:
        sat = _uniform(n, lo, hi, x.device, generator).view(shape).to(x.dtype)
        x = torch.addcmul(_gray(x) * (1 - sat), x, sat).clamp_(0, 1)
    return x


def augment_batch(x: Tensor, cfg: RunConfig, generator: torch.Generator | None = None) -> Tensor:
    """Randomly augment a batch; the enabled ops come from `cfg` (hflip, translate, rotation, crop_scale,
    color_jitter, grayscale_p).

    `x` is float (N, C, H, W) in [0, 1], C = 1 or 3, on any device; the result has the same shape,
    dtype and device, values in [0, 1]. With every op off, `x` itself is returned (no copy).
    Each image gets its own random draws. Geometric ops use reflection padding, so rotated or
    zoomed images have no black corners the model could learn from.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"augment_batch expects (N, C, H, W) with C = 1 or 3; got shape {tuple(x.shape)}.")
    n, c, h, w = x.shape
    if n == 0 or is_identity(cfg, c):
        return x
    device = x.device
    flip = _uniform(n, 0.0, 1.0, device, generator) < 0.5 if cfg.hflip else None
    resampled = cfg.rotation > 0 or cfg.crop_scale < 1.0 or cfg.translate > 0
    if resampled:
        theta = _affine_theta(n, h, w, cfg, flip, device, generator)
        # Resample in fp32 (or fp64): half-precision coordinates would misplace pixels on large images.
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        grid = _affine_grid(theta.to(work.dtype), h, w)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = out.to(x.dtype)
    elif flip is not None:
        out = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    else:
        out = x
    if cfg.color_jitter > 0:
        out = _color_jitter(out, cfg.color_jitter, generator)
    if c == 3 and cfg.grayscale_p > 0:
        to_gray = (_uniform(n, 0.0, 1.0, device, generator) < cfg.grayscale_p).view(n, 1, 1, 1)
        out = torch.where(to_gray, _gray(out).expand(-1, 3, -1, -1), out)
    if resampled:  # bilinear weights are convex: in range up to rounding; clamp that rounding away
        out = out.clamp_(0.0, 1.0)
    return out


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, H, W, C) (the decoded cache's layout) -> float (N, C, H, W) in [0, 1]."""
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    return to_tensor(images)


def resized(images_uint8: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 images at `size` x `size`, resampled as the decode does (bilinear with
    antialiasing): what a run trained at `size` sees of images shown at another size."""
    arr = np.array(images_uint8, dtype=np.uint8, copy=True)  # a writable copy: the cache is a read-only memmap
    if arr.shape[1:3] == (size, size):
        return arr
    x = F.interpolate(
        to_float(torch.from_numpy(arr)), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    out = to_uint8(x)
    return out[..., 0] if arr.ndim == 3 else out


def preview(
    images_uint8: np.ndarray, cfg: RunConfig, n_variants: int = 4, seed: int = 0, size: int | None = None
) -> np.ndarray:
    """`n_variants` random augmentations of each image, for the UI's augmentation preview.

    `images_uint8` is (N, H, W, C) (or (N, H, W) for grayscale); the result is
    (N, n_variants, H, W, C) uint8 (or (N, n_variants, H, W)). `size`: the side the run trains at, when
    it differs from the images' (see `resized`). Same `seed`, same pictures, so the preview does not
    flicker when Streamlit reruns the page.
    """
    arr = resized(images_uint8, size) if size else np.array(images_uint8, dtype=np.uint8, copy=True)
    squeeze = arr.ndim == 3
    x = to_float(torch.from_numpy(arr))
    n, c, h, w = x.shape
    batch = x.repeat_interleave(n_variants, dim=0)  # image-major: variants of image i are adjacent
    gen = torch.Generator().manual_seed(seed)
    out = augment_batch(batch, cfg, generator=gen)
    out = to_uint8(out).reshape(n, n_variants, h, w, c)
    return out[..., 0] if squeeze else out

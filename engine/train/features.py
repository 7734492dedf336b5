"""Frozen-backbone features, computed once and cached on disk.

Why: a linear probe trains only the head, so the backbone's output for every image never changes;
computing it once (and reusing it across probes with the same weights, resolution and data) turns a
probe into seconds of work on a CPU. The cache key is the caller's `model_key` (which must identify
the weights: name + weights source, never a random-init model), the dataset fingerprint and the
resolution; the file is written to a temp name and moved into place, so readers never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.cache import cache_dir
from engine.data.pixels import to_tensor
from engine.device import Compute
from engine.models.classifier import ImageClassifier

Progress = Callable[[int, int, str], None]


def to_pixels(batch: np.ndarray, device: str | torch.device = "cpu", image_size: int | None = None) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (channels_last strides, which convs prefer), resized if asked."""
    t = to_tensor(batch, device)
    if image_size and tuple(t.shape[-2:]) != (image_size, image_size):
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return t


def extract_features(
    model: ImageClassifier,
    images: np.ndarray,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    image_size: int | None = None,
    out: np.ndarray | None = None,
    compute: Compute | None = None,
) -> np.ndarray:
    """(len(indices), F) float32 pooled features of `images[indices]` (all images when None), in order.

    Batches go to `device`, where the model must already be. The model runs in eval mode under
    `inference_mode` and is put back in its previous mode; `out` (e.g. a memory-mapped array)
    receives the rows instead of a new array, so 60k x 2048 features need not fit in memory twice.
    `compute` adds its autocast (bf16 where the hardware has it) and channels_last, as training uses.
    """
    idx = np.arange(len(images)) if indices is None else np.asarray(indices)
    n = len(idx)
    out = np.empty((n, model.num_features), np.float32) if out is None else out
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                sel = idx[start : start + batch_size]
                x = to_pixels(images[sel], device, image_size)
                if compute is not None and not compute.channels_last:
                    x = x.contiguous()
                with compute.autocast() if compute is not None else contextlib.nullcontext():
                    out[start : start + len(sel)] = model.features(x).float().cpu().numpy()
                if progress:
                    progress(min(n, start + batch_size), n, "extracting features")
    finally:
        model.train(was_training)
    return out


def feature_cache_path(
    model_key: str, dataset_fingerprint: str, image_size: int, indices: np.ndarray | None = None
) -> Path:
    """Where the features for this (weights, data, resolution[, subset]) live."""
    h = hashlib.sha256(f"{model_key}\x00{dataset_fingerprint}\x00{int(image_size)}".encode())
    if indices is not None:
        h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return cache_dir() / "features" / f"{h.hexdigest()[:32]}.npy"


def cached_features(
    model: ImageClassifier,
    model_key: str,
    dataset_fingerprint: str,
    image_size: int,
    images: np.ndarray,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    compute: Compute | None = None,
) -> tuple[np.ndarray, bool]:
    """Features for every image (or for `indices`, cached as their own subset) and whether the cache had them.

    A hit is a read-only memory map: index it (`feats[train_idx]`) to get the rows a probe trains on.
    `images` should already be at `image_size` (the decode-once cache's resolution); if not they are resized.
    """
    path = feature_cache_path(model_key, dataset_fingerprint, image_size, indices)
    n = len(images) if indices is None else len(indices)
    if path.exists():
        try:
            feats = np.load(path, mmap_mode="r")
            if feats.shape == (n, model.num_features):
                return feats, True
        except (OSError, ValueError):
            pass  # a damaged file is rebuilt below
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, model.num_features))
    try:
        extract_features(model, images, indices, batch_size, device, progress, image_size, out=out, compute=compute)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r"), False

"""The embedding map: every image (a stratified sample above `MAX_POINTS`) as a point in 2-D, near its look-alikes,
so clusters, strays and mixed-up classes can be seen and lasso-selected on the Dataset page.

Features: tiny grayscale images (one channel, at most `PIXEL_MAX_PX` px: digits, Fashion-MNIST) are projected
from a PCA of their pixels, which separates such images well and costs nothing; anything else goes through the
frozen efficientnet-lite0 backbone with its offline ImageNet weights, through `engine.train.features`'s cache
(the same features a linear probe at that size reuses). The map says which one it used.

Projection: UMAP (umap-learn) from `UMAP_MIN_POINTS` points up; its first import JIT-compiles numba code for
~20 s on a small CPU, so it is imported only then. Below that, t-SNE from scikit-learn (seconds on a few
thousand points); PCA on request (instant, what tests use). Every method takes the seed, so the same data and
seed give the same map. Maps are cached on disk per dataset fingerprint, working size, method, seed and sample.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np

from engine.data.cache import cache_dir
from engine.data.dataset import Dataset
from engine.data.source import SPLIT_NAMES, Progress, no_progress
from engine.errors import LoupeError

#: above this many usable images the map shows a stratified sample of this size (stays interactive in a browser)
MAX_POINTS = 20_000
#: one-channel images at most this many pixels wide are mapped from a PCA of their pixels
PIXEL_MAX_PX = 32
#: components kept from the features (pixels or backbone) before the 2-D projection
PCA_COMPONENTS = 50
#: from this many points UMAP is used; below, t-SNE (UMAP's one-off ~20 s numba start would dominate)
UMAP_MIN_POINTS = 5_000
#: t-SNE optimisation steps (scikit-learn's default is 1000; 500 settle a map of a few thousand points at half the cost)
TSNE_STEPS = 500
METHODS = ("auto", "umap", "tsne", "pca")
METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
BACKBONE = "tf_efficientnet_lite0"
BACKBONE_PX = 128  # the backbone sees images resized to this (at 64 px its last feature map is 2x2)
STAGE = "embedding map"


class EmbeddingError(LoupeError):
    """An embedding map that cannot be drawn as asked (an unknown method, too few images)."""


@dataclass
class EmbeddingMap:
    """Points of the map: `xy[k]` is dataset item `indices[k]`; `method` and `features` say how it was made."""

    xy: np.ndarray  # (n, 2) float32
    indices: np.ndarray  # (n,) int64 dataset item per point, ascending
    method: str  # "UMAP", "t-SNE" or "PCA"
    features: (
        str  # "the pixels" (reduced by PCA first, a detail) or "frozen efficientnet-lite0 features (ImageNet weights)"
    )
    usable: int  # usable images before sampling (== len(indices) when nothing was left out)

    @property
    def sampled(self) -> bool:
        return len(self.indices) < self.usable


def class_key(ds: Dataset) -> np.ndarray:
    """(N,) the class each item is stratified and coloured by: its class, or for multi-label data its first label
    (-1 for none)."""
    y = np.asarray(ds.labels)
    if y.ndim == 1:
        return y.astype(np.int64)
    has = y > 0
    return np.where(has.any(axis=1), has.argmax(axis=1), -1).astype(np.int64)


def stratified_sample(groups: np.ndarray, pool: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Up to `size` items of `pool` (ascending) keeping each group's share: every group gets its share of `size`
    rounded by largest remainder, at least one item for a group that has any."""
    pool = np.asarray(pool, dtype=np.int64)
    if len(pool) <= size:
        return np.sort(pool)
    rng = np.random.default_rng(seed)
    keys, counts = np.unique(groups[pool], return_counts=True)
    exact = counts * size / len(pool)
    take = np.maximum(np.floor(exact).astype(np.int64), 1)
    short = size - int(take.sum())
    if short > 0:  # the largest remainders get one more each
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        take[order[:short]] += 1
    take = np.minimum(take, counts)
    chosen = [rng.choice(pool[groups[pool] == k], size=int(n), replace=False) for k, n in zip(keys, take)]
    return np.sort(np.concatenate(chosen))


def uses_pixels(ds: Dataset) -> bool:
    """Tiny grayscale images are mapped from their pixels (see the module docstring)."""
    return ds.channels == 1 and ds.image_size <= PIXEL_MAX_PX


def pixel_features(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n, H*W*C) float32 pixels in [0, 1] of `images[indices]` (the PCA happens in `project`)."""
    x = np.asarray(images[indices], dtype=np.float32).reshape(len(indices), -1)
    return x / 255.0


def backbone_features(ds: Dataset, indices: np.ndarray, progress: Progress = no_progress) -> np.ndarray:
    """(n, F) frozen efficientnet-lite0 features of `indices`, from `engine.train.features`'s cache when present."""
    from engine.models.factory import build_model
    from engine.train.features import cached_features

    model, info = build_model(BACKBONE, 2, in_chans=ds.channels, pretrained=True, image_size=BACKBONE_PX)
    key = f"{BACKBONE}|{info.weights_source}||float32|embedding"
    feats, _ = cached_features(
        model, key, ds.fingerprint, BACKBONE_PX, ds.images, indices=indices, batch_size=64, progress=progress
    )
    return np.asarray(feats, dtype=np.float32)


def choose_method(method: str, n: int) -> str:
    """'auto' -> UMAP from `UMAP_MIN_POINTS` points, t-SNE below; an explicit method as asked."""
    if method not in METHODS:
        raise EmbeddingError(f"Unknown projection '{method}'; use one of {', '.join(METHODS)}.")
    if method == "auto":
        return "umap" if n >= UMAP_MIN_POINTS else "tsne"
    return method


def project(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(n, 2) float32: PCA to `PCA_COMPONENTS` (whitened out of scale differences), then `method` to 2-D."""
    from threadpoolctl import threadpool_limits

    # one BLAS/OpenMP thread: on a shared CPU, scikit-learn's OpenMP threads spin-wait for each other (t-SNE of
    # 60 points took 14 s with the default threads and 0.5 s with one, under a load of 29 on 2 cores); these sizes
    # need no more, and UMAP with a seed runs single-threaded anyway
    with threadpool_limits(1):
        return _project(features, method, seed)


def _project(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 3:
        raise EmbeddingError(f"An embedding map needs at least 3 usable images; this dataset has {n}.")
    k = int(min(PCA_COMPONENTS, n, x.shape[1]))
    reduced = PCA(n_components=k, random_state=seed, svd_solver="full" if n < 500 else "auto").fit_transform(x)
    if method == "pca" or k <= 2:
        out = reduced[:, :2] if k >= 2 else np.column_stack([reduced[:, 0], np.zeros(n)])
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=TSNE_STEPS, random_state=seed)
        out = tsne.fit_transform(reduced)
    else:
        import umap  # ~20 s the first time in a process: numba compiles its kernels

        neighbours = int(min(15, n - 1))
        with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": wanted, a seed is given
            warnings.simplefilter("ignore", UserWarning)
            out = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed).fit_transform(reduced)
    return np.asarray(out, dtype=np.float32)


def _cache_path(ds: Dataset, method: str, seed: int, indices: np.ndarray) -> str:
    h = hashlib.sha256(f"{ds.fingerprint}\x00{ds.image_size}\x00{ds.channels}\x00{method}\x00{seed}".encode())
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return str(cache_dir() / "embeddings" / f"{h.hexdigest()[:32]}.npy")


def embedding_map(
    ds: Dataset, method: str = "auto", seed: int = 0, max_points: int = MAX_POINTS, progress: Progress = no_progress
) -> EmbeddingMap:
    """The map of `ds`'s usable images (a stratified sample of `max_points` above that), cached on disk."""
    progress = progress or no_progress
    pool = np.flatnonzero(np.asarray(ds.scan.ok, bool))
    indices = stratified_sample(class_key(ds), pool, max_points, seed)
    chosen = choose_method(method, len(indices))
    pixels = uses_pixels(ds)
    what = "the pixels" if pixels else "frozen efficientnet-lite0 features (ImageNet weights)"
    path = _cache_path(ds, chosen, seed, indices)
    if os.path.exists(path):
        try:
            xy = np.load(path)
            if xy.shape == (len(indices), 2):
                return EmbeddingMap(xy, indices, METHOD_NAMES[chosen], what, len(pool))
        except (OSError, ValueError):
            pass  # a damaged file is rebuilt below
    progress(0, 2, STAGE)
    feats = pixel_features(ds.images, indices) if pixels else backbone_features(ds, indices, progress)
    progress(1, 2, STAGE)
    xy = project(feats, chosen, seed)
    progress(2, 2, STAGE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    np.save(tmp, xy)
    os.replace(tmp, path)
    return EmbeddingMap(xy, indices, METHOD_NAMES[chosen], what, len(pool))


def split_names(ds: Dataset, indices: np.ndarray) -> np.ndarray:
    """The split of each item in `indices` ("train", "val", "test", or "none")."""
    out = np.full(len(ds), "none", dtype=object)
    for name in SPLIT_NAMES:
        if name in ds.splits:
            out[ds.splits[name]] = name
    return out[np.asarray(indices)]


def prediction_errors(run_path: str, ds: Dataset, indices: np.ndarray) -> np.ndarray:
    """Per item of `indices`: "wrong" or "right" as the run decides it at its saved thresholds on the split it was
    scored on (val, test, or the out-of-fold predictions), "not scored" for training images and the rest.

    A run trained on other data is refused: its prediction indices would name other images."""
    from engine.evaluate.predictions import load_predictions
    from engine.evaluate.report import decisions
    from engine.evaluate.thresholds import load_thresholds
    from engine.runs.folder import Run

    run = Run(run_path)
    trained_on = (run.config().get("dataset_fingerprint") or "") if run.exists() else ""
    if trained_on != ds.fingerprint:
        raise EmbeddingError(
            f"The run '{run.path.name}' was not trained on this dataset, so its errors cannot be mapped."
        )
    saved = load_thresholds(run)
    threshold = saved.get("binary", saved.get("multilabel"))
    out = np.full(len(ds), "not scored", dtype=object)
    for split in ("oof", "val", "test"):
        if not (run.predictions / f"{split}.npz").is_file():
            continue
        pred = load_predictions(run, split)
        _, wrong = decisions(pred, threshold)
        out[np.asarray(pred.indices, dtype=np.int64)] = np.where(wrong, "wrong", "right")
    return out[np.asarray(indices)]

"""Out-of-distribution signal: does an image look unlike anything the run was trained on?

A classifier always answers with one of its classes: a face photo given to a Fashion-MNIST model comes back
"99% Ankle boot". The probabilities cannot say "none of these", so this check looks where they come from.

The method is deep k-nearest neighbours (Sun, Ming, Zhu and Li, "Out-of-Distribution Detection with Deep
Nearest Neighbors", ICML 2022): the score of an image is the Euclidean distance from its penultimate-layer
features (`ImageClassifier.features`, the pooled backbone output the head reads) to its K-th nearest
neighbour among the training images' features; far from every training image means unlike the training data.
Why this one among the well-established methods:

- it reads the features, not the head, so binary, multi-class and multi-label runs share one code path
  (the energy score is defined on a softmax; multi-label needs another, "joint", form of it);
- it assumes nothing about their distribution (Mahalanobis fits one Gaussian per class with a shared
  F x F covariance: it needs many images per class, and a multi-label set has no classes to fit);
- scores read off the output (maximum softmax probability, energy) are exactly what a confidently wrong
  "99% Ankle boot" defeats, while in feature space a face lies far from every garment;
- it is a matrix product and a partial sort: no library (none for this is installed), no training.

One departure from the paper, measured: the features are *not* L2-normalised. The paper normalises the
features of large, well-trained networks; the small CNNs Loupe trains in minutes carry much of their
"never seen this" signal in the feature norm (lfw faces have a third more norm than garments). On tiny
Fashion-MNIST runs (small_cnn, 28 px, 1-2 epochs, 95% of validation kept in), normalised distances flagged
3-21% of 200 lfw faces; raw distances flagged 80-96%, with 4-5% of the test images flagged either way.

Calibration follows the paper's protocol on the run's own validation split: the threshold is the
`IN_SHARE` (95%) quantile of the validation images' scores, so about 95% of images like the validation
images pass as "in distribution" and an image scoring above it is flagged "looks unlike the training data".

When: computed on first use and cached in the run folder (`Run.ood_cache`, `ood.npz`), keyed by the best
checkpoint's size and modification time. Why not at training time: runs trained before this check existed
gain it without retraining, training stays as fast as it was, and a resumed or retrained run (a new
checkpoint) is recalibrated automatically. The price is a few seconds on the first prediction of a run
(`REF_MAX` + `VAL_MAX` images through the model). A run whose dataset can no longer be opened, or that has
no validation images, still predicts: the signal is then marked unavailable, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.pixels import to_tensor
from engine.errors import LoupeError
from engine.predict.run_model import RunModel, predict_features
from engine.runs.folder import Run, write_npz

K = 5  # the K-th neighbour: robust to one near-duplicate, small enough for REF_MAX references (paper: k * share)
IN_SHARE = 0.95  # share of validation images calibrated as "in distribution" (the paper's 95% TPR protocol)
REF_MAX = 2000  # training images whose features are the reference (a seeded random sample)
VAL_MAX = 1000  # validation images the threshold is calibrated on (a seeded random sample)
VERSION = 1
UNLIKE = "looks unlike the training data"


@dataclass(frozen=True)
class OodCheck:
    """A calibrated check: training features (the reference), K and the threshold on the distance."""

    reference: np.ndarray  # (R, F) float32 penultimate features of training images
    threshold: float
    k: int
    n_val: int

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) distance of each image's features to its k-th nearest reference."""
        return knn_distance(features, self.reference, self.k)

    def unlike(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the threshold: the image looks unlike the training data."""
        return np.asarray(scores) > self.threshold


@dataclass(frozen=True)
class OodStatus:
    """The check of one run, or why there is none (`check` None, `reason` one sentence)."""

    check: OodCheck | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.check is not None


def knn_distance(features: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(N,) Euclidean distance from each row of `features` to its k-th nearest row of `reference`.

    ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b: one matrix product, in float64 so near-duplicates give 0, not noise."""
    q = np.asarray(features, dtype=np.float64)
    if len(q) == 0:
        return np.zeros(0, np.float64)
    r = np.asarray(reference, dtype=np.float64)
    k = max(1, min(int(k), len(r)))
    d2 = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * (q @ r.T)
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return np.sqrt(np.clip(kth, 0.0, None))


def calibrate(reference_features: np.ndarray, val_features: np.ndarray, k: int = K) -> OodCheck:
    """The check from training features (the reference) and validation features (the threshold)."""
    ref = np.asarray(reference_features, dtype=np.float32)
    scores = knn_distance(val_features, ref, k)
    return OodCheck(ref, float(np.quantile(scores, IN_SHARE)), max(1, min(k, len(ref))), len(scores))


def _weights_key(run: Run) -> np.ndarray:
    st = run.best_weights.stat()
    return np.array([st.st_size, st.st_mtime_ns], np.int64)


def _sample(indices: np.ndarray, n: int, seed: int) -> np.ndarray:
    idx = np.asarray(indices)
    if len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def _features(rm: RunModel, images: np.ndarray, idx: np.ndarray, batch: int = 128) -> np.ndarray:
    out = [predict_features(rm, to_tensor(images[idx[s : s + batch]]))[1] for s in range(0, len(idx), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _compute(run: Run, rm: RunModel) -> OodCheck:
    """Open the run's dataset as training did and calibrate on its train and validation splits."""
    from engine.data.dataset import open_dataset

    header = run.config()
    cfg = header.get("config") or {}
    if not cfg.get("dataset"):
        raise LoupeError("the run does not name its dataset")
    task = cfg.get("task", "auto")
    ds = open_dataset(
        cfg["dataset"],
        image_size=header.get("image_size") or None,
        task=None if task == "auto" else task,
        seed=int(cfg.get("seed", 0)),
        val_fraction=float(cfg.get("val_fraction", 0.15)),
        test_fraction=float(cfg.get("test_fraction", 0.15)),
    )
    train, val = ds.splits.get("train", np.zeros(0, int)), ds.splits.get("val", np.zeros(0, int))
    if len(train) < K or len(val) == 0:
        raise LoupeError(f"the dataset has {len(train)} training and {len(val)} validation images, too few")
    if tuple(ds.images.shape[1:3]) != (rm.image_size, rm.image_size) or ds.channels != rm.channels:
        raise LoupeError("the dataset no longer opens at the size and channels the run was trained on")
    seed = int(cfg.get("seed", 0))
    ref = _features(rm, ds.images, _sample(train, REF_MAX, seed))
    vals = _features(rm, ds.images, _sample(val, VAL_MAX, seed + 1))
    return calibrate(ref, vals)


def _read(path: Path, key: np.ndarray) -> OodCheck | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != VERSION or not np.array_equal(z["weights_key"], key):
                return None
            return OodCheck(np.asarray(z["reference"], np.float32), float(z["threshold"]), int(z["k"]), int(z["n_val"]))
    except (OSError, ValueError, KeyError):  # absent, damaged or from another version: recompute
        return None


def load_check(run: Run, rm: RunModel) -> OodStatus:
    """The run's check: read from `ood.npz` when it matches the best checkpoint, else computed and saved.

    Never raises for a run that can predict: whatever stops the calibration (the dataset moved, a model
    without `features`, a read-only folder for the cache) becomes the reason the signal is unavailable,
    or (a read-only folder) a check that is used but not kept."""
    if not hasattr(rm.model, "features") or not hasattr(rm.model, "classify"):
        return OodStatus(None, "the model does not expose its penultimate features")
    if not run.best_weights.exists():
        return OodStatus(None, "the run has no best checkpoint")
    key = _weights_key(run)
    check = _read(run.ood_cache, key)
    if check is not None:
        return OodStatus(check)
    try:
        check = _compute(run, rm)
    except (LoupeError, OSError, ValueError, RuntimeError) as e:
        return OodStatus(None, f"it cannot be calibrated: {str(e).rstrip('.')}")
    try:
        write_npz(
            run.ood_cache,
            version=np.array(VERSION),
            weights_key=key,
            reference=check.reference.astype(np.float32),
            threshold=np.array(check.threshold),
            k=np.array(check.k),
            n_val=np.array(check.n_val),
        )
    except LoupeError:
        pass  # a read-only run folder: the check still works in this process
    return OodStatus(check)


def describe(status: OodStatus) -> str:
    """The check in one sentence for people (the CLI's header line, the Predict page's caption)."""
    from engine.metrics.display import number

    c = status.check
    if c is None:
        return f"out-of-distribution check unavailable: {status.reason}"
    return (
        f"out-of-distribution check: distance to the {c.k}th nearest of {len(c.reference):,} training images in "
        f"the model's penultimate features; above {number(c.threshold)} (where {IN_SHARE:.0%} of {c.n_val:,} "
        f"validation images fall below) it {UNLIKE}"
    )


def verdict(result: dict) -> str:
    """One image's signal in words: '' when unavailable, else why it looks (un)like the training data."""
    from engine.metrics.display import number

    unlike, score, th = result.get("unlike_training"), result.get("ood_score"), result.get("ood_threshold")
    if unlike is None:
        return ""
    if unlike:
        return f"{UNLIKE} (distance {number(score)} > {number(th)})"
    return f"like the training data (distance {number(score)} <= {number(th)})"


__all__ = [
    "IN_SHARE",
    "K",
    "UNLIKE",
    "OodCheck",
    "OodStatus",
    "calibrate",
    "describe",
    "knn_distance",
    "load_check",
    "verdict",
]

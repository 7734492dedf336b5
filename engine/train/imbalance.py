"""Keeping rare classes from being ignored: class statistics, per-epoch sampling, losses, advice.

Two families of remedies, chosen by `RunConfig.imbalance`:

- change what the model sees (`weighted_sampler`, `undersample`, `oversample`): `epoch_indices`
  returns the item order for one epoch, re-drawn every epoch, so undersampling sees different
  majority items each epoch and oversampled copies differ through augmentation;
- change what a mistake costs (`weighted_loss`, and `loss='focal'`): `make_loss`.

Multi-label data has no single class per image, so the samplers give each image the class of its
RAREST label (the label that most needs the help), and images without any label form one extra
"no label" class. The loss-side remedy for multi-label is BCE's `pos_weight` (negatives / positives
per label), which is what `recommend` suggests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import IMBALANCE, RunConfig
from engine.data.stats import share_of_images
from engine.errors import LoupeError
from engine.metrics.display import percent

BALANCED_RATIO = 1.5  # below this largest/smallest ratio, a remedy costs more than it helps
OVERSAMPLE_MAX_MINORITY = 50  # a minority this small is better shown more often than weighted up
OVERSAMPLE_MIN_RATIO = 4.0


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Items per class (int64, length `num_classes`); for multi-hot (N, C) labels, images per label."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (labels > 0.5).sum(axis=0).astype(np.int64)
    return np.bincount(labels.astype(np.int64).ravel(), minlength=num_classes)[:num_classes].astype(np.int64)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """n_total / (C * n_c) per class: 1.0 everywhere when balanced, and the weighted sum of the
    counts equals n_total, so the loss keeps its usual scale.

    A class absent from the training data gets weight 0 rather than infinity: it has no examples
    whose loss could be weighted, and a 0 keeps the weight vector finite for the loss module.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total, c = counts.sum(), len(counts)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, total / (c * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def pos_weights(counts: np.ndarray, num_images: int) -> np.ndarray:
    """Multi-label `pos_weight` for `BCEWithLogitsLoss`: negatives / positives per label, so each
    label's positives and negatives weigh the same in total. A label with no positives gets 1.0
    (there is nothing to up-weight). Not capped: a label on 1 image in 10,000 gets ~10,000."""
    pos = np.asarray(counts, dtype=np.float64)
    neg = num_images - pos
    return np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).astype(np.float32)


# --- sampling ---------------------------------------------------------------------------------------


def sampling_classes(labels: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, int]:
    """The class each item in `idx` counts as for sampling, and the number of such classes.

    Single-label: its label. Multi-label: its rarest label among `idx` (counts over `idx`), and
    `C` (one past the last label) for images without labels.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        y = labels[idx].astype(np.int64)
        return y, int(y.max()) + 1 if len(y) else 0
    hot = labels[idx] > 0.5
    c = hot.shape[1]
    counts = hot.sum(axis=0)
    cost = np.where(hot, counts[None, :], np.iinfo(np.int64).max)
    y = np.where(hot.any(axis=1), cost.argmin(axis=1), c)
    return y.astype(np.int64), c + 1


def epoch_indices(labels: np.ndarray, train_idx: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Item indices for ONE training epoch, in training order; call once per epoch with the same rng.

    - `none`, `weighted_loss`: a permutation of `train_idx`.
    - `weighted_sampler`: len(train_idx) draws with replacement, P(item) ∝ 1 / count(its class), so
      every class comes out about equally often (majority items are seen less than once per epoch).
    - `undersample`: every class cut to the minority count, a fresh random subset each epoch.
    - `oversample`: every item once, plus minority items drawn with replacement up to the majority
      count; shuffled. Augmentation makes the repeated copies differ.
    """
    if mode not in IMBALANCE:
        raise LoupeError(f"Unknown imbalance mode '{mode}'; use one of {', '.join(IMBALANCE)}.")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if mode in ("none", "weighted_loss") or len(train_idx) == 0:
        return rng.permutation(train_idx)
    y, k = sampling_classes(labels, train_idx)
    counts = np.bincount(y, minlength=k)
    if mode == "weighted_sampler":
        p = 1.0 / counts[y]
        return rng.choice(train_idx, size=len(train_idx), replace=True, p=p / p.sum())
    order = np.argsort(y, kind="stable")
    groups = np.split(train_idx[order], np.cumsum(counts)[:-1])
    present = [g for g in groups if len(g)]
    if mode == "undersample":
        m = min(len(g) for g in present)
        picked = [rng.choice(g, size=m, replace=False) for g in present]
    else:  # oversample
        m = max(len(g) for g in present)
        picked = [np.concatenate([g, rng.choice(g, size=m - len(g), replace=True)]) for g in present]
    return rng.permutation(np.concatenate(picked))


# --- losses ------------------------------------------------------------------------------------------


class SoftmaxFocalLoss(nn.Module):
    """Focal loss for single-label tasks (Lin et al. 2017): CE scaled by (1 - p_c)^gamma, so
    confidently right examples (p near 1) add little and training focuses on the hard ones.

    Written for soft targets q (label smoothing): loss_i = sum_c q_ic * w_c * (1 - p_ic)^gamma *
    (-log p_ic), averaged like PyTorch's weighted CE (divided by the summed weight of the targets).
    With gamma = 0 it is exactly `nn.CrossEntropyLoss(weight, label_smoothing=...)`.
    """

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = float(gamma), float(label_smoothing)
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        c = logp.shape[1]
        q = F.one_hot(targets, c).to(logp.dtype)
        if self.label_smoothing:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / c
        term = -logp * q
        if self.gamma:
            # clamp: (1 - p)^gamma has an infinite slope at p = 1 when gamma < 1
            term = term * (1 - logp.exp()).clamp_min(1e-12).pow(self.gamma)
        if self.weight is None:
            return term.sum(dim=1).mean()
        w = self.weight.to(logp.dtype)
        return (term * w).sum() / w[targets].sum()


class SigmoidFocalLoss(nn.Module):
    """Focal loss for multi-label tasks: per label, BCE with the positive term scaled by
    (1 - p)^gamma and the negative term by p^gamma; `pos_weight` as in `BCEWithLogitsLoss`.
    The paper's alpha is left out (pos_weight plays its role). gamma = 0 gives exactly BCE.
    """

    def __init__(self, gamma: float = 2.0, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits, targets = logits.float(), targets.float()
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        pos, neg = -targets * log_p, -(1 - targets) * log_not_p
        if self.gamma:
            pos = pos * (1 - log_p.exp()).clamp_min(1e-12).pow(self.gamma)
            neg = neg * log_p.exp().clamp_min(1e-12).pow(self.gamma)
        if self.pos_weight is not None:
            pos = pos * self.pos_weight.to(pos.dtype)
        return (pos + neg).mean()


def _user_weights(cfg: RunConfig, num_classes: int, one: str, many: str) -> np.ndarray:
    if len(cfg.class_weights) != num_classes:
        raise LoupeError(
            f"Field 'class_weights' has {len(cfg.class_weights)} value(s) but the dataset has {num_classes} {many}; "
            f"give one weight per {one} in index order, or leave it empty for inverse-frequency weights."
        )
    return np.asarray(cfg.class_weights, dtype=np.float32)


def make_loss(task: str, num_classes: int, cfg: RunConfig, train_labels: np.ndarray) -> nn.Module:
    """The training loss for `task`, called as loss(logits, targets) with targets int64 (N,) for
    single-label tasks or float multi-hot (N, C) for multi-label.

    Single-label: cross-entropy (with `label_smoothing`), or softmax focal loss. Multi-label: BCE
    with logits, or sigmoid focal loss. With `imbalance='weighted_loss'` single-label losses get
    per-class weights and multi-label ones a per-label `pos_weight`: `cfg.class_weights` when given
    (for multi-label read as the pos_weight of each label), else computed from `train_labels`.
    Move the module to the training device with `.to(device)` (the weights are buffers).
    """
    multilabel = task == "multilabel"
    # Checked even when the mode does not use them, so a stale list is caught before training.
    names = ("label", "labels") if multilabel else ("class", "classes")
    user = _user_weights(cfg, num_classes, *names) if cfg.class_weights else None
    w = None
    if cfg.imbalance == "weighted_loss":
        labels = np.asarray(train_labels)
        counts = class_counts(labels, num_classes)
        if user is not None:
            w = torch.from_numpy(user)
        elif multilabel:
            w = torch.from_numpy(pos_weights(counts, len(labels)))
        else:
            w = torch.from_numpy(inverse_frequency_weights(counts))
    if multilabel:
        return (
            SigmoidFocalLoss(cfg.focal_gamma, pos_weight=w)
            if cfg.loss == "focal"
            else nn.BCEWithLogitsLoss(pos_weight=w)
        )
    if cfg.loss == "focal":
        return SoftmaxFocalLoss(cfg.focal_gamma, weight=w, label_smoothing=cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)


# --- advice ------------------------------------------------------------------------------------------


def suggested_class_weights(stats: dict) -> dict[str, float]:
    """The loss weight of each class (each label's `pos_weight` for multi-label data) that `make_loss`
    applies under `imbalance='weighted_loss'` without user `class_weights`, from a dataset's statistics.

    The same functions on the same counts as training: `make_loss` is given the train split's labels, so
    the weights come from the train split's class counts (the whole dataset's when no split is listed).
    A class without training images gets what training gives it (0; a label without positives 1.0).
    """
    split = (stats.get("splits") or {}).get("train") or stats
    classes = list(stats.get("classes") or [])
    counts = np.array([int((split.get("class_counts") or {}).get(c, 0)) for c in classes], dtype=np.int64)
    if stats.get("task") == "multilabel":
        weights = pos_weights(counts, int(split.get("num_images") or 0))
    else:
        weights = inverse_frequency_weights(counts)
    return {c: float(w) for c, w in zip(classes, weights)}


def _named_counts(counts: Mapping | Sequence | None) -> dict[str, int]:
    if not counts:
        return {}
    if isinstance(counts, Mapping):
        return {str(k): int(v) for k, v in counts.items()}
    return {f"class {i}": int(v) for i, v in enumerate(counts)}


def recommend(stats: dict) -> tuple[str, str]:
    """(imbalance mode, one-sentence reason) for the Train page to pre-select, from a dataset's
    stats (keys used: task, imbalance_ratio, minority_share, class_counts, num_images).

    Balanced (largest/smallest < 1.5): nothing. Imbalanced: a weighted loss, since it keeps every
    image and costs nothing per epoch; but a very small minority (< 50 images) far outnumbered
    (ratio >= 4) is oversampled instead, so its few images are seen, augmented, every epoch.
    Multi-label: a weighted loss (per-label pos_weight) when some label is rare.
    """
    # Classes with no images cannot be helped by any mode; judge the ones that are there.
    counts = {k: v for k, v in _named_counts(stats.get("class_counts")).items() if v > 0}
    if len(counts) < 2:
        return "none", "Fewer than two classes have images here, so there is no imbalance to handle."
    ratio = stats.get("imbalance_ratio")
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        ratio = max(counts.values()) / min(counts.values())
    rare = min(counts, key=counts.get)
    common = max(counts, key=counts.get)
    n_rare = counts[rare]
    if stats.get("task") == "multilabel":
        n = int(stats.get("num_images") or 0)
        share = share_of_images(n_rare, n)
        if ratio < BALANCED_RATIO and (share is None or share >= 0.25):
            return (
                "none",
                f"Labels are about equally common (largest/smallest {ratio:.1f}:1), so no reweighting is needed.",
            )
        on = f"on only {percent(share)} of images" if share is not None else f"on only {n_rare:,} images"
        return "weighted_loss", (
            f"Label '{rare}' is {on}; a weighted loss (pos_weight = negatives/positives "
            f"per label) makes its rare positives count as much as its negatives."
        )
    if ratio < BALANCED_RATIO:
        return "none", f"Classes are balanced (largest/smallest {ratio:.1f}:1), so no imbalance handling is needed."
    if n_rare < OVERSAMPLE_MAX_MINORITY and ratio >= OVERSAMPLE_MIN_RATIO:
        return "oversample", (
            f"The minority class '{rare}' has only {n_rare:,} images against {counts[common]:,} of "
            f"'{common}', so oversampling shows them as often as the majority, augmented differently each time."
        )
    return "weighted_loss", (
        f"Classes are imbalanced {ratio:.1f}:1, so the loss weighs the minority class '{rare}' "
        f"{ratio:.1f}x more than '{common}' and keeps every image."
    )

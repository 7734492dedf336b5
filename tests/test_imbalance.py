"""Imbalance handling: counts and weights, per-epoch samplers, losses, and the recommendation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.config import RunConfig
from engine.errors import LoupeError
from engine.train.imbalance import (
    SigmoidFocalLoss,
    SoftmaxFocalLoss,
    class_counts,
    epoch_indices,
    inverse_frequency_weights,
    make_loss,
    pos_weights,
    recommend,
    sampling_classes,
)

LABELS = np.array([0] * 900 + [1] * 100)  # 90/10
TRAIN = np.arange(len(LABELS))


def test_counts_and_inverse_frequency() -> None:
    counts = class_counts(LABELS, 3)
    assert counts.tolist() == [900, 100, 0]
    w = inverse_frequency_weights(counts)
    assert np.allclose(w, [1000 / (3 * 900), 1000 / (3 * 100), 0.0])  # absent class: weight 0
    assert np.allclose(inverse_frequency_weights(np.array([5, 5])), [1, 1])
    multi = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    assert class_counts(multi, 3).tolist() == [3, 1, 1]
    assert np.allclose(pos_weights(class_counts(multi, 3), 4), [1 / 3, 3, 3])


def test_none_is_a_permutation() -> None:
    rng = np.random.default_rng(0)
    for mode in ("none", "weighted_loss"):
        idx = epoch_indices(LABELS, TRAIN[::2], mode, rng)
        assert sorted(idx.tolist()) == TRAIN[::2].tolist() and not np.array_equal(idx, TRAIN[::2])


def test_weighted_sampler_is_near_uniform() -> None:
    rng = np.random.default_rng(1)
    draws = np.concatenate([epoch_indices(LABELS, TRAIN, "weighted_sampler", rng) for _ in range(10)])
    assert len(draws) == 10_000
    observed = np.bincount(LABELS[draws], minlength=2)
    expected = len(draws) / 2
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 10.8, observed  # p = 0.001 at 1 degree of freedom
    assert len(np.unique(draws[LABELS[draws] == 1])) == 100  # 5000 draws from 100 items cover them all


def test_undersample_equal_counts_and_fresh_subsets() -> None:
    rng = np.random.default_rng(2)
    a = epoch_indices(LABELS, TRAIN, "undersample", rng)
    b = epoch_indices(LABELS, TRAIN, "undersample", rng)
    for idx in (a, b):
        assert np.bincount(LABELS[idx]).tolist() == [100, 100]
        assert len(np.unique(idx)) == len(idx)  # without replacement
    assert set(a[LABELS[a] == 0]) != set(b[LABELS[b] == 0])  # a different majority subset each epoch
    assert set(a[LABELS[a] == 1]) == set(range(900, 1000))  # the minority is kept whole


def test_oversample_equal_counts_with_every_minority_item() -> None:
    idx = epoch_indices(LABELS, TRAIN, "oversample", np.random.default_rng(3))
    assert np.bincount(LABELS[idx]).tolist() == [900, 900]
    assert set(idx[LABELS[idx] == 1]) == set(range(900, 1000))
    assert set(idx[LABELS[idx] == 0]) == set(range(900))
    assert (np.diff(LABELS[idx]) != 0).sum() > 100  # shuffled, not in class blocks


def test_multilabel_sampling_uses_the_rarest_label() -> None:
    # label 0 on every image, label 1 on a few, some images with no label
    labels = np.zeros((100, 2), dtype=np.float32)
    labels[:80, 0] = 1
    labels[:10, 1] = 1
    y, k = sampling_classes(labels, np.arange(100))
    assert k == 3 and y[:10].tolist() == [1] * 10 and set(y[10:80]) == {0} and set(y[80:]) == {2}
    idx = epoch_indices(labels, np.arange(100), "undersample", np.random.default_rng(4))
    assert len(idx) == 30


def test_unknown_mode() -> None:
    with pytest.raises(LoupeError, match="imbalance mode"):
        epoch_indices(LABELS, TRAIN, "smote", np.random.default_rng())


def _logits(n: int = 64, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 2


def test_weighted_ce_uses_inverse_frequency() -> None:
    loss = make_loss("binary", 2, RunConfig(imbalance="weighted_loss"), LABELS)
    assert isinstance(loss, nn.CrossEntropyLoss)
    assert torch.allclose(loss.weight, torch.tensor([1000 / 1800, 1000 / 200]))
    # the same minority mistake costs more with weights than without
    logits = torch.tensor([[2.0, -2.0], [2.0, -2.0]])
    targets = torch.tensor([0, 1])
    plain = make_loss("binary", 2, RunConfig(), LABELS)(logits, targets)
    assert float(loss(logits, targets)) > float(plain)
    user = make_loss("binary", 2, RunConfig(imbalance="weighted_loss", class_weights=[1.0, 3.0]), LABELS)
    assert user.weight.tolist() == [1.0, 3.0]


def test_multilabel_losses() -> None:
    labels = (np.random.default_rng(5).random((50, 4)) < [0.5, 0.1, 0.2, 0.5]).astype(np.float32)
    plain = make_loss("multilabel", 4, RunConfig(), labels)
    assert isinstance(plain, nn.BCEWithLogitsLoss) and plain.pos_weight is None
    weighted = make_loss("multilabel", 4, RunConfig(imbalance="weighted_loss"), labels)
    assert torch.allclose(weighted.pos_weight, torch.from_numpy(pos_weights(labels.sum(0), 50)))


def test_wrong_class_weights_length_names_the_field() -> None:
    with pytest.raises(LoupeError, match="class_weights"):
        make_loss("multiclass", 3, RunConfig(imbalance="weighted_loss", class_weights=[1.0, 2.0]), LABELS)
    with pytest.raises(LoupeError, match="class_weights"):
        make_loss("multilabel", 3, RunConfig(imbalance="weighted_loss", class_weights=[1.0]), np.zeros((4, 3)))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_gamma_zero_is_cross_entropy(weighted: bool, smoothing: float) -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 4)
    kw = dict(imbalance="weighted_loss" if weighted else "none", label_smoothing=smoothing)
    ce = make_loss("multiclass", 3, RunConfig(**kw), labels)
    focal = make_loss("multiclass", 3, RunConfig(loss="focal", focal_gamma=0.0, **kw), labels)
    assert isinstance(focal, SoftmaxFocalLoss)
    logits, targets = _logits(), torch.from_numpy(labels)
    assert torch.allclose(focal(logits, targets), ce(logits, targets), atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_sigmoid_focal_gamma_zero_is_bce(weighted: bool) -> None:
    labels = (np.random.default_rng(6).random((64, 3)) < 0.3).astype(np.float32)
    kw = dict(imbalance="weighted_loss" if weighted else "none")
    bce = make_loss("multilabel", 3, RunConfig(**kw), labels)
    focal = make_loss("multilabel", 3, RunConfig(loss="focal", focal_gamma=0.0, **kw), labels)
    assert isinstance(focal, SigmoidFocalLoss)
    logits, targets = _logits(), torch.from_numpy(labels)
    assert torch.allclose(focal(logits, targets), bce(logits, targets), atol=1e-6)


def test_focal_down_weights_easy_examples() -> None:
    ce, focal = nn.CrossEntropyLoss(reduction="none"), SoftmaxFocalLoss(gamma=2.0)
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 0.5]])
    t = torch.tensor([0])
    easy_ratio = float(focal(easy, t) / ce(easy, t))
    hard_ratio = float(focal(hard, t) / ce(hard, t))
    assert easy_ratio < 0.01 and hard_ratio > 0.3  # easy examples lose almost everything
    bce, sfocal = nn.BCEWithLogitsLoss(), SigmoidFocalLoss(gamma=2.0)
    y = torch.tensor([[1.0, 0.0]])
    assert float(sfocal(torch.tensor([[4.0, -4.0]]), y)) < 0.01 * float(bce(torch.tensor([[4.0, -4.0]]), y))
    # gradients stay finite even for saturated logits and fractional gamma
    z = torch.tensor([[60.0, -60.0]], requires_grad=True)
    SoftmaxFocalLoss(gamma=0.5)(z, t).backward()
    assert torch.isfinite(z.grad).all()


def test_recommend() -> None:
    mode, why = recommend(
        {
            "task": "binary",
            "imbalance_ratio": 88 / 12,
            "minority_share": 0.12,
            "class_counts": {"negative": 880, "positive": 120},
            "num_images": 1000,
        }
    )
    assert mode == "weighted_loss" and "positive" in why
    mode, why = recommend(
        {
            "task": "multiclass",
            "imbalance_ratio": 1.1,
            "minority_share": 0.32,
            "class_counts": {"a": 330, "b": 320, "c": 350},
            "num_images": 1000,
        }
    )
    assert mode == "none" and "balanced" in why
    mode, _ = recommend(
        {"task": "binary", "imbalance_ratio": 20.0, "class_counts": {"a": 600, "b": 30}, "num_images": 630}
    )
    assert mode == "oversample"
    mode, why = recommend(
        {"task": "multilabel", "imbalance_ratio": 9.0, "class_counts": {"cat": 450, "dog": 50}, "num_images": 500}
    )
    assert mode == "weighted_loss" and "pos_weight" in why
    assert recommend({"task": "binary"})[0] == "none"
    # an empty class is ignored rather than making the ratio infinite
    mode, why = recommend({"task": "multiclass", "imbalance_ratio": None, "class_counts": {"a": 500, "b": 100, "c": 0}})
    assert mode == "weighted_loss" and "5.0:1" in why and "'b'" in why

"""Loupe's built-in networks for low-resolution data: `SmallCNN` (Fashion-MNIST class) and `FaceNet`
(an L2-normalised embedder), with their conv building blocks.

They are backbones only, like a timm model after `reset_classifier(0)`: each maps pixels to pooled
(N, num_features) features, and `engine.models.factory` wraps them in an `ImageClassifier` with a head.
They have no pretrained weights; `engine.models.factory` says so when pretrained weights are asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _stages(in_chans: int, widths: tuple[int, ...], single_first: bool = False) -> nn.Sequential:
    """Two conv-bn-relu per stage, 2x2 max-pool between stages: cheap, and strong on 28-64 px images.

    `single_first` keeps one conv at full resolution, where a conv costs 4x a stage-2 conv.
    """
    out, c = [], in_chans
    for i, w in enumerate(widths):
        convs = [_cbr(c, w)] + ([] if (i == 0 and single_first) else [_cbr(w, w)])
        out.append(nn.Sequential(*([nn.MaxPool2d(2)] if i else []), *convs))
        c = w
    return nn.Sequential(*out)


class SmallCNN(nn.Module):
    """Compact CNN for low-resolution data (Fashion-MNIST class): conv stages -> global average pool."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.stages = _stages(in_chans, widths, single_first=True)
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean((2, 3))


class FaceNet(nn.Module):
    """FaceNet-style embedder: conv stack -> 128-d L2-normalised embedding (comparable by cosine)."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256), dim: int = 128):
        super().__init__()
        self.stages = _stages(in_chans, widths)
        self.embed = nn.Linear(widths[-1], dim)
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.stages(x).mean((2, 3))), dim=1)


class _Residual(nn.Module):
    """x + conv-bn-relu(conv-bn-relu(x)): the ResNet-9 (Myrtle, airbench) residual pair at one width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(width, width), _cbr(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SmallResNet(nn.Module):
    """Compact residual CNN for small images (up to ~72 px) trained from scratch: a ResNet-9 at a fraction
    of its width, the shape behind the fast CIFAR-10 recipes (Myrtle's DAWNBench entry, airbench).

    A 3x3 stem at full resolution, then one stage per width: conv-bn-relu, 2x2 max-pool, and (in the
    first and last stage) a residual pair of conv-bn-relu at that width; global average pool. Why this
    shape: wide, shallow stages keep the CPU's matrix units busy (a deep, narrow ResNet-20 of similar
    FLOPs runs far slower per image), pooling right after each widening conv keeps the costly convs at
    low resolution, and the two residual pairs let the net train fast at a high learning rate.
    Widths were chosen by measured epoch time (bench/RESULTS.md).
    """

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        stem, *rest = widths
        self.stem = _cbr(in_chans, stem)
        stages, c = [], stem
        for i, w in enumerate(rest):
            block = [_cbr(c, w), nn.MaxPool2d(2)]
            if i in (0, len(rest) - 1):
                block.append(_Residual(w))
            stages.append(nn.Sequential(*block))
            c = w
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean((2, 3))

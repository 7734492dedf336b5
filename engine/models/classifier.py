"""The networks: built-in small CNNs for low-resolution data, and the wrapper every model is used through.

Why a wrapper: attacks, attributions and exports all work in pixel space, so normalisation (and the
grayscale-to-RGB repeat a 3-channel pretrained backbone needs) lives inside the model, never in the
data pipeline. The wrapper splits `features` (backbone) from `head`, so a linear probe can cache the
features once and train only the head, and `finetune_last` can name the last stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import LoupeError


class ModelError(LoupeError):
    """A model name, option or weights file that cannot be used."""


class PretrainedUnavailable(ModelError):
    """Pretrained weights were asked for but none can be found on this machine."""


class WeightsError(ModelError):
    """A weights file or package that is unreadable or does not fit the architecture."""


@dataclass
class ModelInfo:
    name: str
    weights_source: str  # 'timm', 'package:<dist>', 'file:<path>' or 'scratch'
    default_image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    last_stage: list[str] = field(default_factory=list)


# --- built-in networks --------------------------------------------------------------------------

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


def probs_from_logits(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The model's probabilities: softmax over classes, or independent sigmoids for multi-label."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


# --- the wrapper --------------------------------------------------------------------------------

class ImageClassifier(nn.Module):
    """Pixels in [0, 1] (N, C, H, W) -> logits, with normalisation and channel repeat inside.

    `features(x)` gives the pooled (N, F) backbone features and `classify(f)` maps them to logits, so
    `forward(x) == classify(features(x))`. Plain tensor ops only, so tracing/ONNX export works.
    """

    def __init__(self, backbone: nn.Module, num_features: int, head: nn.Module, *, in_chans: int,
                 backbone_chans: int, mean: tuple[float, ...], std: tuple[float, ...], dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.num_classes = int(head.out_features if isinstance(head, nn.Linear) else head[-1].out_features)
        self.in_chans = in_chans
        self.repeat = backbone_chans // in_chans if backbone_chans != in_chans else 1
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.drop = nn.Dropout(dropout)
        self.head = head
        self.last_stage: list[str] = []
        self.strategy = "finetune_all"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        return self.backbone((x - self.mean) / self.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def train_mode(self) -> ImageClassifier:
        """Call instead of `.train()`: frozen parts (and their BatchNorm statistics) stay in eval mode."""
        from engine.models.factory import set_train_mode

        return set_train_mode(self)


class ScaledLinear(nn.Linear):
    """`Linear(scale * x)`: L2-normalised embeddings have norm 1, and a fixed scale (as in NormFace) lets
    the head reach confident logits quickly. The scale lives in the head, so `head(features)` is exact
    wherever the head is used alone (a linear probe on cached features)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0):
        super().__init__(in_features, out_features)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.weight, self.bias)


def make_head(kind: str, num_features: int, num_classes: int, scale: float = 1.0) -> nn.Module:
    first = ScaledLinear if scale != 1.0 else nn.Linear
    kw = {"scale": scale} if scale != 1.0 else {}
    if kind == "linear":
        return first(num_features, num_classes, **kw)
    if kind == "mlp":
        hidden = max(64, min(512, num_features))
        return nn.Sequential(first(num_features, hidden, **kw), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
    raise ModelError(f"Unknown head '{kind}'; choose 'linear' or 'mlp'.")

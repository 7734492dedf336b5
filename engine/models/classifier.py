"""The wrapper every model is used through (`ImageClassifier`), its heads, and the transfer strategies.

Why a wrapper: attacks, attributions and exports all work in pixel space, so normalisation (and the
grayscale-to-RGB repeat a 3-channel pretrained backbone needs) lives inside the model, never in the
data pipeline. The wrapper splits `features` (backbone) from `head`, so a linear probe can cache the
features once and train only the head, and `finetune_last` can name the last stage.

The transfer strategies (`apply_strategy`, `set_train_mode`) live here, beside the wrapper whose
`last_stage` and `train_mode()` they use, so the wrapper needs nothing from the factory that builds it.
The backbones themselves come from timm or `engine.models.small_cnns`; `engine.models.factory` builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import STRATEGIES
from engine.errors import ModelError


@dataclass
class ModelInfo:
    """What `build_model` says about a model besides the module: where its weights came from and how it
    expects its pixels (written to the run's config and shown on the Train page)."""

    name: str
    weights_source: str  # 'timm', 'package:<dist>', 'file:<path>' or 'scratch'
    default_image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    last_stage: list[str] = field(default_factory=list)


def probs_from_logits(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The model's probabilities: softmax over classes, or independent sigmoids for multi-label."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def tta_probs(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    multilabel: bool,
    hflip: bool,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The probabilities a run reports for pixels `x` (N, C, H, W): with `hflip` (the run's `tta_hflip`),
    the mean of the probabilities of `x` and of its mirror image; without, those of `x` alone.

    The one definition of test-time augmentation: the predictions a run writes (so Evaluate's numbers),
    `evaluate`, `predict`, the Predict page and export all come through here. Probabilities, not logits,
    are averaged, so each view's confidence counts as the model gave it. `logits`: the model's (float)
    logits for `x` when the caller already has them (it reads the features on the way), saving a pass.
    """
    first = logits_of(x) if logits is None else logits
    probs = probs_from_logits(first.float(), multilabel)
    if not hflip:
        return probs
    return (probs + probs_from_logits(logits_of(x.flip(-1)).float(), multilabel)) / 2


# --- the wrapper and its heads ------------------------------------------------------------------


class ImageClassifier(nn.Module):
    """Pixels in [0, 1] (N, C, H, W) -> logits, with normalisation and channel repeat inside.

    `features(x)` gives the pooled (N, F) backbone features and `classify(f)` maps them to logits, so
    `forward(x) == classify(features(x))`. Plain tensor ops only, so tracing/ONNX export works.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        head: nn.Module,
        *,
        in_chans: int,
        backbone_chans: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        dropout: float = 0.0,
    ):
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


# --- transfer strategies ------------------------------------------------------------------------


def apply_strategy(model: ImageClassifier, strategy: str) -> list[nn.Parameter]:
    """Set requires_grad for a transfer strategy and return the parameters the optimiser should get."""
    if strategy not in STRATEGIES:
        raise ModelError(f"Unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
    model.backbone.requires_grad_(strategy in ("finetune_all", "scratch"))
    if strategy == "finetune_last":
        for n in model.last_stage:
            model.get_submodule(n).requires_grad_(True)
    model.head.requires_grad_(True)
    model.strategy = strategy
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: ImageClassifier) -> ImageClassifier:
    """`model.train()`, except that every fully frozen submodule goes back to eval, so frozen BatchNorm
    keeps its pretrained running statistics and frozen dropout/drop-path stays off."""
    model.train()

    def walk(mod: nn.Module) -> tuple[bool, bool]:
        own = list(mod.parameters(recurse=False))
        has, trains = bool(own), any(p.requires_grad for p in own)
        for child in mod.children():
            h, t = walk(child)
            has, trains = has or h, trains or t
        if has and not trains:
            mod.eval()
        return has, trains

    walk(model)
    return model

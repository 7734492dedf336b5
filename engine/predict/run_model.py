"""A finished run's model, ready for explanations, attacks and predictions.

Why a separate loader: the Explain and Robustness pages ask for the same model on every rerun, so the
rebuilt network is cached per (run folder, checkpoint mtime); retraining or resuming writes a new
`best.safetensors`, which changes the mtime and so the cache key. The cached model is shared, so it is
frozen (eval mode, no parameter gradients) and every user takes `RunModel.lock` while running it.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.data.pixels import to_tensor
from engine.errors import LoupeError
from engine.models.classifier import tta_probs
from engine.runs.folder import Run


class RunModelError(LoupeError):
    """A run whose model cannot be rebuilt, or an image it cannot take."""


@dataclass(eq=False)
class RunModel:
    """The frozen model of a run plus what is needed to feed it and read its outputs."""

    model: torch.nn.Module
    classes: list[str]
    task: str  # binary | multiclass | multilabel
    image_size: int
    channels: int
    positive: int = 1
    run_id: str = ""
    device: str = "cpu"
    #: the run's `tta_hflip`: its probabilities average each image and its mirror (`tta_probs`); False
    #: for a run saved before the field existed, which never averaged
    tta_hflip: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no parameter gradients: explanations and attacks need input gradients only."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def wrap_model(
    model: torch.nn.Module,
    classes: list[str],
    task: str,
    image_size: int,
    channels: int,
    positive: int = 1,
    run_id: str = "",
    tta_hflip: bool = False,
) -> RunModel:
    """A RunModel around an in-memory model (tests, benchmarks, notebooks)."""
    return RunModel(
        freeze(model), list(classes), task, int(image_size), int(channels), positive, run_id, tta_hflip=bool(tta_hflip)
    )


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float, device: str) -> RunModel:
    from engine.models.factory import build_model
    from engine.runs.checkpoint import load_weights

    run = Run(path)
    header = run.config()
    cfg = header.get("config", {})
    classes = run.classes()
    if not cfg or not classes:
        raise RunModelError(f"The run '{run.id}' has no config.json/classes.json to rebuild its model from.")
    channels, size = int(header.get("channels", 3)), int(header.get("image_size") or cfg.get("image_size") or 0)
    model, _ = build_model(
        cfg["model"],
        len(classes),
        in_chans=channels,
        pretrained=False,
        allow_scratch=True,
        head=cfg.get("head", "linear"),
        dropout=cfg.get("dropout", 0.0),
        image_size=size or None,
    )
    load_weights(model, run.best_weights)
    task = header.get("task") or ("binary" if len(classes) == 2 else "multiclass")
    positive = int(cfg.get("positive_class", 1)) if task == "binary" else 0
    tta = cfg.get("tta_hflip", False)  # absent from runs saved before the field existed: they never averaged
    if not isinstance(tta, bool):
        raise RunModelError(f"The run '{run.id}' has a config.json whose 'tta_hflip' is not true or false.")
    rm = wrap_model(model.to(device), classes, task, size, channels, positive, run.id, tta_hflip=tta)
    rm.device = device
    return rm


def load_run_model(run: Run, device: str = "cpu") -> RunModel:
    """The run's best checkpoint, rebuilt once and cached until the checkpoint file changes."""
    best = run.best_weights
    if not best.exists():
        raise RunModelError(f"The run '{run.id}' has no best checkpoint yet; wait for it to finish an epoch.")
    return _load_cached(str(run.path), best.stat().st_mtime, str(device))


def prepare_image(data: bytes | Path, name: str, rm: RunModel) -> tuple[np.ndarray, torch.Tensor]:
    """Decode an uploaded image exactly as training did: uint8 (H, W, C) pixels and a (1, C, H, W) [0, 1] tensor."""
    from engine.data.decode import ImageDecodeError, decode

    try:
        pixels, _ = decode(data, name, size=rm.image_size, channels=rm.channels)
    except ImageDecodeError as e:
        raise RunModelError(f"The image '{name or 'upload'}' cannot be used: {e}.") from None
    x = to_tensor(pixels)
    return pixels, x.to(rm.device)


def predict_tensor(rm: RunModel, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """(N, C) probabilities as numpy: softmax, or independent sigmoids for multi-label; averaged with the
    mirror images' when the run says so (`tta_probs`), as its saved predictions were."""
    out = []
    with rm.lock, torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size].to(rm.device)
            out.append(tta_probs(rm.model, xb, rm.multilabel, rm.tta_hflip).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(rm.classes)), np.float32)


def predict_features(rm: RunModel, x: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """((N, C) probabilities, (N, F) penultimate features) from one forward pass.

    The probabilities are exactly `predict_tensor`'s: the wrapper's forward is `classify(features(x))`, so
    reading the features on the way costs nothing and the out-of-distribution check sees the pass that decided
    (with test-time flip, the features are the unflipped image's; the mirror adds only its probabilities).
    """
    probs, feats = [], []
    with rm.lock, torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size].to(rm.device)
            f = rm.model.features(xb).float()
            p = tta_probs(rm.model, xb, rm.multilabel, rm.tta_hflip, logits=rm.model.classify(f))
            probs.append(p.cpu().numpy())
            feats.append(f.cpu().numpy())
    if not probs:
        return np.zeros((0, len(rm.classes)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(feats)

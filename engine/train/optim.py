"""Optimisers, per-batch learning-rate schedules, and the learning-rate range test.

Schedules step once per BATCH, not per epoch: with few epochs (the common case on a CPU) a per-epoch
schedule moves in a handful of coarse jumps, and warm-up shorter than an epoch would be impossible.
All schedules are `LambdaLR` over a small callable object (or torch's `OneCycleLR`), so their
`state_dict()` is plain numbers: it saves with `weights_only=True` and a resumed run rebuilt from the
same config continues the same trajectory after `load_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from engine.config import RunConfig
from engine.errors import LoupeError

_FUSED = {"sgd", "adam", "adamw"}  # optimisers with a fused CUDA kernel (NAdam has none)


def param_groups(params: nn.Module | Iterable, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and undecayed biases and normalisation parameters.

    Rule: a parameter with at most one dimension (biases; BatchNorm/LayerNorm/GroupNorm scales and
    shifts; layer-scale vectors) is not decayed. Decaying a norm's scale only fights the
    normalisation (it rescales freely) and decaying biases limits shifts the data may need; this is
    the rule timm and most recipes use, and unlike matching module types it also works for custom
    layers. Frozen parameters (requires_grad False) are left out.
    """
    if isinstance(params, nn.Module):
        params = params.parameters()
    decay, no_decay = [], []
    for p in params:
        if isinstance(p, tuple):  # named_parameters()
            p = p[1]
        if isinstance(p, dict):
            raise LoupeError("make_optimizer takes a model or its parameters, not ready-made parameter groups.")
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(params: nn.Module | Iterable, cfg: RunConfig) -> torch.optim.Optimizer:
    """The optimiser `cfg.optimizer` (sgd, adam, adamw, nadam) with `cfg.lr` and `cfg.weight_decay`.

    `adam` uses L2-coupled decay (classic Adam); `adamw` and `nadam` decoupled decay (NAdam as
    "NAdamW"), so the same weight_decay means the same shrinkage for both. SGD uses `cfg.momentum`
    and `cfg.nesterov` (Nesterov is dropped when momentum is 0: it needs some). Fused kernels are
    used when every parameter is a CUDA tensor and the optimiser has one; otherwise torch's
    default (foreach where available).
    """
    groups = param_groups(params, cfg.weight_decay)
    if not groups:
        raise LoupeError("There are no trainable parameters; check the training strategy (every layer is frozen).")
    kind = cfg.optimizer
    all_params = [p for g in groups for p in g["params"]]
    fused = kind in _FUSED and all(p.is_cuda and p.is_floating_point() for p in all_params)
    extra: dict = {"fused": True} if fused else {}
    if kind == "sgd":
        m = cfg.momentum
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=m, nesterov=cfg.nesterov and m > 0, **extra)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **extra)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **extra)
    if kind == "nadam":
        return torch.optim.NAdam(groups, lr=cfg.lr, decoupled_weight_decay=True)
    raise LoupeError(f"Unknown optimizer '{kind}'; use one of sgd, adam, adamw, nadam.")


class Schedule:
    """LR multiplier per batch step: linear warm-up, then constant / cosine to 0 / step decay.

    A class rather than a closure so `LambdaLR.state_dict()` stores its numbers, which documents in a
    checkpoint which schedule produced it.
    """

    def __init__(
        self, kind: str, total_steps: int, warmup_steps: int = 0, step_size: int = 1, gamma: float = 0.1
    ) -> None:
        self.kind, self.total_steps, self.warmup_steps = kind, int(total_steps), int(warmup_steps)
        self.step_size, self.gamma = max(1, int(step_size)), float(gamma)

    def __call__(self, step: int) -> float:
        # Warm-up: 1/w, 2/w, ..., 1 over the first w batches (never 0, so the first batch learns).
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return warm * self.gamma ** (step // self.step_size)
        return warm  # "none": constant


ONECYCLE_PCT_START = 0.3  # the one-cycle schedule rises to its peak over this share of the steps


def warmup_length(cfg: RunConfig, epochs: int) -> float:
    """The epochs the schedule `cfg.scheduler` spends warming up (rising to its peak) in a run of `epochs`.

    Early stopping does not count them (Keras' `start_from_epoch`): while the rate still rises the val figure
    wanders, and a run stopped there never anneals (issue 16: 8 px digits planned to 100 one-cycle epochs and
    stopped by patience at epoch 18, while the rate was still rising, scored 95.5%; without patience 99.3%)."""
    if cfg.scheduler == "onecycle":
        return ONECYCLE_PCT_START * epochs
    return 0.0 if cfg.scheduler == "none" else float(cfg.warmup_epochs)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    """The per-batch schedule `cfg.scheduler`; call `.step()` after every optimiser step.

    - `none`: constant `cfg.lr` (warm-up does not apply).
    - `cosine`: linear warm-up over `cfg.warmup_epochs`, then cosine decay to 0 at the last batch.
    - `onecycle`: torch's `OneCycleLR`, peak `cfg.lr` at 30% of training, starting at lr/25 and
      ending near 0; momentum is NOT cycled, so `cfg.momentum` / Adam's betas stay as configured.
      It raises if stepped more than steps_per_epoch * epochs times, so pass the real counts.
    - `step`: multiply by `cfg.step_gamma` every `cfg.step_epochs` epochs (counted from the first
      batch), with the same linear warm-up as cosine.
    """
    total = int(steps_per_epoch) * int(epochs)
    if total < 1:
        raise LoupeError(
            f"A learning-rate schedule needs at least one step; got {steps_per_epoch} steps x {epochs} epochs."
        )
    if cfg.scheduler == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total,
            pct_start=ONECYCLE_PCT_START,
            anneal_strategy="cos",
            cycle_momentum=False,
            div_factor=25.0,
            final_div_factor=1e4,
        )
    if cfg.scheduler not in ("none", "cosine", "step"):
        raise LoupeError(f"Unknown scheduler '{cfg.scheduler}'; use one of none, cosine, onecycle, step.")
    warmup = 0 if cfg.scheduler == "none" else round(cfg.warmup_epochs * steps_per_epoch)
    fn = Schedule(cfg.scheduler, total, min(warmup, total), cfg.step_epochs * steps_per_epoch, cfg.step_gamma)
    return LambdaLR(optimizer, fn)


# --- learning-rate range test --------------------------------------------------------------------------


def lr_range_test(
    step: Callable[[float], float],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> dict:
    """Sweep the learning rate exponentially from `start_lr` to `end_lr`, one batch per value
    (Smith 2015; the fast.ai "lr_find"), and suggest a learning rate.

    `step(lr)` trains one batch at `lr` and returns its loss; the caller saves the model and
    optimiser state before and restores it after (the sweep wrecks the weights on purpose).
    Losses are smoothed with a bias-corrected exponential moving average (`smooth`), and the sweep
    stops early once the smoothed loss exceeds `diverge` x its best, or a loss is not finite.

    Suggestion: the lr where the smoothed loss falls fastest against log(lr), looking only up to the
    minimum (past it the loss is already rising). Where no point falls (too few points, or the loss
    never drops), it falls back to (the lr of the minimum loss) / 10, a step back from the edge.

    Returns {"lrs", "losses" (smoothed), "suggested_lr", "min_loss_lr", "stopped_early"}.
    """
    if not (0 < start_lr < end_lr) or num_steps < 2:
        raise LoupeError("lr_range_test needs 0 < start_lr < end_lr and at least 2 steps.")
    sweep = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best, stopped = 0.0, math.inf, False
    for i, lr in enumerate(sweep.tolist()):
        loss = float(step(lr))
        if not math.isfinite(loss):
            stopped = True
            break
        avg = smooth * avg + (1 - smooth) * loss
        smoothed = avg / (1 - smooth ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if i > 0 and smoothed > diverge * best:
            stopped = True
            break
    if not losses:
        return {"lrs": [], "losses": [], "suggested_lr": None, "min_loss_lr": None, "stopped_early": stopped}
    arr = np.asarray(losses)
    i_min = int(arr.argmin())
    min_lr = lrs[i_min]
    suggested = min_lr / 10
    if i_min >= 2:
        slope = np.gradient(arr[: i_min + 1], np.log(lrs[: i_min + 1]))
        j = int(slope.argmin())
        if slope[j] < 0:
            suggested = lrs[j]
    return {
        "lrs": lrs,
        "losses": losses,
        "suggested_lr": float(suggested),
        "min_loss_lr": float(min_lr),
        "stopped_early": stopped,
    }

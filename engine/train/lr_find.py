"""The LR finder (range test): train briefly with an exponentially rising learning rate, plot loss vs LR.

Runs on a throwaway copy of the configured model and data (`engine.train.setup.prepare`, which
writes nothing), so it never touches a run folder; the suggestion is where the smoothed loss falls
fastest (see `engine.train.optim.lr_range_test`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.config import RunConfig
from engine.models.classifier import apply_strategy, set_train_mode
from engine.train.feed import open_data
from engine.train.imbalance import epoch_indices, make_loss
from engine.train.loop import train_step
from engine.train.optim import lr_range_test, make_optimizer
from engine.train.setup import prepare


def find_lr(
    cfg: RunConfig,
    num_steps: int = 100,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """{'lrs', 'losses', 'suggested_lr', ...} for `cfg`'s data, model and optimiser."""
    s = prepare(cfg, progress=progress)
    log(s.describe(cfg))
    model, compute = s.model, s.compute
    params = apply_strategy(model, cfg.strategy)
    set_train_mode(model)
    loss_fn = make_loss(s.task, len(s.ds.classes), cfg, s.ds.labels[s.train_idx]).to(compute.device)
    optimizer = make_optimizer(params, cfg)
    data = open_data(s.ds.images, s.ds.labels, compute.device, s.task == "multilabel", cfg.max_memory_gb)
    rng = np.random.default_rng(cfg.seed)
    order = np.concatenate(
        [
            epoch_indices(s.ds.labels, s.train_idx, cfg.imbalance, rng)
            for _ in range(max(1, -(-num_steps * cfg.batch_size // max(1, len(s.train_idx)))))
        ]
    )
    gen = torch.Generator(device=compute.device).manual_seed(cfg.seed)
    pos = 0  # items of `order` used so far

    def step(lr: float) -> float:
        nonlocal pos
        for g in optimizer.param_groups:
            g["lr"] = lr
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = train_step(model, data, idx, cfg, loss_fn, optimizer, compute, gen)
        if progress is not None:
            progress(pos // cfg.batch_size, num_steps, "lr range test")
        return loss

    result = lr_range_test(step, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items()}

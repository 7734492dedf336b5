"""Optimisers, per-batch schedules (and their resume), and the learning-rate range test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.config import RunConfig
from engine.errors import LoupeError
from engine.train.optim import lr_range_test, make_optimizer, make_scheduler


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 2)
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "nadam"])
def test_no_weight_decay_on_bias_and_norm(name: str) -> None:
    model = small_model()
    opt = make_optimizer(model, RunConfig(optimizer=name, lr=0.01, weight_decay=0.1))
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and free["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[5].weight)}
    norms_and_biases = [model[0].bias, model[1].weight, model[1].bias, model[4].weight, model[4].bias, model[5].bias]
    assert {id(p) for p in free["params"]} == {id(p) for p in norms_and_biases}
    assert all(g["lr"] == 0.01 for g in opt.param_groups)


def test_optimizer_options_and_frozen_params() -> None:
    model = small_model()
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(model.named_parameters(), RunConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.8
    assert all(p is not model[0].weight for g in opt.param_groups for p in g["params"])
    assert not make_optimizer(model, RunConfig(optimizer="sgd", momentum=0.0)).defaults["nesterov"]
    assert isinstance(make_optimizer(model, RunConfig(optimizer="adamw")), torch.optim.AdamW)
    assert make_optimizer(model, RunConfig(optimizer="adam")).defaults["fused"] is None  # CPU: not fused
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(LoupeError, match="no trainable parameters"):
        make_optimizer(model, RunConfig())


def trajectory(
    cfg: RunConfig, steps_per_epoch: int, epochs: int, start: int = 0, state: dict | None = None, n: int | None = None
) -> tuple[list[float], dict, dict]:
    """The lr used at each batch; optionally resuming from saved optimizer/scheduler states."""
    param = nn.Parameter(torch.zeros(3))
    opt = make_optimizer([param], cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch, epochs)
    if state:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
    lrs = []
    for _ in range(n if n is not None else steps_per_epoch * epochs - start):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.state_dict(), sched.state_dict()


def test_cosine_with_warmup() -> None:
    cfg = RunConfig(scheduler="cosine", lr=0.1, warmup_epochs=2, epochs=10)
    lrs, _, _ = trajectory(cfg, steps_per_epoch=10, epochs=10)
    assert len(lrs) == 100
    warm = lrs[:20]
    assert warm[-1] == pytest.approx(0.1) and warm[0] == pytest.approx(0.1 / 20)
    assert all(b - a == pytest.approx(0.1 / 20) for a, b in zip(warm, warm[1:]))  # linear
    decay = lrs[20:]
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    assert decay[40] == pytest.approx(0.05, rel=0.05)  # half-way: half the peak
    assert lrs[-1] < 1e-3 and lrs[-1] > 0


def test_onecycle_peaks_at_lr() -> None:
    cfg = RunConfig(scheduler="onecycle", lr=0.2)
    lrs, _, _ = trajectory(cfg, steps_per_epoch=20, epochs=5)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.2, rel=1e-3)
    assert 25 <= peak <= 35  # 30% in
    assert lrs[0] == pytest.approx(0.2 / 25) and lrs[-1] < 1e-4


def test_step_decays_at_the_boundary() -> None:
    cfg = RunConfig(scheduler="step", lr=1.0, step_epochs=3, step_gamma=0.5, warmup_epochs=1)
    lrs, _, _ = trajectory(cfg, steps_per_epoch=4, epochs=7)
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)  # one epoch of warm-up
    assert lrs[11] == pytest.approx(1.0) and lrs[12] == pytest.approx(0.5)  # decay after epoch 3
    assert lrs[23] == pytest.approx(0.5) and lrs[24] == pytest.approx(0.25)


def test_none_is_constant() -> None:
    lrs, _, _ = trajectory(RunConfig(scheduler="none", lr=0.3, warmup_epochs=2), steps_per_epoch=3, epochs=3)
    assert lrs == pytest.approx([0.3] * 9)


@pytest.mark.parametrize("kind", ["none", "cosine", "onecycle", "step"])
def test_state_dict_round_trip_continues_the_trajectory(kind: str) -> None:
    cfg = RunConfig(scheduler=kind, lr=0.1, warmup_epochs=1, step_epochs=2, optimizer="sgd")
    full, _, _ = trajectory(cfg, steps_per_epoch=5, epochs=6)
    first, opt_state, sched_state = trajectory(cfg, steps_per_epoch=5, epochs=6, n=13)
    # what a checkpoint does: save, load with weights_only=True, rebuild from the config, continue
    import io

    buf = io.BytesIO()
    torch.save({"opt": opt_state, "sched": sched_state}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    rest, _, _ = trajectory(cfg, steps_per_epoch=5, epochs=6, start=13, state=state)
    assert first + rest == pytest.approx(full)


def test_lr_range_test_on_logistic_regression() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).float()
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-7)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step(lr: float) -> float:
        for group in opt.param_groups:
            group["lr"] = lr
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1) * 10, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    result = lr_range_test(step, start_lr=1e-5, end_lr=1e4, num_steps=100)
    model.load_state_dict(state)
    lrs, losses = result["lrs"], result["losses"]
    assert len(lrs) == len(losses) and result["stopped_early"] and len(lrs) < 100  # the sweep diverged
    assert 1e-5 <= result["suggested_lr"] <= lrs[-1]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))
    assert min(losses) < losses[0]
    # the suggestion trains: a few steps at it reduce the loss
    first = step(result["suggested_lr"])
    for _ in range(20):
        last = step(result["suggested_lr"])
    assert last < first


def test_lr_range_test_fallback_and_nan() -> None:
    flat = lr_range_test(lambda lr: 1.0, num_steps=10)
    assert not flat["stopped_early"] and len(flat["lrs"]) == 10
    assert flat["suggested_lr"] == pytest.approx(flat["min_loss_lr"] / 10)
    blows_up = lr_range_test(lambda lr: 1.0 if lr < 1e-3 else math.nan, num_steps=50)
    assert blows_up["stopped_early"] and max(blows_up["lrs"]) < 1e-3

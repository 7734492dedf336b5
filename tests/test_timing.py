"""The time estimate shown before a run starts (issue 13, item 10): a timed probe of the model, cached,
and a plan that is the probe's speed times the images of each stage (checked as a plan, not a wall clock)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from engine.config import RunConfig
from engine.data import quick_stats
from engine.train import timing
from engine.train.timing import (
    Throughput,
    cached_throughput,
    duration,
    estimate_run,
    measure_throughput,
    planned_images,
)

TINY = dict(
    dataset="builtin:digits",
    model="small_cnn",
    strategy="scratch",
    image_size=8,
    batch_size=32,
    precision="fp32",
    epochs=4,
)


def cfg_of(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes}).validate()


@pytest.fixture(scope="module")
def digits() -> dict:
    return quick_stats("builtin:digits")


def test_the_estimate_is_the_probe_speed_times_the_images_of_each_stage(digits: dict):
    cfg = cfg_of(imbalance="none")
    est = estimate_run(cfg, digits)  # a real probe of the tiny model on this machine
    tp = est.throughput
    assert tp.train_img_per_s > 0 and tp.eval_img_per_s > 0 and tp.device.startswith("CPU")
    train, val = digits["splits"]["train"]["num_images"], digits["splits"]["val"]["num_images"]
    test = digits["splits"]["test"]["num_images"]
    assert (est.train_images, est.val_images, est.final_images) == (train, val, val + test)
    assert est.train_seconds_per_epoch == pytest.approx(train / tp.train_img_per_s)
    assert est.val_seconds_per_epoch == pytest.approx(val / tp.eval_img_per_s)
    assert est.total_seconds == pytest.approx(
        4 * (train / tp.train_img_per_s + val / tp.eval_img_per_s) + (val + test) / tp.eval_img_per_s
    )
    assert est.steps_per_epoch == math.ceil(train / 32)
    assert "per epoch" in est.describe() and "on this CPU" in est.describe()


def test_the_plan_follows_the_train_limit_imbalance_budget_and_folds(digits: dict):
    tp = Throughput(
        train_img_per_s=100.0, eval_img_per_s=1000.0, device="CPU (2 cores, bf16 no) fp32", probe_seconds=1.0
    )
    counts = digits["splits"]["train"]["class_counts"].values()
    over = estimate_run(cfg_of(imbalance="oversample"), digits, tp)
    assert over.train_images == len(counts) * max(counts)
    under = estimate_run(cfg_of(imbalance="undersample"), digits, tp)
    assert under.train_images == len(counts) * min(counts)
    limited = estimate_run(cfg_of(imbalance="none", train_limit=500), digits, tp)
    assert limited.train_images == 500 and limited.train_seconds_per_epoch == pytest.approx(5.0)
    budget = estimate_run(cfg_of(imbalance="none", train_limit=500, epochs=100, time_budget_s=60), digits, tp)
    assert budget.capped_by_budget and budget.total_seconds < 100 * budget.seconds_per_epoch
    assert budget.total_seconds == pytest.approx(60 + budget.val_seconds_per_epoch + budget.final_images / 1000.0)
    assert "time budget" in budget.describe()
    folds = estimate_run(cfg_of(imbalance="none", train_limit=500, kfold=3), digits, tp)
    assert folds.total_seconds == pytest.approx(3 * limited.total_seconds)
    # what time-aware defaults plan with: the epochs that fit a budget
    assert limited.epochs_within(10 * limited.seconds_per_epoch + limited.final_images / 1000.0) == 10
    assert limited.epochs_within(0.0) == 1
    # a long CPU run is flagged (the Train page warns), a short one is not
    assert not limited.too_long_for_cpu
    assert estimate_run(cfg_of(imbalance="none", epochs=1000), digits, tp).too_long_for_cpu
    assert planned_images(cfg_of(val_fraction=0.3, test_fraction=0.1), digits)[1] == round(digits["num_images"] * 0.3)


def test_the_probe_is_cached_per_configuration(digits: dict, monkeypatch: pytest.MonkeyPatch):
    cfg = cfg_of(batch_size=47)  # batch sizes no other test uses: the suite shares one cache folder
    assert cached_throughput(cfg, 8, 1) is None
    first = measure_throughput(cfg, 8, 1, 10)
    assert not first.cached
    import engine.models.factory

    def no_probe(*args, **kwargs):
        raise AssertionError("the second estimate measured again instead of reading the cache")

    monkeypatch.setattr(engine.models.factory, "build_model", no_probe)
    second = measure_throughput(cfg, 8, 1, 10)
    assert second.cached and (second.train_img_per_s, second.eval_img_per_s) == (
        first.train_img_per_s,
        first.eval_img_per_s,
    )
    assert estimate_run(cfg, digits).throughput.cached  # digits are grayscale 8 px: the same key
    with pytest.raises(AssertionError):  # another batch size is another configuration: measured
        measure_throughput(cfg_of(batch_size=53), 8, 1, 10)
    assert timing.cached_throughput(cfg_of(batch_size=47, precision="fp32"), 8, 1) is not None


def test_a_finished_run_replaces_the_probe_figures_with_its_own(tmp_path):
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run

    cfg = cfg_of(batch_size=40, epochs=1, train_limit=300)
    run = prepare_run(cfg, tmp_path / "runs")
    summary = fit(cfg, run, log=lambda m: None)
    tp = cached_throughput(cfg, 8, 1)
    assert tp is not None and tp.source == f"run {run.id}"
    assert tp.train_img_per_s == pytest.approx(summary["train_img_per_s"], rel=0.01)
    assert tp.eval_img_per_s > 0


def test_the_estimate_command_prints_the_plan_as_json():
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "estimate",
            "--dataset",
            "builtin:digits",
            "--model",
            "small_cnn",
            "--image-size",
            "8",
            "--batch-size",
            "32",
            "--precision",
            "fp32",
            "--epochs",
            "4",
            "--imbalance",
            "none",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    tp = plan["throughput"]
    assert plan["epochs"] == 4 and plan["image_size"] == 8 and plan["channels"] == 1
    assert plan["train_seconds_per_epoch"] == pytest.approx(plan["train_images"] / tp["train_img_per_s"])
    assert "per epoch" in plan["describe"]


# --- issue 16 item 1: time-aware defaults plan the epochs to a budget from the probe --------------------------

CPU_TP = Throughput(
    train_img_per_s=200.0, eval_img_per_s=2000.0, device="CPU (2 cores, bf16 no) fp32", probe_seconds=1.0
)


@pytest.mark.parametrize("budget", [20.0, 60.0, 300.0])
def test_planned_epochs_fill_the_budget_within_20_percent(digits: dict, budget: float):
    """The plan, not the wall clock: the planned run (every epoch's training and validation passes, then the
    final predictions) fills its share of the budget (PLAN_SHARE: the rest is a margin for a run slower than
    its probe) with whole epochs, and the reason says so in people's words."""
    from engine.train.recipes import PLAN_SHARE, plan_epochs
    from engine.train.timing import duration

    cfg = cfg_of(imbalance="none")
    epochs, reason = plan_epochs(cfg, digits, budget, CPU_TP)
    planned = estimate_run(cfg_of(imbalance="none", epochs=epochs), digits, CPU_TP)
    share = PLAN_SHARE * budget
    # as many whole epochs as fit: never past the share, and one more would be
    assert planned.total_seconds <= share < planned.total_seconds + planned.seconds_per_epoch, planned
    assert f"{epochs} epochs fit in about {duration(planned.total_seconds)} on this CPU" in reason, reason


def test_planned_epochs_stay_within_their_bounds(digits: dict):
    from engine.train.recipes import MAX_EPOCHS, MIN_EPOCHS, plan_epochs

    cfg = cfg_of(imbalance="none")
    many, why_many = plan_epochs(cfg, digits, 1e6, CPU_TP)  # far more time than the data needs
    assert many == MAX_EPOCHS and "the most the defaults plan" in why_many
    one, why_one = plan_epochs(cfg, digits, 2.0, CPU_TP)  # less than one epoch
    assert one == MIN_EPOCHS and "ends the run part-way" in why_one
    slow = Throughput(train_img_per_s=2.0, eval_img_per_s=20.0, device="GPU x fp32", probe_seconds=1.0)
    assert "on this GPU" in plan_epochs(cfg, digits, 1e4, slow)[1]


def test_suggest_plans_the_epochs_from_a_probe_and_sets_the_budget_as_the_guard(digits: dict):
    """`train --dataset D` alone: epochs from a timed probe of the chosen model for the default CPU budget
    (10 minutes), which is also set as the run's guard; --epochs given wins (no budget is added); a budget
    given is planned to; a budget of 0 (none) falls back to the size rule."""
    from engine.train.recipes import DEFAULT_BUDGET_S, fixed_epochs, plan_epochs, suggest

    out, why = suggest(digits, set(), gpu=False)
    cfg = RunConfig(**out)
    tp = cached_throughput(cfg, 8, 1)  # the probe the suggestion ran, cached
    assert tp is not None
    assert DEFAULT_BUDGET_S["cpu"] == 600.0 and out["time_budget_s"] == 600.0
    epochs, reason = plan_epochs(cfg, digits, 600.0, tp)
    assert out["epochs"] == epochs and reason in why
    assert "on this CPU" in reason and any(r.startswith("time_budget_s 600") for r in why)

    given_epochs, _ = suggest(digits, {"epochs"}, gpu=False, values={"epochs": 3})
    assert "epochs" not in given_epochs and "time_budget_s" not in given_epochs
    # a budget a few epochs long at the probed speed (on a quiet CPU 8 px digits take well under a second an
    # epoch, so a fixed 20 s already reached MAX_EPOCHS: the plan, not a guess about the machine, sets it)
    few = 3 * estimate_run(dataclasses.replace(cfg, epochs=1, time_budget_s=0.0), digits, tp).seconds_per_epoch + 1.0
    short, why_short = suggest(digits, {"time_budget_s"}, gpu=False, values={"time_budget_s": few})
    assert short["epochs"] == plan_epochs(cfg, digits, few, tp)[0] < out["epochs"]
    assert "time_budget_s" not in short and any(f"time budget of {duration(few)}" in r for r in why_short)
    assert out["patience"] == short["patience"] == 0  # planned to the budget: the schedule must anneal
    none, why_none = suggest(digits, {"time_budget_s"}, gpu=False, values={"time_budget_s": 0.0})
    assert none["epochs"] == fixed_epochs(digits["num_images"]) and any("no time budget" in r for r in why_none)
    assert none["patience"] == 5  # the size rule's epochs: early stopping as before


def test_the_cli_defaults_plan_to_the_budget_and_explicit_epochs_win(capsys: pytest.CaptureFixture):
    import json

    from engine.cli.main import main
    from engine.train.recipes import PLAN_SHARE

    common = ["estimate", "--dataset", "builtin:digits", "--json"]
    assert main([*common, "--epochs", "1"]) == 0  # the probe's speed: a budget of about five epochs at it
    one = json.loads(capsys.readouterr().out)
    final_s = one["final_images"] / one["throughput"]["eval_img_per_s"]
    budget = round(5 * one["seconds_per_epoch"] + final_s, 3)  # (a fixed 30 s reached MAX_EPOCHS on a quiet CPU)
    assert main([*common, "--time-budget-s", str(budget)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["budget_s"] == budget and plan["epochs"] > 1
    assert (
        0.8 * PLAN_SHARE * budget
        <= plan["epochs"] * plan["seconds_per_epoch"] + plan["final_images"] / plan["throughput"]["eval_img_per_s"]
        <= PLAN_SHARE * budget
    )
    assert main([*common, "--epochs", "3"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["epochs"] == 3 and plan["budget_s"] == 0.0  # no budget was given: none is added


def test_the_probe_cache_is_keyed_by_the_thread_count(monkeypatch: pytest.MonkeyPatch):
    import torch

    cfg = cfg_of(batch_size=47)
    measure_throughput(cfg, 8, 1, 10)
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads + 1))
    try:
        torch.set_num_threads(threads + 1)
        assert cached_throughput(cfg, 8, 1) is None  # timed with other threads: not these figures
    finally:
        torch.set_num_threads(threads)


def test_a_linear_probe_is_timed_as_its_head_first_fine_tune_and_its_estimate_counts_the_fine_tune(digits: dict):
    """One probe plans both phases of the head-first recipe: a linear probe's probe key is its fine-tune's (the
    Train page's estimate of the form's config caches the figures `plan_finetune` reads), and the estimate of a
    probe with `finetune_epochs` adds those epochs (training and validation passes), capped by the budget."""
    from engine.train.timing import probe_key, resolve_compute

    lp = dict(model="tf_efficientnet_lite0", pretrained=True, strategy="linear_probe", image_size=32, imbalance="none")
    probe, ft = cfg_of(**lp), cfg_of(**{**lp, "strategy": "finetune_last"})
    compute = resolve_compute(probe.device, probe.precision, probe.channels_last)
    assert probe_key(probe, 32, 1, compute) == probe_key(ft, 32, 1, compute)
    assert probe_key(probe, 32, 1, compute) != probe_key(cfg_of(**{**lp, "strategy": "finetune_all"}), 32, 1, compute)
    head = estimate_run(probe, digits, CPU_TP)
    both = estimate_run(probe.replace(finetune_epochs=3), digits, CPU_TP)
    epoch = estimate_run(ft.replace(epochs=1), digits, CPU_TP).seconds_per_epoch
    assert both.total_seconds == pytest.approx(head.total_seconds + 3 * epoch)
    assert "then 3 epochs of fine-tuning" in both.describe() and "fine-tuning" not in head.describe()
    capped = estimate_run(probe.replace(finetune_epochs=3, time_budget_s=head.total_seconds), digits, CPU_TP)
    assert capped.total_seconds <= head.total_seconds + capped.final_images / CPU_TP.eval_img_per_s + 1e-9

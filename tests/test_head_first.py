"""Head first, then a short fine-tune (issue 16 item 3's second phase): the plan ("time permitting"), the two
phases on real photo crops (the head run in RUN/head/, the last stage fine-tuned from it into RUN), the rule that
keeps whichever is better on val, and the fallback when the budget has no time left for the fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import ConfigError, RunConfig
from engine.train.recipes import FINETUNE_MAX_EPOCHS, plan_finetune, suggest
from engine.train.timing import Throughput, estimate_run
from tests.test_transfer import crops


def photo_stats(n: int, side: int = 224) -> dict:
    """What `quick_stats` says about n photos of side x side px in two classes, split 70/15/15."""
    split = {"train": round(0.7 * n), "val": round(0.15 * n)}
    split["test"] = n - split["train"] - split["val"]
    return {
        "num_images": n,
        "images": {"width": {"mean": side}, "height": {"mean": side}},
        "classes": {"a": n // 2, "b": n - n // 2},
        "task": "multiclass",
        "splits": {k: {"num_images": v, "class_counts": {"a": v // 2, "b": v - v // 2}} for k, v in split.items()},
    }


def speeds(train: float, evaluate: float):
    """A `measure` with fixed figures (no probe): what the planner is told the device does."""
    tp = Throughput(train_img_per_s=train, eval_img_per_s=evaluate, device="CPU (2 cores) bf16", probe_seconds=1.0)
    return lambda cfg, stats: tp


def test_the_fine_tune_is_planned_in_what_the_features_and_the_head_leave_of_the_budget():
    stats = photo_stats(1_000)
    out, why = suggest(stats, set(), gpu=False, measure=speeds(train=20.0, evaluate=60.0))
    assert out["strategy"] == "linear_probe" and out["time_budget_s"] == 600.0
    k = out["finetune_epochs"]
    cfg = RunConfig(**out)
    ft = estimate_run(cfg.replace(strategy="finetune_last", finetune_epochs=0, epochs=1), stats, speeds(20, 60)(0, 0))
    head = estimate_run(cfg.replace(finetune_epochs=0, epochs=1), stats, ft.throughput)
    # features of 1,000 images at 60 img/s (~17 s), then epochs of 700 images at 20 img/s (~37 s each)
    used = 1.1 * head.total_seconds + k * ft.seconds_per_epoch + ft.final_images / 60.0
    assert 1 <= k <= FINETUNE_MAX_EPOCHS and used <= 600.0
    assert k == FINETUNE_MAX_EPOCHS or used + ft.seconds_per_epoch > 600.0  # as many as fit, up to the cap
    assert any(r.startswith(f"finetune_epochs {k}: then the last stage fine-tunes from the trained head") for r in why)
    # a slow device: the features fill the budget, one epoch of fine-tuning would not fit: the head alone
    slow, why_slow = suggest(photo_stats(20_000), set(), gpu=False, measure=speeds(train=2.0, evaluate=40.0))
    assert slow["finetune_epochs"] == 0 and "time_budget_s" not in slow
    assert any(r.startswith("finetune_epochs 0: the features and the head take about") for r in why_slow), why_slow
    # a user who asks for a linear probe gets one; the Train page's "being timed" plans none for now
    mine, _ = suggest(stats, {"strategy"}, gpu=False, values={"strategy": "linear_probe"}, measure=speeds(20, 60))
    assert "finetune_epochs" not in mine
    assert plan_finetune(stats, out, 600.0, lambda cfg, stats: None)[0] == 0


def test_finetune_epochs_is_refused_without_a_linear_probe():
    with pytest.raises(ConfigError, match="finetune_epochs' follows a linear probe"):
        RunConfig(strategy="finetune_all", finetune_epochs=2).validate()
    with pytest.raises(ConfigError, match="works with single runs"):
        RunConfig(model="tf_efficientnet_lite0", strategy="linear_probe", finetune_epochs=2, kfold=3).validate()


def two_phase(tmp_path: Path, **changes) -> tuple:
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    cfg = RunConfig(
        dataset=str(crops(tmp_path / "crops", per_class=12, side=96)),
        model="tf_efficientnet_lite0",
        pretrained=True,
        strategy="linear_probe",
        head="mlp",
        image_size=64,
        epochs=3,
        finetune_epochs=2,
        batch_size=8,
        lr=1e-3,
        monitor="val_loss",
        precision="fp32",
        **changes,
    ).validate()
    run = prepare_run(cfg, tmp_path / "runs")
    logs: list[str] = []
    return cfg, run, run_training(cfg, run, log=logs.append), logs


def test_the_head_trains_first_then_the_last_stage_fine_tunes_from_it(tmp_path: Path):
    from engine.models.weights import read_safetensors
    from engine.predict.predictor import Predictor
    from engine.runs.folder import Run

    cfg, run, summary, logs = two_phase(tmp_path)
    head = Run(run.path / "head")
    assert head.status()["state"] == "completed" and run.status()["state"] == "completed"
    assert head.config()["config"]["finetune_epochs"] == 0 and head.config()["parent"] == run.id
    assert json.loads((run.path / "config.json").read_text())["config"] == cfg.to_dict()  # what the user gave
    assert len([r for r in head.metrics() if r["split"] == "val"]) == 3  # the head's epochs
    assert len([r for r in run.metrics() if r["split"] == "val"]) == 2  # the fine-tune's
    hf = summary["head_first"]
    assert hf["finetune"]["lr"] == pytest.approx(1e-4) and hf["finetune"]["epochs"] == 2
    head_best = min(r["loss"] for r in head.metrics() if r["split"] == "val")
    ft_best = min(r["loss"] for r in run.metrics() if r["split"] == "val")
    assert hf["head"]["best_val"] == pytest.approx(head_best) and hf["finetune"]["best_val"] == pytest.approx(ft_best)
    assert hf["kept"] == ("finetune" if ft_best < head_best else "head")
    # the fine-tune started from the head and moved only the last stage (and the head): the stem is the head run's
    start, end = read_safetensors(str(head.best_weights)), read_safetensors(str(run.last_weights))
    stem = [k for k in start if k.startswith("backbone.conv_stem")]
    last = [k for k in start if any(k.startswith(p + ".") for p in run_last_stage(run)) and "running" not in k]
    assert stem and last
    assert all(torch.equal(start[k], end[k]) for k in stem)
    assert any(not torch.equal(start[k], end[k]) for k in last)
    pred = Predictor.from_ref(str(run.path))
    res = pred.predict_paths([tmp_path / "crops" / "cat" / "0.jpg", tmp_path / "crops" / "cup" / "0.jpg"], top_k=2)
    assert [r["label"] for r in res] == ["cat", "cup"]
    assert any(m.startswith("then fine-tuning the last stage for 2 epochs at lr 0.0001") for m in logs), logs


def run_last_stage(run) -> list[str]:
    from engine.models.factory import build_model

    model, _ = build_model("tf_efficientnet_lite0", 2, pretrained=False, allow_scratch=True, image_size=64)
    return model.last_stage


def test_a_fine_tune_worse_than_the_head_on_val_leaves_the_heads_model(tmp_path: Path, monkeypatch):
    """A fine-tune at a rate that wrecks the backbone (1000x the head's) never beats the head on val: RUN's
    weights, predictions and final figures are then the head's, byte for byte, and the summary says why."""
    import engine.train.head_first as head_first
    from engine.runs.folder import Run

    monkeypatch.setattr(head_first, "LR_SCALE", 1000.0)
    _, run, summary, _ = two_phase(tmp_path)
    head = Run(run.path / "head")
    assert summary["head_first"]["kept"] == "head", summary["head_first"]
    assert run.best_weights.read_bytes() == head.best_weights.read_bytes()
    for split in ("val", "test"):
        with np.load(run.predictions / f"{split}.npz") as a, np.load(head.predictions / f"{split}.npz") as b:
            assert np.array_equal(a["probs"], b["probs"])
    assert summary["final"] == head.summary()["final"] and run.summary()["final"] == head.summary()["final"]
    assert any("did not beat the head on val" in n for n in summary["notes"])


def test_no_time_left_after_the_head_makes_the_head_the_runs_model(tmp_path: Path):
    from engine.predict.predictor import Predictor
    from engine.runs.folder import Run

    _, run, summary, logs = two_phase(tmp_path, time_budget_s=0.01)  # decoding and the head alone take longer
    head = Run(run.path / "head")
    assert run.status()["state"] == "completed"
    assert summary["head_first"]["kept"] == "head" and summary["head_first"]["finetune"]["epochs"] == 0
    assert run.best_weights.read_bytes() == head.best_weights.read_bytes()
    assert [r["split"] for r in run.metrics()] == [r["split"] for r in head.metrics()]
    assert any(m.startswith("no fine-tune: the features and the head took") for m in logs), logs
    assert Predictor.from_ref(str(run.path)).classes == ["cat", "cup"]

"""The training loop writes the run-folder contract and each training option does what it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.config import ConfigError, RunConfig
from engine.runs.folder import Run
from engine.train.fit import fit
from engine.train.jobs import prepare_run
from engine.train.loop import TrainingFailed
from engine.train.run import run_training

TINY = dict(
    dataset="builtin:digits",
    model="small_cnn",
    strategy="scratch",
    image_size=8,
    epochs=2,
    batch_size=32,
    train_limit=0,
    lr=1e-2,
    precision="fp32",
)


def tiny(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes}).validate()


def run_fit(tmp_path: Path, cfg: RunConfig, **kw) -> tuple[Run, dict]:
    run = prepare_run(cfg, tmp_path / "runs")
    return run, run_training(cfg, run, log=lambda m: None, **kw)


def test_two_epoch_run_writes_the_whole_contract(tmp_path: Path):
    run, summary = run_fit(tmp_path, tiny())
    files = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()}
    for name in (
        "config.json",
        "status.json",
        "metrics.jsonl",
        "classes.json",
        "summary.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/last_state.pt",
        "predictions/val.npz",
        "predictions/test.npz",
    ):
        assert name in files, name
    status = json.loads((run.path / "status.json").read_text())
    assert status["state"] == "completed" and status["epoch"] == 2 and status["step"] == status["total_steps"]
    for key in ("epoch", "epochs", "step", "total_steps", "pid", "started_at", "updated_at"):
        assert key in status
    config = json.loads((run.path / "config.json").read_text())
    assert config["config"]["epochs"] == 2 and config["dataset_fingerprint"] and config["versions"]["torch"]
    assert json.loads((run.path / "classes.json").read_text()) == [str(i) for i in range(10)]
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["split"] == "val"]  # (throttled split=train records come between)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {
            "epoch",
            "step",
            "split",
            "loss",
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "lr",
            "img_per_s",
        } <= set(r)
    preds = np.load(run.path / "predictions" / "test.npz")
    assert preds["probs"].shape == (len(preds["labels"]), 10) and len(preds["ids"]) == len(preds["labels"])
    assert np.allclose(preds["probs"].sum(1), 1, atol=1e-4)
    assert summary["best_epoch"] in (1, 2) and summary["wall_seconds"] > 0 and summary["train_img_per_s"] > 0
    assert summary["final"]["test"]["accuracy"] > 0.8  # 10 classes, chance is 0.1: it really learned
    torch.load(run.path / "checkpoints" / "last_state.pt", weights_only=True)  # plain tensors and numbers only
    assert load_file(str(run.path / "checkpoints" / "best.safetensors"))


def test_stop_file_stops_at_the_next_batch_and_resume_completes(tmp_path: Path):
    cfg = tiny(epochs=3, batch_size=16, train_limit=300)
    run = prepare_run(cfg, tmp_path / "runs")
    calls = {"n": 0}

    def stop_after_some_steps(done: int, total: int, stage: str) -> None:
        if stage == "training":  # one call as training starts, then one per step
            calls["n"] += 1
            if calls["n"] == 26:  # after step 25: mid-epoch 2 (19 steps per epoch)
                run.request_stop()

    out = fit(cfg, run, log=lambda m: None, progress=stop_after_some_steps)
    assert out["state"] == "stopped"
    status = run.raw_status()
    assert status["state"] == "stopped" and status["step"] == 25 and not run.stop_requested()
    assert (run.checkpoints / "last.safetensors").exists()
    summary = fit(cfg, run, resume=True, log=lambda m: None)
    status = run.raw_status()
    assert status["state"] == "completed" and status["epoch"] == 3
    assert status["step"] == status["total_steps"] == 57  # no step lost or repeated across the stop
    assert [r["epoch"] for r in run.metrics() if r["split"] == "val"] == [1, 2, 3]
    assert summary["epochs_run"] == 3


def test_a_run_stopped_before_trainer_state_existed_still_resumes(tmp_path: Path):
    from engine.runs.checkpoint import load_state, save_state
    from engine.train.fit import TrainerState

    cfg = tiny(epochs=3, batch_size=16, train_limit=300)
    run = prepare_run(cfg, tmp_path / "runs")

    calls = {"n": 0}

    def stop_mid_epoch_two(done: int, total: int, stage: str) -> None:
        if stage == "training":  # one call as training starts, then one per step (`done` counts images)
            calls["n"] += 1
            if calls["n"] == 26:
                run.request_stop()

    assert fit(cfg, run, log=lambda m: None, progress=stop_mid_epoch_two)["state"] == "stopped"
    saved = load_state(run.last_state)
    assert TrainerState.from_dict(saved["trainer"], default=TrainerState()).to_dict() == saved["trainer"]
    # last_state.pt's `trainer` as Loupe wrote it before TrainerState and torch.compile support: a plain
    # dict without `compile_seconds`
    new = saved["trainer"]
    old = {
        "epoch": new["epoch"],
        "position": new["position"],
        "step": new["step"],
        "best_value": new["best_value"],
        "best_epoch": new["best_epoch"],
        "bad_epochs": new["bad_epochs"],
        "batch_size": new["batch_size"],
        "train_seconds": new["train_seconds"],
        "train_images": new["train_images"],
        "notes": [],
    }
    assert (old["epoch"], old["position"], old["step"]) == (1, 96, 25)  # mid epoch 2: 19 steps of 16, then 6 more
    save_state({**saved, "trainer": old}, run.last_state)
    summary = fit(cfg, run, resume=True, log=lambda m: None)
    status = run.raw_status()
    assert status["state"] == "completed" and status["step"] == status["total_steps"] == 57
    assert [r["epoch"] for r in run.metrics() if r["split"] == "val"] == [1, 2, 3]
    assert summary["epochs_run"] == 3 and summary["compile_seconds"] is None


def test_early_stopping_stops(tmp_path: Path):
    # a learning rate this small leaves the weights alone; only BatchNorm statistics settle, so the val
    # accuracy soon stops improving and the run must end exactly `patience` epochs after its best
    run, summary = run_fit(tmp_path, tiny(epochs=8, lr=1e-12, patience=2, monitor="val_accuracy", scheduler="none"))
    assert summary["stopped_early"] == "patience"
    assert summary["epochs_run"] == summary["best_epoch"] + 2 < 8
    assert run.raw_status()["state"] == "completed"


def test_non_finite_loss_fails_cleanly(tmp_path: Path):
    # class weights this large overflow float32 in the weighted loss: a real route to an inf loss
    cfg = tiny(imbalance="weighted_loss", class_weights=[3e38] * 10)
    run = prepare_run(cfg, tmp_path / "runs")
    with pytest.raises(TrainingFailed, match="became nan|became inf"):
        run_training(cfg, run, resume=False, log=lambda m: None)
    status = run.raw_status()
    assert status["state"] == "failed" and "learning rate" in status["error"]


def test_multilabel_trains_with_bce(tmp_path: Path):
    run, summary = run_fit(
        tmp_path, tiny(dataset="builtin:fashion-multilabel", image_size=28, train_limit=400, epochs=1)
    )
    preds = np.load(run.path / "predictions" / "val.npz")
    assert preds["labels"].ndim == 2 and preds["probs"].shape == preds["labels"].shape
    assert not np.allclose(preds["probs"].sum(1), 1)  # independent sigmoids, not a softmax
    assert {"micro_f1", "macro_f1", "hamming_loss"} <= set(summary["final"]["val"])
    assert summary["thresholds"]["multilabel"] == [0.5] * 10


def test_multilabel_progress_lines_show_macro_f1_at_half_and_at_tuned_thresholds(tmp_path: Path):
    """Issue 16 item 5: exact-set accuracy and balanced accuracy say little for a multi-label run; its epoch
    line shows what it is judged by, macro F1 at 0.5 and at per-label thresholds tuned on val."""
    from engine.metrics import multilabel_summary
    from engine.metrics.display import format_metric
    from engine.metrics.multilabel import f1_thresholds

    cfg = tiny(dataset="builtin:fashion-multilabel", image_size=28, train_limit=300, epochs=1)
    run = prepare_run(cfg, tmp_path / "runs")
    lines: list[str] = []
    run_training(cfg, run, log=lambda m: lines.append(str(m)))
    record = next(r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if r["epoch"] == 1)
    val = np.load(run.path / "predictions" / "val.npz")  # the best (only) epoch's val predictions
    tuned = multilabel_summary(val["labels"], val["probs"], f1_thresholds(val["labels"], val["probs"]))["macro_f1"]
    assert record["macro_f1_tuned"] == pytest.approx(tuned, abs=1e-6)
    assert record["macro_f1_tuned"] >= record["macro_f1"]  # tuned on these items: never below 0.5's
    line = next(m for m in lines if m.startswith("epoch 1:"))
    assert (
        f"val macro F1 {format_metric('macro_f1', record['macro_f1'])} at 0.5, "
        f"{format_metric('macro_f1_tuned', record['macro_f1_tuned'])} at per-label tuned thresholds"
    ) in line, line
    assert "val acc" not in line and "bal acc" not in line, line


def test_binary_run_reports_auc_and_hter(tmp_path: Path):
    run, summary = run_fit(
        tmp_path,
        tiny(dataset="builtin:fashion-binary", image_size=28, train_limit=400, epochs=1, imbalance="weighted_loss"),
    )
    val = summary["final"]["val"]
    assert {"auc", "far", "frr", "hter"} <= set(val) and 0 <= val["hter"] <= 1
    assert val["hter"] == pytest.approx((val["far"] + val["frr"]) / 2)
    assert summary["thresholds"]["binary"] == 0.5


def test_train_limit_is_stratified(tmp_path: Path):
    run, _ = run_fit(tmp_path, tiny(dataset="builtin:fashion-longtail", image_size=28, train_limit=200, epochs=1))
    assert json.loads((run.path / "config.json").read_text())["num_train"] == 200


def test_linear_probe_reuses_cached_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))  # cold: another test may have cached these
    cfg = tiny(
        model="tf_efficientnet_lite0",
        pretrained=True,
        strategy="linear_probe",
        image_size=32,
        epochs=3,
        batch_size=128,
        lr=1e-2,
        train_limit=0,
    )
    _, first = run_fit(tmp_path, cfg)
    _, second = run_fit(tmp_path, cfg)
    assert first["features_cache_hit"] is False and second["features_cache_hit"] is True
    assert second["final"]["test"]["accuracy"] == pytest.approx(first["final"]["test"]["accuracy"])
    assert second["final"]["test"]["accuracy"] > 0.6  # ImageNet features separate digits well


def test_linear_probe_keeps_the_epoch_its_monitor_picks(tmp_path: Path):
    from engine.metrics import log_loss

    cfg = tiny(
        model="tf_efficientnet_lite0",
        pretrained=True,
        strategy="linear_probe",
        image_size=32,
        epochs=4,
        batch_size=128,
        lr=1e-2,
        train_limit=0,
    )
    for monitor, key, pick in [("val_loss", "loss", min), ("auto", "balanced_accuracy", max)]:
        run, summary = run_fit(tmp_path, cfg.replace(monitor=monitor))
        val = [r for r in run.metrics() if r["split"] == "val"]
        best = pick(val, key=lambda r: r[key])
        assert summary["monitor"] == ("val_balanced_accuracy" if monitor == "auto" else monitor)
        assert summary["best_epoch"] == best["epoch"]
        # the saved predictions are the best epoch's (the head best.safetensors holds), not the last epoch's
        preds = np.load(run.predictions / "val.npz")
        assert log_loss(labels=preds["labels"], probs=preds["probs"]) == pytest.approx(best["loss"], abs=1e-6)
        assert summary["best"]["balanced_accuracy"] == pytest.approx(best["balanced_accuracy"])


def test_validation_loss_is_the_log_loss_of_engine_metrics_even_for_a_confident_mistake():
    from engine.metrics import log_loss
    from engine.train.records import validation_record

    # the true class at 1e-12: a clip at 1e-7 would report -log(1e-7) = 16.1 instead of 27.6 for that item
    probs = np.array([[1e-12, 1.0, 0.0], [0.2, 0.5, 0.3]], np.float32)
    labels = np.array([0, 1])
    record = validation_record(
        1, 1, probs=probs, labels=labels, task="multiclass", positive=0, train_loss=1.0, lr=0.1, img_per_s=1.0
    )
    assert record["loss"] == pytest.approx(log_loss(labels=labels, probs=probs), abs=1e-9)
    assert record["loss"] == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2, rel=1e-6)
    multi = np.array([[1, 0], [0, 1]], np.uint8)
    record = validation_record(
        1, 1, probs=probs[:, :2], labels=multi, task="multilabel", positive=0, train_loss=1.0, lr=0.1, img_per_s=1.0
    )
    assert record["loss"] == pytest.approx(log_loss(labels=multi, probs=probs[:, :2], multilabel=True), abs=1e-9)


@pytest.mark.parametrize(
    "changes",
    [{}, dict(dataset="builtin:fashion-multilabel", image_size=28, train_limit=400)],
    ids=["multiclass", "multilabel"],
)
def test_train_page_val_loss_equals_the_evaluate_page_log_loss(tmp_path: Path, changes: dict):
    from engine.evaluate.report import evaluate_run
    from engine.metrics import log_loss

    run, summary = run_fit(tmp_path, tiny(**changes))
    best = next(r for r in run.metrics() if r["split"] == "val" and r["epoch"] == summary["best_epoch"])
    val = np.load(run.predictions / "val.npz")  # the best model's predictions, what Evaluate reads
    multilabel = val["labels"].ndim == 2
    assert multilabel == ("multilabel" in changes.get("dataset", ""))
    assert best["loss"] == pytest.approx(
        log_loss(labels=val["labels"], probs=val["probs"], multilabel=multilabel), abs=1e-6
    )
    assert best["loss"] == pytest.approx(evaluate_run(run, split="val", bootstrap=10)["log_loss"], abs=1e-6)


def test_lr_finder_sweeps_and_suggests_a_value_inside_the_range():
    from engine.train.lr_find import find_lr

    result = find_lr(tiny(batch_size=32), num_steps=40, start_lr=1e-5, end_lr=10.0)
    lrs, losses = result["lrs"], result["losses"]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-5) and len(losses) == len(lrs)
    assert 1e-5 <= result["suggested_lr"] <= 10.0
    assert min(losses) < losses[0]  # the loss does fall somewhere in the sweep


def test_kfold_trains_children_and_keeps_out_of_fold_probabilities(tmp_path: Path):
    run, summary = run_fit(tmp_path, tiny(kfold=3, epochs=1))
    children = sorted(p.name for p in (run.path / "folds").iterdir())
    assert children == ["fold1", "fold2", "fold3"]
    for c in children:
        assert Run(run.path / "folds" / c).raw_status()["state"] == "completed"
    oof = np.load(run.path / "predictions" / "oof.npz")
    test = np.load(run.path / "folds" / "fold1" / "predictions" / "test.npz")
    # every train+val image has exactly one held-out prediction; test images are never folded
    assert len(np.unique(oof["indices"])) == len(oof["indices"])
    assert not set(oof["indices"].tolist()) & set(test["indices"].tolist())
    assert len(oof["indices"]) + len(test["indices"]) == 1797
    cv = summary["cv"]["val"]["accuracy"]
    per_fold = [f["val"]["accuracy"] for f in summary["folds"]]
    assert cv["mean"] == pytest.approx(np.mean(per_fold)) and cv["std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert run.raw_status()["state"] == "completed"


def test_kfold_parent_and_children_train_on_one_decoded_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # test_vit's pretrained input is 160 px and digits are 8 px: with image_size 0 (the model's default) the
    # parent must decode at the size its children train at, not at the data's own size (a second decode pass)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(cache))
    run, summary = run_fit(tmp_path, tiny(model="test_vit", image_size=0, kfold=2, epochs=1, train_limit=64))
    children = [Run(run.path / "folds" / f"fold{k}") for k in (1, 2)]
    assert [c.raw_status()["state"] for c in children] == ["completed", "completed"]
    assert run.config()["image_size"] == 160
    assert [c.config()["image_size"] for c in children] == [160, 160]
    assert len(list(cache.rglob("images.npy"))) == 1  # one decode pass for the parent and both children
    assert summary["oof_images"] == len(np.load(run.path / "predictions" / "oof.npz")["indices"])


def test_yaml_config_round_trip_and_field_errors(tmp_path: Path):
    from engine.config import ConfigError

    path = tmp_path / "cfg.yaml"
    path.write_text("dataset: builtin:digits\nmodel: small_cnn\nepochs: 3\nlr: 0.01\nhflip: false\n")
    cfg = RunConfig.load(path)
    assert (cfg.epochs, cfg.lr, cfg.hflip) == (3, 0.01, False)
    (tmp_path / "c.json").write_text(json.dumps({"config": cfg.to_dict()}))  # a run's config.json
    assert RunConfig.load(tmp_path / "c.json") == cfg
    for bad, words in [
        ("epochs: 0", "'epochs' must be >= 1"),
        ("lr: 0", "'lr' must be > 0"),
        ("batch_size: 0", "'batch_size' must be >= 1"),
        ("image_size: 4", "'image_size' must be at least 8"),
        ("optimizer: lion", "'optimizer' must be one of"),
        ("colour: red", "Unknown config field"),
    ]:
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=words):
            RunConfig.load(path)


def test_compile_option_times_the_first_step_apart_and_saves_plain_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # aot_eager: dynamo traces and AOT-autograd splits the graph as with inductor, without its C++ build.
    monkeypatch.setenv("LOUPE_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    logs: list[str] = []
    cfg = tiny(compile=True, epochs=1, train_limit=500)
    run = prepare_run(cfg, tmp_path / "runs")
    summary = fit(cfg, run, log=logs.append)
    assert summary["compile_seconds"] > 0
    assert any("torch.compile: first step took" in str(m) for m in logs)
    # the compiled wrapper never reaches the checkpoint: keys load into a plain model
    keys = set(load_file(str(run.path / "checkpoints" / "best.safetensors")))
    assert keys and not any("_orig_mod" in k for k in keys)
    # the short last batch is dropped (a new shape would recompile), so each epoch has whole batches only
    n_train = run.config()["num_train"]
    assert run.raw_status()["step"] == n_train // 32
    assert summary["final"]["test"]["accuracy"] > 0.5


def test_evaluation_runs_in_larger_batches_with_the_same_probabilities():
    from engine.device import resolve_compute
    from engine.models.factory import build_model
    from engine.train.loop import DeviceData, eval_batch_size, predict_probs

    assert eval_batch_size(64) == 512 and eval_batch_size(1024) == 2048  # always above the training batch
    model, _ = build_model("small_cnn", 3, in_chans=1, allow_scratch=True, image_size=8)
    images = np.random.default_rng(0).integers(0, 256, (600, 8, 8, 1), dtype=np.uint8)
    data = DeviceData(images, np.zeros(600, np.int64), torch.device("cpu"), multilabel=False)
    compute = resolve_compute("cpu", "fp32", channels_last=True)
    idx = np.arange(600)
    small = predict_probs(model, data, idx, compute, multilabel=False, batch_size=7)
    large = predict_probs(model, data, idx, compute, multilabel=False, batch_size=eval_batch_size(64))
    np.testing.assert_allclose(small, large, atol=1e-5)  # eval mode: batch norm uses running statistics


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_patience_counts_only_the_epochs_after_the_warm_up(tmp_path: Path, scheduler: str):
    """Patience 1 ends the run at the first epoch after the warm-up (one-cycle: 30% of 10 epochs; cosine:
    warmup_epochs 3) that does not improve val, never at one inside it (issue 16: a planned 100-epoch
    one-cycle run stopped at epoch 18, the rate still rising). At this tiny rate only BatchNorm's statistics
    move the val figure; with this seed an epoch inside the warm-up repeats its predecessor's figure."""
    cfg = tiny(epochs=10, patience=1, lr=1e-9, scheduler=scheduler, warmup_epochs=3.0, monitor="val_balanced_accuracy")
    run, summary = run_fit(tmp_path, cfg)
    values = [r["balanced_accuracy"] for r in run.metrics() if r["split"] == "val"]
    best, expected, inside = -1.0, None, []
    for epoch, value in enumerate(values, start=1):
        if value > best:
            best = value
        elif epoch > 3:
            expected = epoch
            break
        else:
            inside.append(epoch)
    assert inside, values  # an epoch without improvement inside the warm-up did not stop the run
    assert summary["epochs_run"] == expected and summary["stopped_early"] == "patience", values


def test_ema_weights_are_what_validation_checkpoints_and_predictions_use_and_resume_keeps_them(tmp_path: Path):
    """`ema_decay`: the best checkpoint holds the moving average (not the raw weights, which `last` holds), the
    saved predictions are that average's (the Predictor, loading best, gives the same probabilities), and a
    run stopped mid-way and resumed ends with the same average as one trained straight through."""
    from engine.data import open_dataset
    from engine.data.pixels import to_tensor
    from engine.models.weights import read_safetensors
    from engine.predict.run_model import load_run_model, predict_tensor

    cfg = tiny(epochs=2, batch_size=16, train_limit=300, ema_decay=0.99, hflip=False)
    run, summary = run_fit(tmp_path / "a", cfg)
    best, last = read_safetensors(str(run.best_weights)), read_safetensors(str(run.last_weights))
    assert summary["best_epoch"] == 2  # the last epoch's average is the best: best and last differ only by EMA
    assert any(not torch.equal(best[k], last[k]) for k in best if k.endswith("weight"))
    with np.load(run.predictions / "test.npz") as z:
        ids, probs = z["indices"], z["probs"]
    ds = open_dataset("builtin:digits", image_size=8)
    again = predict_tensor(load_run_model(run), to_tensor(np.asarray(ds.images)[ids]))
    assert np.allclose(again, probs, atol=1e-5)  # the saved predictions are the best checkpoint's: the average's

    stopped = prepare_run(cfg, tmp_path / "b" / "runs")
    calls = {"n": 0}

    def stop_mid_epoch_2(done: int, total: int, stage: str) -> None:
        if stage == "training":
            calls["n"] += 1
            if calls["n"] == 26:
                stopped.request_stop()

    assert fit(cfg, stopped, log=lambda m: None, progress=stop_mid_epoch_2)["state"] == "stopped"
    fit(cfg, stopped, resume=True, log=lambda m: None)
    resumed = read_safetensors(str(stopped.best_weights))
    assert all(torch.allclose(resumed[k].float(), best[k].float(), atol=1e-6) for k in best)
    with pytest.raises(ConfigError, match="ema_decay"):
        tiny(model="tf_efficientnet_lite0", pretrained=True, strategy="linear_probe", ema_decay=0.99)

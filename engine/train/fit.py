"""`fit(config, run)`: train a model and write the run folder exactly as DESIGN.md's contract 2 says.

One state dict (model, optimiser, scheduler, epoch, position in the epoch, generator, best so far)
is saved as `last` after every epoch and on stop, so a stopped or killed run resumes where it was.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np
import torch

from engine.train import distributed
from engine.runs.checkpoint import load_state, load_weights, save_state, save_weights
from engine.config import RunConfig
from engine.train.imbalance import epoch_indices, make_loss
from engine.train.loop import DeviceData, TrainingFailed, eval_batch_size, predict_probs, train_one_epoch
from engine.models.factory import apply_strategy, set_train_mode
from engine.train.optim import make_optimizer, make_scheduler
from engine.runs.folder import Run, now_iso
from engine.train.records import improved, monitor_name, monitored_value, save_predictions, training_summary, validation_record
from engine.train.setup import TrainingSetup, prepared_run

HEARTBEAT_S = 1.0


def fit(cfg: RunConfig, run: Run, resume: bool = False, log: Callable[[str], None] = print,
        progress: Callable[[int, int, str], None] | None = None, setup: TrainingSetup | None = None) -> dict:
    """Train the whole model (every strategy but the linear probe) per `cfg` into `run`; returns the summary,
    or `{'state': 'stopped', ...}` when asked to stop. Raises `LoupeError` for user-fixable problems.

    `resume` continues from `run`'s last checkpoint. `setup`: data, model and device already prepared
    (by default prepared here, see `engine.train.setup.prepared_run`). `engine.train.run.run_training`
    is the entry point that picks this, the linear probe or k-fold cross-validation.
    """
    with prepared_run(cfg, run, log, progress, setup) as setup:
        return _fit_loop(cfg, run, setup, setup.dist, resume, setup.started, log, progress)


def _fit_loop(cfg: RunConfig, run: Run, s: TrainingSetup, dist, resume: bool, wall0: float, log, progress=None) -> dict:
    model, compute, ds = s.model, s.compute, s.ds
    trainable = apply_strategy(model, cfg.strategy)
    model = distributed.wrap(model, dist, compute.device, cfg.sync_bn, s.notes)
    step_model, compile_pending = _maybe_compile(model, cfg)
    loss_fn = make_loss(s.task, len(ds.classes), cfg, ds.labels[s.train_idx]).to(compute.device)
    optimizer = make_optimizer(trainable, cfg)
    per_rank_bs = max(1, cfg.batch_size // dist.world)
    epoch_len = len(epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng(0)))
    steps_per_epoch = math.ceil(math.ceil(epoch_len / dist.world) / per_rank_bs)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch, cfg.epochs)
    scaler = torch.amp.GradScaler("cuda") if compute.dtype is torch.float16 else None
    monitor = monitor_name(cfg, s.task)
    st = {"epoch": 0, "position": 0, "step": 0, "best_value": None, "best_epoch": None, "bad_epochs": 0,
          "batch_size": per_rank_bs, "train_seconds": 0.0, "train_images": 0, "compile_seconds": 0.0, "notes": []}
    gen = torch.Generator(device=compute.device)
    if resume:
        st = _restore(run, model, optimizer, scheduler, gen, st, log)
    data = DeviceData(ds.images, ds.labels, compute.device, s.task == "multilabel")
    total_steps = steps_per_epoch * cfg.epochs
    if dist.is_main:
        run.write_status(state="running", epochs=cfg.epochs, total_steps=total_steps, epoch=st["epoch"], step=st["step"])
    last_beat = [0.0]
    stop_reason = ""
    budget_t0 = time.time() - st["train_seconds"]

    def should_stop() -> str:
        reason = ""
        if dist.is_main:
            if run.stop_requested():
                reason = "stop"
            elif cfg.time_budget_s and time.time() - budget_t0 > cfg.time_budget_s:
                reason = "time"
        return distributed.broadcast_str(dist, reason, compute.device)

    while st["epoch"] < cfg.epochs:
        epoch = st["epoch"]
        order = epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng([cfg.seed, epoch]))
        order = order[dist.rank :: dist.world]
        if st["position"] == 0:
            gen.manual_seed(cfg.seed * 1000 + epoch * 10 + dist.rank)
        step0 = st["step"]

        def on_step(pos: int, loss: float, n: int) -> None:
            now = time.time()
            if progress is not None and dist.is_main:
                progress(step0 + math.ceil(pos / per_rank_bs), total_steps, "training")
            if dist.is_main and now - last_beat[0] >= HEARTBEAT_S:
                last_beat[0] = now
                step = step0 + math.ceil(pos / per_rank_bs)
                run.write_status(step=step, epoch=epoch, batch_loss=loss)
                # a throttled train record, so live curves move within an epoch, not only at its end
                run.append_metrics({"epoch": epoch + pos / len(order), "step": step, "split": "train", "loss": loss,
                                    "lr": optimizer.param_groups[0]["lr"], "time": now_iso()})

        set_train_mode(getattr(model, "module", model))
        res = train_one_epoch(step_model, data, order, cfg, loss_fn, optimizer, scheduler, compute, st["batch_size"],
                              start=st["position"], generator=gen, scaler=scaler, should_stop=should_stop,
                              on_step=on_step, max_sched_steps=total_steps, first_step_apart=compile_pending)
        if compile_pending and res.steps:
            compile_pending = False
            st["compile_seconds"] += res.first_step_seconds
            if dist.is_main:
                log(f"torch.compile: first step took {res.first_step_seconds:.1f} s (compilation; not counted as training time)")
        st["step"] += res.steps
        st["batch_size"] = res.batch_size
        st["notes"] += res.notes
        st["train_seconds"] += res.seconds
        st["train_images"] += res.images * dist.world
        train_loss = distributed.mean(dist, res.loss, compute.device) if res.images else None
        if res.stopped == "stop":
            st["position"] = res.position
            if dist.is_main:
                _save_last(run, model, optimizer, scheduler, gen, st)
                run.write_status(state="stopped", step=st["step"], epoch=epoch)
                run.clear_stop()
                log(f"stopped at epoch {epoch + 1}, step {st['step']}; resume continues from here")
            return {"state": "stopped", "epoch": epoch, "step": st["step"]}
        st["epoch"], st["position"] = epoch + 1, 0
        if dist.is_main:
            value = _validate(run, s, model, data, compute, epoch, st, train_loss, res, optimizer, monitor, log)
            if improved(value, st["best_value"], monitor):
                st.update(best_value=value, best_epoch=epoch + 1, bad_epochs=0)
                save_weights(model, run.best_weights)
            else:
                st["bad_epochs"] += 1
            _save_last(run, model, optimizer, scheduler, gen, st)
            run.write_status(state="running", epoch=st["epoch"], step=st["step"])
        stop_reason = res.stopped or ("patience" if cfg.patience and st["bad_epochs"] >= cfg.patience else "")
        stop_reason = distributed.broadcast_str(dist, stop_reason, compute.device)
        if stop_reason:
            log({"time": "time budget reached", "patience": f"early stopping: no improvement in {cfg.patience} epochs"}[stop_reason])
            break
    if not dist.is_main:
        return {}
    return _finish(cfg, run, s, model, data, compute, st, monitor, stop_reason, wall0, log)


def _maybe_compile(model: torch.nn.Module, cfg: RunConfig) -> tuple[torch.nn.Module, bool]:
    """The module the training steps call: `torch.compile(model)` when asked, else `model` itself.

    Only the training step is compiled; evaluation and checkpoints use the plain module, so saved
    weights carry no `_orig_mod.` prefix and validation never waits for a second (eval-mode) compile."""
    if not cfg.compile:
        return model, False
    # LOUPE_COMPILE_BACKEND picks another torch.compile backend (the tests use aot_eager: same tracing,
    # no C++ code generation, which takes 10-35 s on a 2-core CPU).
    return torch.compile(model, backend=os.environ.get("LOUPE_COMPILE_BACKEND", "inductor")), True


def _validate(run, s, model, data, compute, epoch, st, train_loss, res, optimizer, monitor, log) -> float | None:
    multilabel = s.task == "multilabel"
    probs = predict_probs(getattr(model, "module", model), data, s.ds.splits["val"], compute, multilabel,
                          batch_size=eval_batch_size(st["batch_size"]))
    record = validation_record(epoch + 1, st["step"], probs=probs, labels=s.ds.labels[s.ds.splits["val"]],
                               task=s.task, positive=s.positive, train_loss=train_loss,
                               lr=optimizer.param_groups[0]["lr"], img_per_s=res.img_per_s)
    run.append_metrics(record)
    log(f"epoch {epoch + 1}: train loss {train_loss:.4f}  val loss {record['loss']:.4f}  "
        f"val acc {record['accuracy']:.4f}  bal acc {record['balanced_accuracy']:.4f}  {res.img_per_s:.0f} img/s")
    return monitored_value(record, monitor)


def _save_last(run, model, optimizer, scheduler, gen, st) -> None:
    save_weights(model, run.last_weights)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": gen.get_state(), "trainer": {k: v for k, v in st.items()}}
    save_state(state, run.last_state)


def _restore(run, model, optimizer, scheduler, gen, st, log) -> dict:
    load_weights(model, run.last_weights)
    state = load_state(run.last_state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    st = {**st, **state["trainer"]}
    log(f"resuming at epoch {st['epoch'] + 1}, step {st['step']}")
    return st


def _finish(cfg, run, s, model, data, compute, st, monitor, stop_reason, wall0, log) -> dict:
    core = getattr(model, "module", model)
    best_path = run.best_weights
    if best_path.exists():
        load_weights(core, best_path)
    final = save_predictions(run, s, lambda idx: predict_probs(core, data, idx, compute, s.task == "multilabel",
                                                               batch_size=eval_batch_size(st["batch_size"])))
    summary = training_summary(
        s, monitor=monitor, final=final, best_epoch=st["best_epoch"], epochs_run=st["epoch"], steps=st["step"],
        wall_seconds=time.time() - wall0, train_seconds=st["train_seconds"], train_images=st["train_images"],
        notes=s.notes + st["notes"], stopped_early=stop_reason or None,
        compile_seconds=round(st["compile_seconds"], 2) if cfg.compile else None)
    run.write_summary(summary)
    run.write_status(state="completed", epoch=st["epoch"], step=st["step"])
    log(f"done: best epoch {st['best_epoch']}, " + ", ".join(f"{k} {v:.4f}" for k, v in final.get("test", final.get("val", {})).items() if isinstance(v, float)))
    return summary


"""`fit(cfg, run)`: train the whole model of one plain run and write its run folder (contract 2 in ARCHITECTURE.md).

A `Trainer` holds what the loop needs on `self`, as Lightning Fabric's example trainer does: the model
(DDP-wrapped under torchrun), the on-device data, loss, optimiser, schedule, generator and the
`TrainerState`. The steps themselves are `engine.train.loop`'s. After every epoch (and on a stop
request) the weights go to `last.safetensors` and the optimiser, scheduler, generator and
`TrainerState` to `last_state.pt`, so a stopped or killed run resumes exactly where it was.

This module knows nothing of k-fold or the linear probe: `engine.train.run.run_training` picks the mode.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from engine.config import RunConfig
from engine.models.classifier import apply_strategy, set_train_mode
from engine.runs.checkpoint import load_state, load_weights, save_state, save_weights
from engine.runs.folder import Run, now_iso
from engine.train import distributed
from engine.train.feed import open_data
from engine.train.imbalance import epoch_indices, make_loss
from engine.train.loop import DeviceData, EpochResult, eval_batch_size, predict_probs, train_one_epoch
from engine.train.optim import make_optimizer, make_scheduler, warmup_length
from engine.train.records import (
    improved,
    monitor_name,
    monitored_value,
    progress_line,
    save_pool_predictions,
    save_predictions,
    training_summary,
    validation_record,
)
from engine.train.setup import TrainingSetup, prepared_run
from engine.train.timing import Throughput, device_label, remember_throughput

HEARTBEAT_S = 1.0  # at most one status.json heartbeat (and one throttled train record) per second


#: status.json's `stop_reason` for a completed run that ended before its last epoch (ARCHITECTURE.md, contract 2)
STOP_REASONS = {"time": "time budget", "patience": "early stopping", "pruned": "pruned"}

#: called by rank 0 after each epoch's validation with (epoch 1-based, monitored figure); True asks the
#: trainer to end the run there (a sweep's pruner judged it hopeless): it completes with `stop_reason` "pruned"
EpochHook = Callable[[int, "float | None"], bool]


@dataclass
class TrainerState:
    """Where a plain run stands; saved as `trainer` in last_state.pt, so a resumed run goes on exactly."""

    epoch: int = 0  # epochs completed
    position: int = 0  # items of the current epoch's order already trained on (non-zero after a stop mid-epoch)
    step: int = 0  # optimiser steps so far, over all epochs
    best_value: float | None = None  # the monitored figure of the best epoch so far
    best_epoch: int | None = None  # 1-based
    bad_epochs: int = 0  # epochs since the best one (early stopping counts these)
    batch_size: int = 0  # per-process batch size now: cfg.batch_size / processes, halved on CUDA out-of-memory
    train_seconds: float = 0.0  # time in training steps: no validation, no checkpoints, no compilation
    train_images: int = 0  # images trained on, all processes together
    compile_seconds: float = 0.0  # torch.compile's first step, timed apart
    wall_seconds: float = 0.0  # wall time of the run's processes up to the last save (a resumed run goes on from it)
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. a halved batch size)

    def to_dict(self) -> dict[str, Any]:
        """Plain data only: last_state.pt is read back with `torch.load(weights_only=True)`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], default: TrainerState) -> TrainerState:
        """The state in `saved` (last_state.pt's `trainer`), as any version of Loupe wrote it: a key it
        lacks keeps `default`'s value (runs from before torch.compile support have no `compile_seconds`),
        a key this version does not know is ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(default, **{k: v for k, v in saved.items() if k in known})


def fit(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
    setup: TrainingSetup | None = None,
    epoch_hook: EpochHook | None = None,
    header: RunConfig | None = None,
) -> dict:
    """Train the whole model (every strategy but the linear probe) per `cfg` into `run`; returns the summary,
    or `{'state': 'stopped', ...}` when asked to stop. Raises `LoupeError` for user-fixable problems.

    `resume` continues from `run`'s last checkpoint. `setup`: data, model and device already prepared
    (by default prepared here, see `engine.train.setup.prepared_run`). `epoch_hook`: see `EpochHook`.
    `header`: the config config.json records, when it is not `cfg` (the head-first recipe's second phase
    records the config the user gave, which a resume runs again).
    """
    with prepared_run(cfg, run, log, progress, setup, header) as setup:
        return Trainer(cfg, run, setup, log, progress, epoch_hook).fit(resume)


def make_ema(model: torch.nn.Module, decay: float) -> ModelEmaV3 | None:
    """timm's ModelEmaV3 of `model` (None when `decay` is 0), with its warm-up: the decay used at step t is
    min(decay, 1 - (1 + t)^(-2/3)), so a short run's average is not dominated by its random start. timm's
    because it is the kept implementation (buffers averaged too, foreach updates)."""
    if not decay:
        return None
    return ModelEmaV3(model, decay=decay, use_warmup=True)


def _maybe_compile(model: torch.nn.Module, cfg: RunConfig) -> tuple[torch.nn.Module, bool]:
    """The module the training steps call: `torch.compile(model)` when asked, else `model` itself.

    Only the training step is compiled; evaluation and checkpoints use the plain module, so saved
    weights carry no `_orig_mod.` prefix and validation never waits for a second (eval-mode) compile."""
    if not cfg.compile:
        return model, False
    # LOUPE_COMPILE_BACKEND picks another torch.compile backend (the tests use aot_eager: same tracing,
    # no C++ code generation, which takes 10-35 s on a 2-core CPU).
    return torch.compile(model, backend=os.environ.get("LOUPE_COMPILE_BACKEND", "inductor")), True


@dataclass
class Segment:
    """What this process trained since it started or resumed: the live panel's speed and ETA count this,
    never the steps a stopped run had done before (status.json's `segment_start`, `segment_step`)."""

    start: float = 0.0  # time.time() when this process began training
    step: int = 0  # the run's step then
    images: int = 0  # images trained on since, all processes together
    seconds: float = 0.0  # training seconds of the epochs finished since (validation left out)
    epoch_t0: float | None = None  # perf_counter() when the epoch under way began

    def img_per_s(self) -> float | None:
        """Training images per second since `start` (steps only, as the epoch records count them)."""
        seconds = self.seconds + (time.perf_counter() - self.epoch_t0 if self.epoch_t0 is not None else 0.0)
        return round(self.images / seconds, 1) if self.images and seconds > 0 else None


class Trainer:
    """One plain run's training loop, with everything it needs on `self`.

    Under torchrun every process runs the loop on its share of each batch; only rank 0 validates,
    saves checkpoints and writes the run folder, and decisions to stop are broadcast from it."""

    def __init__(
        self,
        cfg: RunConfig,
        run: Run,
        setup: TrainingSetup,
        log: Callable[[str], None] = print,
        progress: Callable[[int, int, str], None] | None = None,
        epoch_hook: EpochHook | None = None,
    ) -> None:
        self.cfg, self.run, self.setup, self.log, self.progress = cfg, run, setup, log, progress
        self.epoch_hook = epoch_hook
        self.pruned = False  # the epoch hook asked to end the run after the last epoch
        self.dist, self.compute = setup.dist, setup.compute
        ds = setup.ds
        trainable = apply_strategy(setup.model, cfg.strategy)
        self.model = distributed.wrap(setup.model, self.dist, self.compute.device, cfg.sync_bn, setup.notes)
        self.step_model, self.compile_pending = _maybe_compile(self.model, cfg)
        self.loss_fn = make_loss(setup.task, len(ds.classes), cfg, ds.labels[setup.train_idx]).to(self.compute.device)
        self.optimizer = make_optimizer(trainable, cfg)
        # each process takes every world-th item of the epoch's order, with its share of the batch
        self.per_rank_batch = max(1, cfg.batch_size // self.dist.world)
        epoch_len = len(epoch_indices(ds.labels, setup.train_idx, cfg.imbalance, np.random.default_rng(0)))
        steps_per_epoch = math.ceil(math.ceil(epoch_len / self.dist.world) / self.per_rank_batch)
        self.total_steps = steps_per_epoch * cfg.epochs
        self.scheduler = make_scheduler(self.optimizer, cfg, steps_per_epoch, cfg.epochs)
        self.scaler = torch.amp.GradScaler("cuda") if self.compute.dtype is torch.float16 else None
        self.monitor = monitor_name(cfg, setup.task)
        self.generator = torch.Generator(device=self.compute.device)  # augmentation randomness, saved with `last`
        self.ema = make_ema(self.core, cfg.ema_decay)
        self.state = TrainerState(batch_size=self.per_rank_batch)
        noted = len(setup.notes)
        self.data = open_data(
            ds.images, ds.labels, self.compute.device, setup.multilabel, cfg.max_memory_gb, notes=setup.notes
        )
        if self.dist.is_main:
            for note in setup.notes[noted:]:  # streamed from disk: said once in the log, kept in the summary
                log(note)
        self.epoch_len = epoch_len  # items in one epoch's order, all processes together
        self.last_beat = 0.0  # time of the last heartbeat
        self.budget_t0 = time.time()  # the time budget counts training time, so a resumed run moves this back
        self.segment = Segment()  # what this process has trained so far (the live panel's speed and ETA)
        self.wall_before = 0.0  # wall seconds of the processes that trained this run before this one
        self.eval_images, self.eval_seconds = 0, 0.0  # validation passes, timed for the run's measured speeds

    @property
    def core(self) -> torch.nn.Module:
        """The plain model (no DDP wrapper): what validation, checkpoints and predictions use."""
        return getattr(self.model, "module", self.model)

    @property
    def scored(self) -> torch.nn.Module:
        """The model validation, the best checkpoint and the predictions use: the weights' moving average when
        `ema_decay` is set, else the plain model."""
        return self.ema.module if self.ema is not None else self.core

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # --- the loop ----------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        """Epochs until `cfg.epochs`, a stop request, the time budget or patience; then the best model's
        predictions and the summary (`{}` on ranks other than 0, `{'state': 'stopped', ...}` on a stop)."""
        if resume:
            self.restore()
        cfg, st, main = self.cfg, self.state, self.dist.is_main
        self.budget_t0 = time.time() - st.train_seconds
        self.segment = Segment(start=time.time(), step=st.step)
        if main:
            deadline = self.budget_t0 + cfg.time_budget_s if cfg.time_budget_s else None
            # the live panel's rates count from here: steps done before a stop are not this process's work
            self.run.write_status(
                state="running",
                epochs=cfg.epochs,
                total_steps=self.total_steps,
                epoch=st.epoch,
                step=st.step,
                segment_start=self.segment.start,
                segment_step=st.step,
                img_per_s=None,
                deadline=deadline,
                wall_before=round(self.wall_before, 2),
                active_since=self.setup.started,
            )
            if self.progress is not None:  # the bar starts where the run stands, so its rate counts new work only
                self.progress(self.images_done(st.epoch, st.position), self.total_images, "training")
        stop_reason = ""
        while st.epoch < cfg.epochs:
            epoch = st.epoch
            res = self.train_epoch(epoch)
            # every process joins this reduction, so it comes before any rank-0-only work
            train_loss = distributed.mean(self.dist, res.loss, self.compute.device) if res.images else None
            if res.stopped == "stop":
                return self.stop(epoch, res.position)
            st.epoch, st.position = epoch + 1, 0
            if main:
                self.end_epoch(epoch, train_loss, res)
            stop_reason = (
                res.stopped
                or ("pruned" if self.pruned else "")
                or ("patience" if cfg.patience and st.bad_epochs >= cfg.patience else "")
            )
            stop_reason = distributed.broadcast_str(self.dist, stop_reason, self.compute.device)
            if stop_reason:
                self.log(
                    {
                        "time": "time budget reached",
                        "patience": f"early stopping: no improvement in {cfg.patience} epochs",
                        "pruned": "pruned: the sweep's pruner ended this trial after this epoch",
                    }[stop_reason]
                )
                break
        if not main:
            return {}
        return self.finish(stop_reason)

    def should_stop(self) -> str:
        """'stop' (a STOP file), 'time' (the budget is spent) or ''; rank 0 decides for every process."""
        reason = ""
        if self.dist.is_main:
            if self.run.stop_requested():
                reason = "stop"
            elif self.cfg.time_budget_s and time.time() - self.budget_t0 > self.cfg.time_budget_s:
                reason = "time"
        return distributed.broadcast_str(self.dist, reason, self.compute.device)

    def train_epoch(self, epoch: int) -> EpochResult:
        """Train epoch `epoch` (0-based) from `state.position` on; the state counts its steps, images and time."""
        cfg, st, ds = self.cfg, self.state, self.setup.ds
        order = epoch_indices(ds.labels, self.setup.train_idx, cfg.imbalance, np.random.default_rng([cfg.seed, epoch]))
        order = order[self.dist.rank :: self.dist.world]
        if st.position == 0:  # a resumed epoch goes on with the generator state saved in `last`
            self.generator.manual_seed(cfg.seed * 1000 + epoch * 10 + self.dist.rank)
        step0, steps = st.step, 0  # `pos` below counts from the epoch's start, steps from this call's

        def on_step(pos: int, loss: float, n: int) -> None:
            nonlocal steps
            steps += 1
            self.segment.images += n * self.dist.world
            if self.ema is not None:
                self.ema.update(self.core, step=step0 + steps)
            self.heartbeat(epoch, step0 + steps, epoch + pos / len(order), loss, self.images_done(epoch, pos))

        set_train_mode(self.core)
        self.segment.epoch_t0 = time.perf_counter()
        res = train_one_epoch(
            self.step_model,
            self.data,
            order,
            cfg,
            self.loss_fn,
            self.optimizer,
            self.scheduler,
            self.compute,
            st.batch_size,
            start=st.position,
            generator=self.generator,
            scaler=self.scaler,
            should_stop=self.should_stop,
            on_step=on_step,
            max_sched_steps=self.total_steps,
            first_step_apart=self.compile_pending,
        )
        if self.compile_pending and res.steps:
            self.compile_pending = False
            st.compile_seconds += res.first_step_seconds
            if self.dist.is_main:
                self.log(
                    f"torch.compile: first step took {res.first_step_seconds:.1f} s "
                    "(compilation; not counted as training time)"
                )
        st.step += res.steps
        st.batch_size = res.batch_size
        st.notes += res.notes
        st.train_seconds += res.seconds
        st.train_images += res.images * self.dist.world
        self.segment.seconds += res.seconds
        self.segment.epoch_t0 = None
        return res

    @property
    def total_images(self) -> int:
        """Images the whole run trains on (all processes): what the progress bar counts."""
        return self.epoch_len * self.cfg.epochs

    def images_done(self, epoch: int, position: int) -> int:
        """Images trained on when epoch `epoch` (0-based) is at `position` of this process's order."""
        return epoch * self.epoch_len + min(self.epoch_len, position * self.dist.world)

    def heartbeat(self, epoch: int, step: int, progress_epochs: float, loss: float, images: int) -> None:
        """After each step: the progress bar (in images), and at most once a second status.json and a train record."""
        if not self.dist.is_main:
            return
        now = time.time()
        if self.progress is not None:
            self.progress(images, self.total_images, "training")
        if now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self.run.write_status(step=step, epoch=epoch, batch_loss=loss, img_per_s=self.segment.img_per_s())
            # a throttled train record, so live curves move within an epoch, not only at its end
            self.run.append_metrics(
                {
                    "epoch": progress_epochs,
                    "step": step,
                    "split": "train",
                    "loss": loss,
                    "lr": self.lr,
                    "time": now_iso(),
                }
            )

    def end_epoch(self, epoch: int, train_loss: float | None, res: EpochResult) -> None:
        """Rank 0 after epoch `epoch` (0-based): validate, keep the best weights, save `last`."""
        st = self.state
        value = self.validate(epoch, train_loss, res)
        if self.epoch_hook is not None:  # every epoch is reported; a prune after the last one changes nothing
            self.pruned = bool(self.epoch_hook(epoch + 1, value)) and epoch + 1 < self.cfg.epochs
        if improved(value, st.best_value, self.monitor):
            st.best_value, st.best_epoch, st.bad_epochs = value, epoch + 1, 0
            save_weights(self.scored, self.run.best_weights)
        elif epoch + 1 > warmup_length(self.cfg, self.cfg.epochs):  # patience counts after the warm-up only
            st.bad_epochs += 1
        self.save_last()
        self.run.write_status(state="running", epoch=st.epoch, step=st.step)

    def validate(self, epoch: int, train_loss: float | None, res: EpochResult) -> float | None:
        """Append the validation record of epoch `epoch` (0-based) to metrics.jsonl; returns the monitored figure."""
        ds = self.setup.ds
        t0 = time.perf_counter()
        probs = predict_probs(
            self.scored,
            self.data,
            ds.splits["val"],
            self.compute,
            self.setup.multilabel,
            batch_size=eval_batch_size(self.state.batch_size),
            tta_hflip=self.cfg.tta_hflip,
        )
        self.eval_seconds += time.perf_counter() - t0
        self.eval_images += len(probs)
        record = validation_record(
            epoch + 1,
            self.state.step,
            probs=probs,
            labels=ds.labels[ds.splits["val"]],
            task=self.setup.task,
            positive=self.setup.positive,
            train_loss=train_loss,
            lr=self.lr,
            img_per_s=res.img_per_s,
        )
        self.run.append_metrics(record)
        self.log(progress_line(epoch + 1, train_loss, record, self.setup.task, res.img_per_s))
        return monitored_value(record, self.monitor)

    def stop(self, epoch: int, position: int) -> dict:
        """A STOP request mid-epoch: save `last` at this exact position, so a resume goes on from here."""
        st = self.state
        st.position = position
        if self.dist.is_main:
            self.save_last()
            self.run.write_status(
                state="stopped", step=st.step, epoch=epoch, wall_before=round(st.wall_seconds, 2), active_since=None
            )
            self.run.clear_stop()
            self.log(f"stopped at epoch {epoch + 1}, step {st.step}; resume continues from here")
        return {"state": "stopped", "epoch": epoch, "step": st.step}

    def finish(self, stop_reason: str) -> dict:
        """The best weights' predictions (predictions/*.npz), summary.json and status `completed`."""
        st, setup = self.state, self.setup
        if self.run.best_weights.exists():
            load_weights(self.scored, self.run.best_weights)
        final = save_predictions(
            self.run,
            setup,
            lambda idx: predict_probs(
                self.scored,
                self.data,
                idx,
                self.compute,
                setup.multilabel,
                batch_size=eval_batch_size(st.batch_size),
                tta_hflip=self.cfg.tta_hflip,
            ),
        )
        pool_images = save_pool_predictions(
            self.run,
            setup,
            lambda images: predict_probs(
                self.scored,
                DeviceData(images, np.zeros(len(images), np.int64), self.compute.device, False),
                np.arange(len(images)),
                self.compute,
                setup.multilabel,
                batch_size=eval_batch_size(st.batch_size),
            ),
        )
        summary = training_summary(
            setup,
            monitor=self.monitor,
            final=final,
            best_epoch=st.best_epoch,
            epochs_run=st.epoch,
            steps=st.step,
            wall_seconds=self.wall_before + time.time() - setup.started,
            train_seconds=st.train_seconds,
            train_images=st.train_images,
            notes=setup.notes + st.notes,
            stopped_early=stop_reason or None,
            compile_seconds=round(st.compile_seconds, 2) if self.cfg.compile else None,
            pool_images=pool_images or None,
        )
        self.run.write_summary(summary)
        # a run its time budget ended is completed but says so (`stop_reason`), in every listing of it
        self.run.write_status(
            state="completed", epoch=st.epoch, step=st.step, stop_reason=STOP_REASONS.get(stop_reason)
        )
        self.remember_speed()
        split = "test" if "test" in final else "val"
        shown = final.get(split, {})
        budget = (
            f" (the time budget of {self.cfg.time_budget_s:g} s ended it after {st.epoch} of {self.cfg.epochs} epochs)"
            if stop_reason == "time"
            else ""
        )
        self.log(
            f"done: best epoch {st.best_epoch}{budget}; {split} figures of the best model: "
            + ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if isinstance(v, float))
        )
        return summary

    def remember_speed(self) -> None:
        """This run's measured training and validation speeds become the time estimate's figures for its
        configuration (`engine.train.timing`): a whole run says more than the probe's few steps. Not for
        DDP or compiled runs, which the one-process, uncompiled probe does not describe."""
        st = self.state
        if self.cfg.compile or self.dist.world > 1 or not st.train_seconds or not self.eval_seconds:
            return
        ds = self.setup.ds
        tp = Throughput(
            train_img_per_s=round(st.train_images / st.train_seconds, 2),
            eval_img_per_s=round(self.eval_images / self.eval_seconds, 2),
            device=device_label(self.compute),
            probe_seconds=0.0,
            measured_at=time.time(),
            source=f"run {self.run.id}",
        )
        remember_throughput(self.cfg, ds.image_size, ds.channels, self.setup.multilabel, tp)

    # --- checkpoints -------------------------------------------------------------------------------

    def save_last(self) -> None:
        """`last`: the weights, and everything else a resume needs (optimiser, schedule, generator, state)."""
        self.state.wall_seconds = self.wall_before + time.time() - self.setup.started
        save_weights(self.model, self.run.last_weights)
        save_state(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "trainer": self.state.to_dict(),
                **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
            },
            self.run.last_state,
        )

    def restore(self) -> None:
        """Load `last` (see `save_last`) to go on where the run stopped or crashed."""
        load_weights(self.model, self.run.last_weights)
        saved = load_state(self.run.last_state)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        if self.ema is not None and "ema" in saved:  # a run saved before EMA was on starts its average here
            self.ema.module.load_state_dict(saved["ema"])
        self.state = TrainerState.from_dict(saved["trainer"], default=self.state)
        self.wall_before = self.state.wall_seconds
        self.log(f"resuming at epoch {self.state.epoch + 1}, step {self.state.step}")

"""How long a run will take on this device, before it starts: a short timed probe and the plan it implies.

`measure_throughput` times a few real training steps (gather-free: a random uint8 batch of the run's
shape, through the engine's own augmentation, forward, loss, backward and optimiser step) and a few
forward passes of the configured model at the configured batch size, precision and memory format, on
the device the run will use. The result is cached per (model, size, channels, batch, strategy, device,
precision, memory format, compute threads) in the cache folder, so the Train page and the CLI pay for it once.

`estimate_run(cfg, stats)` turns that speed into the plan: images per epoch (the training split, the
train limit and the imbalance mode's epoch length) over the training speed, plus one validation pass
over the evaluation speed, times the epochs (and folds), capped by the time budget. It is a plan, not a
promise: the machine's load changes, and the first epoch of a timm model also pays for loading weights.
Issue 16's time-aware defaults (`engine.train.recipes.plan_epochs`) plan epochs with `Estimate.epochs_within`.
`LOUPE_PROBE_SECONDS` (default 2) sets how long training steps (and then forward passes) are timed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.config import RunConfig
from engine.data.cache import cache_dir
from engine.data.decode import GRAY_MODES
from engine.data.pixels import to_tensor
from engine.device import Compute, compute_threads, configure_threads, cpu_supports_bf16, resolve_compute
from engine.env import env_float
from engine.models import factory
from engine.models.classifier import apply_strategy, set_train_mode
from engine.runs.folder import StorageError, atomic_write_json
from engine.train.augment import augment_batch
from engine.train.imbalance import make_loss
from engine.train.optim import make_optimizer
from engine.train.setup import image_size_for

TIMING_VERSION = 3  # bump when the probe measures something else, so old figures are not reused (2: threads;
# 3: a linear probe is timed as its head-first fine-tune)
PROBE_SECONDS = 2.0  # timed training steps stop after this long (at least MIN_STEPS of them); LOUPE_PROBE_SECONDS
MIN_STEPS, MAX_STEPS = 3, 8
CPU_WARN_S = 300.0  # a run planned longer than this on a CPU gets a warning on the Train page
MAX_AGE_S = 24 * 3600.0  # older figures are measured again: the machine's load and software change


@dataclass(frozen=True)
class Throughput:
    """Measured speeds of one model configuration on one device (images per second)."""

    train_img_per_s: float  # training steps: augmentation, forward, backward, optimiser step
    eval_img_per_s: float  # inference-mode forward passes (validation, predictions)
    device: str  # the device the figures were measured on, for people ("CPU (2 cores, bf16 no) fp32")
    probe_seconds: float  # how long the probe took
    cached: bool = False  # read from the cache folder, not measured now
    measured_at: float = 0.0  # time.time() of the measurement
    source: str = "probe"  # "probe", or "run <id>": a finished run's own figures replace the probe's

    def describe(self) -> str:
        """'2,050 img/s training, 6,100 img/s evaluation (measured by a probe 5 min ago)'."""
        by = "a probe" if self.source == "probe" else self.source
        when = f" {duration(time.time() - self.measured_at)} ago" if self.measured_at and self.cached else ""
        return (
            f"{self.train_img_per_s:,.0f} img/s training, {self.eval_img_per_s:,.0f} img/s evaluation "
            f"(measured by {by}{when})"
        )


@dataclass(frozen=True)
class Estimate:
    """A run's plan on this device: time per epoch and in total, from a `Throughput` and the data's size."""

    train_images: int  # images trained on per epoch (after the train limit and the imbalance mode)
    val_images: int  # images validated after every epoch
    final_images: int  # images predicted once at the end (validation and test, with the best weights)
    epochs: int  # epochs planned (per fold)
    folds: int  # 1, or k for k-fold cross-validation
    steps_per_epoch: int
    train_seconds_per_epoch: float
    val_seconds_per_epoch: float
    total_seconds: float  # every epoch of every fold, the final predictions, capped by the time budget
    budget_s: float  # the run's time budget (0: none)
    throughput: Throughput
    linear_probe: bool = False  # features computed once, then a head that trains in seconds
    finetune_epochs: int = 0  # a linear probe's head-first fine-tune: epochs of the last stage after the head

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds_per_epoch + self.val_seconds_per_epoch

    @property
    def capped_by_budget(self) -> bool:
        """Whether the time budget ends the run before its planned epochs."""
        return bool(self.budget_s) and self.folds * self.epochs * self.seconds_per_epoch > self.budget_s

    @property
    def on_cpu(self) -> bool:
        return self.throughput.device.lower().startswith("cpu")

    @property
    def too_long_for_cpu(self) -> bool:
        """A CPU run planned to take more than a few minutes (the Train page warns)."""
        return self.on_cpu and self.total_seconds > CPU_WARN_S

    def epochs_within(self, budget_s: float) -> int:
        """How many epochs fit in `budget_s` seconds (at least 1): what time-aware defaults plan with."""
        final = self.final_images / self.throughput.eval_img_per_s
        per_fold = max(0.0, budget_s / self.folds - final)
        return max(1, int(per_fold / self.seconds_per_epoch + 1e-9)) if self.seconds_per_epoch > 0 else 1

    def describe(self) -> str:
        """One line for people: 'about 12 s per epoch, 2.5 min in total on this CPU'."""
        where = "this CPU" if self.on_cpu else "this GPU"
        if self.linear_probe:
            then = f", then {self.finetune_epochs} epochs of fine-tuning" if self.finetune_epochs else ""
            return f"about {duration(self.total_seconds)} in total on {where} (features computed once, then the head{then})"
        text = f"about {duration(self.seconds_per_epoch)} per epoch, {duration(self.total_seconds)} in total on {where}"
        if self.folds > 1:
            text += f" ({self.folds} folds)"
        if self.capped_by_budget:
            text += f"; {self.budget_note()}"
        return text

    def budget_note(self) -> str:
        """Where the time budget ends a run it caps: 'the time budget (1.9 min) ends it after about 4 of 15
        epochs', or '... part-way through the first epoch (about 13% of it)'."""
        if not self.capped_by_budget:
            return ""
        epochs = self.budget_s / self.folds / self.seconds_per_epoch
        where = (
            f"after about {int(epochs)} of {self.epochs} epochs"
            if epochs >= 1
            else f"part-way through the first epoch (about {epochs:.0%} of it)"
        )
        return f"the time budget ({duration(self.budget_s)}) ends it {where}"


def duration(seconds: float) -> str:
    """Seconds for people: '45 s', '2.5 min', '1.2 h'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- the probe -------------------------------------------------------------------------------------------


def device_label(compute: Compute) -> str:
    """The device as the cache keys it and people read it: the CPU's cores, or the GPU's name."""
    if compute.device.type == "cuda":
        index = compute.device.index if compute.device.index is not None else torch.cuda.current_device()
        where = f"GPU {torch.cuda.get_device_name(index)}"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        where = f"CPU ({cores} cores, bf16 {'yes' if cpu_supports_bf16() else 'no'})"
    return f"{where} {compute.name.split(' ', 1)[1]}"


def timed_strategy(strategy: str) -> str:
    """The strategy the probe times for `strategy`. A linear probe is timed as its head-first fine-tune
    (`engine.train.head_first`): the same forward pass is its features' speed, and the last stage's training
    step is the fine-tune's, so one probe plans both (`recipes.plan_finetune`)."""
    return "finetune_last" if strategy == "linear_probe" else strategy


def probe_key(cfg: RunConfig, image_size: int, channels: int, compute: Compute) -> dict:
    """What the measured speed depends on (and so what its cache entry is keyed by)."""
    return {
        "version": TIMING_VERSION,
        "model": cfg.model,
        "image_size": int(image_size),
        "channels": int(channels),
        "batch_size": int(cfg.batch_size),
        "strategy": timed_strategy(cfg.strategy),
        "head": cfg.head,
        "device": device_label(compute),
        "threads": compute_threads() if compute.device.type == "cpu" else 0,
        "torch": torch.__version__,
    }


def _key(cfg: RunConfig, image_size: int, channels: int, multilabel: bool) -> dict:
    compute = resolve_compute(cfg.device, cfg.precision, cfg.channels_last)
    return {**probe_key(cfg, image_size, channels, compute), "multilabel": multilabel}


def _cache_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "timing" / f"{digest}.json"


def measure_throughput(
    cfg: RunConfig, image_size: int, channels: int, num_classes: int, multilabel: bool = False, refresh: bool = False
) -> Throughput:
    """Training and evaluation images/s of `cfg`'s model at `image_size` px x `channels`, batch size,
    strategy, precision and memory format, on `cfg.device`: cached, or measured now (a few seconds).

    The global RNG is left as it was (the model is built under `torch.random.fork_rng`), and so is
    the thread count, so the app process that calls this is not changed by it."""
    compute = resolve_compute(cfg.device, cfg.precision, cfg.channels_last)
    saved = None if refresh else cached_throughput(cfg, image_size, channels, multilabel)
    if saved is not None:
        return saved
    threads = torch.get_num_threads()
    try:
        if compute.device.type == "cpu":
            configure_threads()  # the training job computes on every allowed core: time it that way
        with torch.random.fork_rng(devices=[]):
            tp = _probe(cfg, image_size, channels, num_classes, multilabel, compute, device_label(compute))
    finally:
        torch.set_num_threads(threads)
    remember_throughput(cfg, image_size, channels, multilabel, tp)
    return tp


def cached_throughput(cfg: RunConfig, image_size: int, channels: int, multilabel: bool = False) -> Throughput | None:
    """The figures `measure_throughput` saved for this configuration, or None (nothing is measured)."""
    key = _key(cfg, image_size, channels, multilabel)
    try:
        saved = json.loads(_cache_file(key).read_text())
        if saved.get("key") == key:
            tp = Throughput(**{**saved["throughput"], "cached": True})
            if time.time() - tp.measured_at < MAX_AGE_S:
                return tp
    except (OSError, ValueError, TypeError):
        pass  # missing, damaged or old: measured again
    return None


def remember_throughput(cfg: RunConfig, image_size: int, channels: int, multilabel: bool, tp: Throughput) -> None:
    """Save `tp` as the figures of this configuration (a probe's, or a finished run's own, which replace
    the probe's: a whole run on this machine says more than a few timed steps)."""
    key = _key(cfg, image_size, channels, multilabel)
    try:
        atomic_write_json(
            _cache_file(key), {"key": key, "throughput": {k: v for k, v in asdict(tp).items() if k != "cached"}}
        )
    except StorageError:
        pass  # a read-only or full cache only means the next estimate measures again


def _sync(compute: Compute) -> None:
    if compute.device.type == "cuda":
        torch.cuda.synchronize(compute.device)


def _probe(
    cfg: RunConfig, size: int, channels: int, num_classes: int, multilabel: bool, compute: Compute, device: str
) -> Throughput:
    """Time real training steps and forward passes on random pixels of the run's shape."""
    t_start = time.perf_counter()
    torch.manual_seed(0)
    # speed does not depend on the weights' values: no pretrained file is read
    model, _ = factory.build_model(
        cfg.model,
        num_classes,
        in_chans=channels,
        pretrained=False,
        allow_scratch=True,
        head=cfg.head,
        dropout=cfg.dropout,
        image_size=size,
    )
    model = model.to(compute.device)
    if compute.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = apply_strategy(model, timed_strategy(cfg.strategy))
    optimizer = make_optimizer(params, cfg)
    task = "multilabel" if multilabel else "multiclass"
    labels = np.arange(max(2, cfg.batch_size)) % max(2, num_classes)
    loss_fn = make_loss(task, num_classes, cfg, labels).to(compute.device)
    gen = torch.Generator(device=compute.device).manual_seed(0)
    pixels = torch.randint(
        0, 256, (cfg.batch_size, size, size, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    if task == "multilabel":
        target = torch.zeros(cfg.batch_size, num_classes)
        target[torch.arange(cfg.batch_size), torch.from_numpy(labels[: cfg.batch_size] % num_classes)] = 1.0
    else:
        target = torch.from_numpy(labels[: cfg.batch_size] % num_classes).long()
    target = target.to(compute.device)

    def batch() -> torch.Tensor:
        x = to_tensor(pixels.to(compute.device))  # float NCHW in [0, 1], channels_last storage
        return x if compute.channels_last else x.contiguous()

    def train_step() -> None:
        x = augment_batch(batch(), cfg, gen)
        with compute.autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    set_train_mode(model)
    train_img_per_s = _timed(train_step, cfg.batch_size, compute)
    model.eval()

    @torch.inference_mode()
    def eval_step() -> None:
        with compute.autocast():
            model(batch())

    eval_img_per_s = _timed(eval_step, cfg.batch_size, compute)
    return Throughput(
        train_img_per_s=round(train_img_per_s, 2),
        eval_img_per_s=round(eval_img_per_s, 2),
        device=device,
        probe_seconds=round(time.perf_counter() - t_start, 2),
        measured_at=time.time(),
    )


def _timed(step, batch_size: int, compute: Compute) -> float:
    """Images/s of `step` (one batch each): one untimed warm-up call, then MIN_STEPS..MAX_STEPS timed
    calls, stopping once PROBE_SECONDS have passed. The median step counts, so a moment of load from
    another process (a shared machine) does not decide the figure."""
    step()  # warm-up: allocations, kernel choice, lazy initialisation
    _sync(compute)
    times: list[float] = []
    seconds = env_float("LOUPE_PROBE_SECONDS", PROBE_SECONDS)  # the test suite sets it short
    t0 = time.perf_counter()
    while len(times) < MIN_STEPS or (len(times) < MAX_STEPS and time.perf_counter() - t0 < seconds):
        t = time.perf_counter()
        step()
        _sync(compute)
        times.append(time.perf_counter() - t)
    return batch_size / max(1e-9, float(np.median(times)))


# --- the plan ------------------------------------------------------------------------------------------------


def planned_shape(cfg: RunConfig, stats: dict) -> tuple[int, int]:
    """(image size, channels) the run will train at: the config's size (or the model's pretrained
    size), else the data's typical short side capped at 64 (as `engine.data` chooses); grayscale
    data trains on one channel."""
    size = image_size_for(cfg)
    if not size:
        images = stats.get("images", {})
        short = min((images.get("width") or {}).get("mean") or 64, (images.get("height") or {}).get("mean") or 64)
        size = int(min(64, round(short)))
    modes = set((stats.get("images", {}).get("modes") or {}).keys())
    channels = 1 if modes and modes <= GRAY_MODES else 3
    return int(size), channels


def planned_images(cfg: RunConfig, stats: dict) -> tuple[int, int, int]:
    """(training images per epoch, validation images, test images) for `cfg` on data with `stats`.

    From `stats`' split counts (quick_stats splits with the default fractions; other fractions are
    applied to the total, approximately), the train limit, and the imbalance mode's epoch length
    (oversampling repeats the minority up to the majority count; undersampling cuts to the minority's)."""
    splits = stats.get("splits") or {}
    n_train = (splits.get("train") or {}).get("num_images") or 0
    n_val = (splits.get("val") or {}).get("num_images") or 0
    n_test = (splits.get("test") or {}).get("num_images") or 0
    default = RunConfig()
    if (cfg.val_fraction, cfg.test_fraction) != (default.val_fraction, default.test_fraction):
        total = n_train + n_val + n_test or stats.get("num_images", 0)
        n_val = round(total * cfg.val_fraction)
        n_test = round(total * cfg.test_fraction)
        n_train = total - n_val - n_test
    counts = [c for c in ((splits.get("train") or {}).get("class_counts") or {}).values() if c]
    if cfg.train_limit and cfg.train_limit < n_train:
        counts = [c * cfg.train_limit / n_train for c in counts]
        n_train = cfg.train_limit
    per_epoch = n_train
    if counts and stats.get("task") != "multilabel":
        if cfg.imbalance == "oversample":
            per_epoch = round(len(counts) * max(counts))
        elif cfg.imbalance == "undersample":
            per_epoch = round(len(counts) * min(counts))
    return int(per_epoch), int(n_val), int(n_test)


def estimate_run(cfg: RunConfig, stats: dict, throughput: Throughput | None = None) -> Estimate:
    """The plan of `cfg` on the data described by `stats` (from `engine.data.quick_stats`) on this device:
    `throughput` (measured with `measure_throughput` when not given) times the images of each stage."""
    size, channels = planned_shape(cfg, stats)
    num_classes = max(2, len(stats.get("classes") or []))
    multilabel = (cfg.task if cfg.task != "auto" else stats.get("task")) == "multilabel"
    tp = throughput or measure_throughput(cfg, size, channels, num_classes, multilabel)
    per_epoch, n_val, n_test = planned_images(cfg, stats)
    folds = cfg.kfold if cfg.kfold >= 2 else 1
    train_s = per_epoch / tp.train_img_per_s
    val_s = n_val / tp.eval_img_per_s
    final_s = (n_val + n_test) / tp.eval_img_per_s
    probe = cfg.strategy == "linear_probe"
    if probe:  # the backbone runs once over every image; the head's epochs take seconds
        loop_s = (per_epoch + n_val + n_test) / tp.eval_img_per_s
        # then the head-first fine-tune's epochs (`timed_strategy`: the probe timed them), within the budget
        loop_s += cfg.finetune_epochs * (train_s + val_s)
        if cfg.finetune_epochs and cfg.time_budget_s:
            loop_s = min(loop_s, cfg.time_budget_s)
        train_s, val_s = 0.0, 0.0
    else:
        loop_s = cfg.epochs * (train_s + val_s)
        if cfg.time_budget_s:
            loop_s = min(loop_s, cfg.time_budget_s + val_s)  # the budget ends it after the epoch under way's step
    total = folds * (loop_s + final_s)
    return Estimate(
        train_images=per_epoch,
        val_images=n_val,
        final_images=n_val + n_test,
        epochs=cfg.epochs,
        folds=folds,
        steps_per_epoch=math.ceil(per_epoch / cfg.batch_size) if per_epoch else 0,
        train_seconds_per_epoch=train_s,
        val_seconds_per_epoch=val_s,
        total_seconds=total,
        budget_s=cfg.time_budget_s,
        throughput=tp,
        linear_probe=probe,
        finetune_epochs=cfg.finetune_epochs if probe else 0,
    )

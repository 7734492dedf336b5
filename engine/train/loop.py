"""One epoch of training and one pass of prediction, over uint8 data in memory (or on the GPU) or streamed
from the decoded cache on disk (`engine.train.feed`).

Modelled on torchvision's classification reference (`train_one_epoch` / `evaluate`) and airbench:
batches are gathered by index from a uint8 tensor and augmented as tensor ops on the device, so an
epoch never touches image files and there are no DataLoader workers to feed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.config import RunConfig
from engine.data.pixels import to_tensor
from engine.device import Compute
from engine.errors import LoupeError
from engine.models.classifier import tta_probs
from engine.train.augment import augment_batch


class TrainingFailed(LoupeError):
    """Training cannot go on (non-finite loss, ...); the run ends `failed` with this message."""


class DeviceData:
    """The decoded dataset as one uint8 NHWC tensor, on the GPU when it fits, else in (pinned) RAM."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, multilabel: bool) -> None:
        tensor = torch.from_numpy(np.array(images))  # one read of the memmap, into writable memory
        self.device = device
        if device.type == "cuda":
            try:
                tensor = tensor.to(device)
            except torch.cuda.OutOfMemoryError:
                tensor = tensor.pin_memory()  # too big for the GPU: stream batches with non_blocking copies
        self.images = tensor
        self.labels = torch.from_numpy(labels.astype(np.float32 if multilabel else np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def prefetch(self, upcoming: list[np.ndarray]) -> None:
        """The batches that come next, in order: nothing to read ahead here (`engine.train.feed.StreamedData`
        reads them from disk in the background)."""

    def batch(self, idx: np.ndarray, channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Float NCHW in [0, 1] (channels_last memory: the NHWC storage permuted) and the targets."""
        where = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        x = self.images.index_select(0, where.to(self.images.device)).to(self.device, non_blocking=True)
        x = to_tensor(x)
        if not channels_last:
            x = x.contiguous()
        return x, self.labels[where].to(self.device, non_blocking=True)


@dataclass
class EpochResult:
    loss: float = 0.0
    images: int = 0
    seconds: float = 0.0
    steps: int = 0
    position: int = 0  # items of this epoch's order consumed (resume point when stopped)
    stopped: str = ""  # '' | 'stop' | 'time'
    batch_size: int = 0
    first_step_seconds: float = 0.0  # timed apart (and left out of `seconds`) when it includes compilation
    notes: list[str] = field(default_factory=list)

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    model: torch.nn.Module,
    data: DeviceData,
    order: np.ndarray,
    cfg: RunConfig,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    compute: Compute,
    batch_size: int,
    start: int = 0,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    should_stop: Callable[[], str] = lambda: "",
    on_step: Callable[[int, float, int], None] = lambda pos, loss, n: None,
    max_sched_steps: int | None = None,
    first_step_apart: bool = False,
) -> EpochResult:
    """Train over `order[start:]` in batches; checks `should_stop()` before every batch (Fabric-style).

    On CUDA out-of-memory the batch size is halved and the same batch retried, recorded in `notes`.
    `first_step_apart`: the first step compiles the model (torch.compile), so its time is reported in
    `first_step_seconds` and not counted in `seconds` or images/s.
    """
    res = EpochResult(position=start, batch_size=batch_size)
    t0 = time.perf_counter()
    total_loss = 0.0
    pos = start
    while pos < len(order):
        reason = should_stop()
        if reason:
            res.stopped = reason
            break
        idx = order[pos : pos + batch_size]
        if cfg.compile and len(idx) < batch_size and res.images + start > 0:
            res.position = len(order)  # a compiled model recompiles for a new batch shape: drop the short last batch
            break
        data.prefetch([order[p : p + batch_size] for p in range(pos + batch_size, len(order), batch_size)[:2]])
        t_step = time.perf_counter()
        try:
            loss = train_step(model, data, idx, cfg, loss_fn, optimizer, compute, generator, scaler)
        except torch.cuda.OutOfMemoryError:
            if batch_size <= 1:
                raise TrainingFailed(
                    "CUDA ran out of memory even at batch size 1; use a smaller model or image size."
                ) from None
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch_size //= 2
            res.notes.append(f"CUDA out of memory: batch size halved to {batch_size}.")
            continue
        if not math.isfinite(loss):
            raise TrainingFailed(
                f"The training loss became {loss} at step {res.steps + 1} of this epoch; lower the learning rate "
                "(see the LR finder) or enable gradient clipping."
            )
        if first_step_apart and res.steps == 0:
            res.first_step_seconds = time.perf_counter() - t_step
        if max_sched_steps is None or scheduler.last_epoch < max_sched_steps:
            scheduler.step()
        n = len(idx)
        total_loss += loss * n
        res.images += n
        res.steps += 1
        pos += n
        res.position = pos
        on_step(pos, loss, n)
    res.seconds = time.perf_counter() - t0 - res.first_step_seconds
    res.loss = total_loss / res.images if res.images else float("nan")
    res.batch_size = batch_size
    return res


def train_step(
    model: torch.nn.Module,
    data: DeviceData,
    idx: np.ndarray,
    cfg: RunConfig,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    compute: Compute,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimisation step on the items `idx`: gather, augment, forward, backward, (clip), update."""
    x, y = data.batch(idx, compute.channels_last)
    x = augment_batch(x, cfg, generator)
    with compute.autocast():
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach())


def eval_batch_size(train_batch: int) -> int:
    """Evaluation keeps no activations for a backward pass, so it runs in batches twice the training
    batch (at least 512): fewer, fuller launches for the same memory."""
    return max(512, 2 * train_batch)


@torch.inference_mode()
def predict_probs(
    model: torch.nn.Module,
    data: DeviceData,
    indices: np.ndarray,
    compute: Compute,
    multilabel: bool,
    batch_size: int = 512,
    tta_hflip: bool = False,
) -> np.ndarray:
    """(len(indices), C) float32 probabilities: softmax, or sigmoid for multi-label; with `tta_hflip`,
    averaged with the mirror images' (`tta_probs`, the one definition)."""
    was_training = model.training
    model.eval()

    def logits_of(x: torch.Tensor) -> torch.Tensor:  # the model under autocast; probabilities in fp32
        with compute.autocast():
            return model(x)

    out = []
    for s in range(0, len(indices), batch_size):
        data.prefetch([indices[p : p + batch_size] for p in range(s + batch_size, len(indices), batch_size)[:2]])
        x, _ = data.batch(indices[s : s + batch_size], compute.channels_last)
        out.append(tta_probs(logits_of, x, multilabel, tta_hflip).cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)

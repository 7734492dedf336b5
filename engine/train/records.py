"""What a training run records about itself: the validation line of metrics.jsonl, the monitored figure,
the predictions of the best model and summary.json (contract 2 in ARCHITECTURE.md).

One builder for each, shared by the full trainer (`engine.train.fit`) and the linear probe, so both
write the same keys and the Train page reads one format; `Run.write_summary` is the one writer. The
validation "loss" is `engine.metrics.log_loss`, the definition the Evaluate page reports as log loss,
so the two pages show the same number for the same predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from engine.config import ConfigError, RunConfig, monitors_for
from engine.data.pool import decode_pool
from engine.metrics.core import log_loss, multilabel_summary, summarize
from engine.metrics.display import format_metric, number
from engine.metrics.multilabel import f1_thresholds
from engine.runs.folder import Run, now_iso, write_npz
from engine.train.setup import TrainingSetup

LOWER_IS_BETTER = ("val_loss", "val_hter")  # every other monitored metric is better when higher


# --- the monitored figure ----------------------------------------------------------------------------


def monitor_name(cfg: RunConfig, task: str) -> str:
    """`cfg.monitor`, with 'auto' resolved per task: macro F1 for multi-label, else balanced accuracy."""
    if cfg.monitor not in monitors_for(task):
        raise ConfigError(
            f"Field 'monitor': {cfg.monitor} is not recorded for {task} tasks; choose one of "
            f"{', '.join(monitors_for(task))}."
        )
    if cfg.monitor != "auto":
        return cfg.monitor
    return "val_macro_f1" if task == "multilabel" else "val_balanced_accuracy"


def monitored_value(record: dict, monitor: str) -> float | None:
    """The monitored figure in a validation record: 'val_loss' is its 'loss', 'val_<metric>' its '<metric>'
    (None when this task has no such metric, e.g. HTER outside binary tasks)."""
    if monitor == "val_loss":
        return record["loss"]
    return record.get(monitor.removeprefix("val_"))


def improved(value: float | None, best: float | None, monitor: str) -> bool:
    """Whether `value` beats `best` for `monitor`; a missing or non-finite value never does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if monitor in LOWER_IS_BETTER else value > best


def best_value(records: list[dict], monitor: str) -> float | None:
    """The best per-epoch validation figure of a run's metrics.jsonl (what its best checkpoint scored; None
    when no epoch gave a finite one). Sweeps rank trials by it; the head-first recipe compares its phases."""
    best = None
    for r in records:
        if r.get("split") == "val":
            value = monitored_value(r, monitor)
            if improved(value, best, monitor):
                best = value
    return best


# --- metrics.jsonl, predictions, summary.json ----------------------------------------------------------


def validation_record(
    epoch: int,
    step: int,
    *,
    probs: np.ndarray,
    labels: np.ndarray,
    task: str,
    positive: int,
    train_loss: float | None,
    lr: float,
    img_per_s: float,
) -> dict:
    """The `split: val` line of metrics.jsonl after `epoch` (1-based): the loss, every `summarize` metric,
    and the epoch's training figures. `probs` (N, C) and `labels` ((N,) or (N, C) multi-hot) are the
    validation items'; `positive` is the binary task's positive class."""
    metrics = summarize(labels=labels, probs=probs, task=task, positive=positive)
    if task == "multilabel":  # what a multi-label job is judged by: macro F1 once each label has its threshold
        metrics["macro_f1_tuned"] = tuned_macro_f1(labels, probs)
    return {
        "epoch": epoch,
        "step": step,
        "split": "val",
        "loss": log_loss(labels=labels, probs=probs, multilabel=task == "multilabel"),
        **metrics,
        "train_loss": train_loss,
        "lr": lr,
        "img_per_s": img_per_s,
        "time": now_iso(),
    }


def tuned_macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro F1 at per-label thresholds tuned on these same items (`f1_thresholds`): an optimistic figure on
    val, but the one that tells how good the scores are once thresholds are chosen, which 0.5 does not
    (a rare label's F1-optimal threshold is often far below 0.5)."""
    return multilabel_summary(labels, probs, f1_thresholds(labels, probs))["macro_f1"]


def progress_line(epoch: int, train_loss: float | None, record: dict, task: str, img_per_s: float) -> str:
    """The per-epoch line of the CLI and train.log: the losses, then the scores the task is judged by. A
    multi-label run shows macro F1 at 0.5 and at per-label tuned thresholds: its accuracy is exact-set
    match (near 0 for many labels even for a good model) and balanced accuracy says little there."""
    head = f"epoch {epoch}: train loss {number(train_loss)}  val loss {number(record['loss'])}  "
    if task == "multilabel":
        scores = (
            f"val macro F1 {format_metric('macro_f1', record.get('macro_f1'))} at 0.5, "
            f"{format_metric('macro_f1_tuned', record.get('macro_f1_tuned'))} at per-label tuned thresholds  "
        )
    else:
        scores = f"val acc {number(record['accuracy'])}  bal acc {number(record['balanced_accuracy'])}  "
    return head + scores + f"{number(img_per_s, 0)} img/s"


def save_predictions(run: Run, setup: TrainingSetup, predict: Callable[[np.ndarray], np.ndarray]) -> dict:
    """predictions/{val,test}.npz from `predict` (item indices -> probabilities of the best model),
    and the metrics of each split. The full model and the linear probe's head both come through here."""
    run.predictions.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("val", "test"):
        idx = setup.ds.splits.get(split)
        if idx is None or len(idx) == 0:
            continue
        probs = predict(idx)
        labels = setup.ds.labels[idx]
        ids = np.array([setup.ds.source.item_id(int(i)) for i in idx])
        write_npz(run.predictions / f"{split}.npz", ids=ids, indices=idx, labels=labels, probs=probs)
        out[split] = summarize(labels=labels, probs=probs, task=setup.task, positive=setup.positive)
    return out


def save_pool_predictions(run: Run, setup: TrainingSetup, predict: Callable[[np.ndarray], np.ndarray]) -> int:
    """predictions/pool.npz: the best model's probabilities on the dataset's unlabelled pool (`engine.data.pool`),
    which the label queue ranks and pseudo-labelling picks from; `predict` maps (P, H, W, C) uint8 images to
    probabilities. `labels` are zeros (the pool has none) and `indices` index the pool's files. Returns how many
    images were predicted (0 without a pool: no file is written)."""
    pool = decode_pool(setup.ds)
    if pool is None:
        return 0
    source, images, scan = pool
    keep = np.flatnonzero(scan.ok)
    if not len(keep):
        return 0
    probs = predict(np.asarray(images[keep]))
    labels = np.zeros((len(keep), len(setup.ds.classes)) if setup.multilabel else len(keep), np.int64)
    ids = np.array([source.item_id(int(i)) for i in keep])
    run.predictions.mkdir(parents=True, exist_ok=True)
    write_npz(run.predictions / "pool.npz", ids=ids, indices=keep, labels=labels, probs=probs)
    return int(len(keep))


def training_summary(
    setup: TrainingSetup,
    *,
    monitor: str,
    final: dict[str, dict],
    best_epoch: int | None,
    epochs_run: int,
    steps: int,
    wall_seconds: float,
    train_seconds: float,
    train_images: int,
    notes: list[str],
    **mode: object,
) -> dict:
    """summary.json of a plain or linear-probe run. `final` holds each split's metrics of the best model
    (from `save_predictions`); `mode` adds the keys only one mode has (`stopped_early`, `compile_seconds`,
    `features_cache_hit`). A k-fold parent's summary (per-fold and cross-validated figures) is built in
    `engine.train.kfold`."""
    return {
        "best_epoch": best_epoch,
        "monitor": monitor,
        "best": final.get("val", {}),
        "final": final,
        "epochs_run": epochs_run,
        "steps": steps,
        **mode,
        "wall_seconds": round(wall_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "train_img_per_s": round(train_images / train_seconds, 1) if train_seconds else None,
        "thresholds": setup.default_thresholds(),
        "device": setup.compute.name,
        "notes": notes,
    }

"""Linear probe ("bottleneck features"): a frozen backbone's features computed once, then only the head trains.

The features are cached per (model weights, resolution, dataset fingerprint), so a second probe on
the same data skips the backbone entirely and the head trains in seconds. The saved checkpoints hold
the whole model (frozen backbone + trained head), so evaluation and prediction need nothing special.
Validation records, the monitored metric (`cfg.monitor`) and the summary are the full trainer's
(`engine.train.records`); patience and the time budget do not apply, as the head trains in seconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from engine.config import RunConfig
from engine.models.classifier import probs_from_logits
from engine.runs.checkpoint import save_weights
from engine.runs.folder import Run
from engine.train.features import cached_features
from engine.train.imbalance import epoch_indices, make_loss
from engine.train.loop import TrainingFailed
from engine.train.optim import make_optimizer, make_scheduler
from engine.train.records import (
    improved,
    monitor_name,
    monitored_value,
    save_predictions,
    training_summary,
    validation_record,
)
from engine.train.setup import TrainingSetup, prepared_run


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the head's epochs, restored after.

    Why: the head's matrices are small, and two OpenMP threads spin-wait on every tiny op; on the 2-core CPU
    with other jobs running, 30 epochs of an MLP head on 600 features took 82 s of wall time with 2 threads
    and 7 s with 1 (bench/RESULTS.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _head_probs(head: torch.nn.Module, feats: torch.Tensor, multilabel: bool) -> np.ndarray:
    with torch.inference_mode():
        return probs_from_logits(head(feats).float(), multilabel).numpy()


def fit_probe(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
    setup: TrainingSetup | None = None,
) -> dict:
    """Train the head on cached backbone features per `cfg` into `run`; returns the summary.

    Called as `engine.train.fit.fit` is; `resume` changes nothing (the head retrains from the cached
    features in seconds). `setup`: data, model and device already prepared (a k-fold child's)."""
    with prepared_run(cfg, run, log, progress, setup) as s:
        return _train_head(cfg, run, s, log)


def _train_head(cfg: RunConfig, run: Run, s: TrainingSetup, log: Callable[[str], None]) -> dict:
    wall0 = time.time()
    ds, model = s.ds, s.model
    multilabel = s.task == "multilabel"
    # a scratch backbone is random: its features are only valid for this seed's initialisation
    seed_part = f"|seed{cfg.seed}" if s.info.weights_source == "scratch" else ""
    # bf16 features differ from fp32 ones in the last digits: the precision is part of the key
    model_key = f"{cfg.model}|{s.info.weights_source}|{cfg.weights_file}{seed_part}|{s.compute.dtype}"
    run.write_status(state="running", epoch=0, epochs=cfg.epochs, step=0, stage="features")
    model.to(s.compute.device)
    feats_np, hit = cached_features(
        model,
        model_key,
        ds.fingerprint,
        ds.image_size,
        ds.images,
        batch_size=256,
        device=str(s.compute.device),
        compute=s.compute,
    )
    model.cpu()
    log(f"features {feats_np.shape} ({'cache hit' if hit else 'computed and cached'})")
    feats = torch.from_numpy(np.array(feats_np, dtype=np.float32))  # a writable copy of the memory map
    labels = torch.from_numpy(ds.labels.astype(np.float32 if multilabel else np.int64))
    head = model.head.cpu().float()
    for p in head.parameters():
        p.requires_grad_(True)
    drop = model.drop.train()  # the config's dropout on the features (as `classify` applies it), training only
    loss_fn = make_loss(s.task, len(ds.classes), cfg, ds.labels[s.train_idx])
    optimizer = make_optimizer(list(head.parameters()), cfg)
    bs = cfg.batch_size
    epoch_len = len(epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng(0)))
    scheduler = make_scheduler(optimizer, cfg, math.ceil(epoch_len / bs), cfg.epochs)
    val_idx = ds.splits["val"]
    monitor = monitor_name(cfg, s.task)
    best, best_epoch, best_head, step, t_train = None, None, None, 0, 0.0
    with one_thread():
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            head.train()
            order = epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng([cfg.seed, epoch]))
            total = 0.0
            for i in range(0, len(order), bs):
                idx = torch.from_numpy(order[i : i + bs])
                loss = loss_fn(head(drop(feats[idx])), labels[idx])
                if not torch.isfinite(loss):
                    raise TrainingFailed(
                        f"The training loss became {float(loss)} in epoch {epoch + 1}; lower the learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(idx)
                step += 1
            t_train += time.perf_counter() - t0
            probs = _head_probs(head, feats[val_idx], multilabel)
            img_per_s = len(order) / max(1e-9, time.perf_counter() - t0)
            record = validation_record(
                epoch + 1,
                step,
                probs=probs,
                labels=ds.labels[val_idx],
                task=s.task,
                positive=s.positive,
                train_loss=total / len(order),
                lr=optimizer.param_groups[0]["lr"],
                img_per_s=img_per_s,
            )
            run.append_metrics(record)
            value = monitored_value(record, monitor)
            if improved(value, best, monitor):
                best, best_epoch = value, epoch + 1
                best_head = {k: v.clone() for k, v in head.state_dict().items()}
                save_weights(
                    model, run.best_weights
                )  # `head` is `model.head` (.cpu() and .float() return the module itself)
            run.write_status(state="running", epoch=epoch + 1, step=step)
            if run.stop_requested():
                run.clear_stop()
                break
    save_weights(model, run.last_weights)
    if best_head is not None:  # predictions come from the best epoch's head, the one best.safetensors holds
        head.load_state_dict(best_head)
    final = save_predictions(run, s, lambda idx: _head_probs(head, feats[idx], multilabel))
    summary = training_summary(
        s,
        monitor=monitor,
        final=final,
        best_epoch=best_epoch,
        epochs_run=epoch + 1,
        steps=step,
        wall_seconds=time.time() - wall0,
        train_seconds=t_train,
        train_images=len(s.train_idx) * (epoch + 1),
        notes=s.notes,
        features_cache_hit=hit,
    )
    run.write_summary(summary)
    run.write_status(state="completed", epoch=epoch + 1, step=step)
    log(
        f"linear probe done: best epoch {best_epoch}, {monitor} {best:.4f}"
        if best is not None
        else f"linear probe done: no epoch gave a finite {monitor}"
    )
    return summary

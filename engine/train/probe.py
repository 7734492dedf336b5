"""Linear probe ("bottleneck features"): a frozen backbone's features computed once, then only the head trains.

The features are cached per (model weights, resolution, dataset fingerprint), so a second probe on
the same data skips the backbone entirely and the head trains in seconds. The saved checkpoints hold
the whole model (frozen backbone + trained head), so evaluation and prediction need nothing special.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from engine.runs.checkpoint import save_weights
from engine.config import RunConfig
from engine.train.features import cached_features
from engine.train.imbalance import epoch_indices, make_loss
from engine.train.loop import TrainingFailed, log_loss
from engine.metrics import summarize
from engine.models.classifier import probs_from_logits
from engine.train.optim import make_optimizer, make_scheduler
from engine.runs.folder import Run, now_iso
from engine.train.setup import TrainingSetup, save_predictions


def _head_probs(head: torch.nn.Module, feats: torch.Tensor, multilabel: bool) -> np.ndarray:
    with torch.inference_mode():
        return probs_from_logits(head(feats).float(), multilabel).numpy()


def fit_probe(cfg: RunConfig, run: Run, s: TrainingSetup, log=print) -> dict:
    wall0 = time.time()
    ds, model = s.ds, s.model
    multilabel = s.task == "multilabel"
    # a scratch backbone is random: its features are only valid for this seed's initialisation
    seed_part = f"|seed{cfg.seed}" if s.info.weights_source == "scratch" else ""
    # bf16 features differ from fp32 ones in the last digits: the precision is part of the key
    model_key = f"{cfg.model}|{s.info.weights_source}|{cfg.weights_file}{seed_part}|{s.compute.dtype}"
    run.write_status(state="running", epoch=0, epochs=cfg.epochs, step=0, stage="features")
    model.to(s.compute.device)
    feats_np, hit = cached_features(model, model_key, ds.fingerprint, ds.image_size, ds.images,
                                    batch_size=256, device=str(s.compute.device), compute=s.compute)
    model.cpu()
    log(f"features {feats_np.shape} ({'cache hit' if hit else 'computed and cached'})")
    feats = torch.from_numpy(np.array(feats_np, dtype=np.float32))  # a writable copy of the memory map
    labels = torch.from_numpy(ds.labels.astype(np.float32 if multilabel else np.int64))
    head = model.head.cpu().float()
    for p in head.parameters():
        p.requires_grad_(True)
    loss_fn = make_loss(s.task, len(ds.classes), cfg, ds.labels[s.train_idx])
    optimizer = make_optimizer(list(head.parameters()), cfg)
    bs = cfg.batch_size
    epoch_len = len(epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng(0)))
    scheduler = make_scheduler(optimizer, cfg, math.ceil(epoch_len / bs), cfg.epochs)
    val_idx = ds.splits["val"]
    best, best_epoch, step, t_train = None, 0, 0, 0.0
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        head.train()
        order = epoch_indices(ds.labels, s.train_idx, cfg.imbalance, np.random.default_rng([cfg.seed, epoch]))
        total = 0.0
        for i in range(0, len(order), bs):
            idx = torch.from_numpy(order[i : i + bs])
            loss = loss_fn(head(feats[idx]), labels[idx])
            if not torch.isfinite(loss):
                raise TrainingFailed(f"The training loss became {float(loss)} in epoch {epoch + 1}; lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            step += 1
        t_train += time.perf_counter() - t0
        probs = _head_probs(head, feats[val_idx], multilabel)
        m = summarize(probs, ds.labels[val_idx], s.task, positive=s.positive)
        run.append_metrics({"epoch": epoch + 1, "step": step, "split": "val", "loss": log_loss(probs, ds.labels[val_idx], multilabel),
                            **m, "train_loss": total / len(order), "lr": optimizer.param_groups[0]["lr"],
                            "img_per_s": len(order) / max(1e-9, time.perf_counter() - t0), "time": now_iso()})
        if best is None or m["balanced_accuracy"] > best:
            best, best_epoch = m["balanced_accuracy"], epoch + 1
            model.head.load_state_dict(head.state_dict())
            save_weights(model, run.best_weights)
        run.write_status(state="running", epoch=epoch + 1, step=step)
        if run.stop_requested():
            run.clear_stop()
            break
    save_weights(model, run.last_weights)
    final = save_predictions(run, s, lambda idx: _head_probs(model.head.float(), feats[idx], multilabel))
    summary = {"best_epoch": best_epoch, "monitor": "val_balanced_accuracy", "best": final.get("val", {}), "final": final,
               "epochs_run": epoch + 1, "steps": step, "features_cache_hit": hit, "wall_seconds": round(time.time() - wall0, 2),
               "train_seconds": round(t_train, 2), "train_img_per_s": round(len(s.train_idx) * (epoch + 1) / max(t_train, 1e-9), 1),
               "thresholds": s.default_thresholds(), "device": s.compute.name, "notes": s.notes}
    run.write_summary(summary)
    run.write_status(state="completed", epoch=epoch + 1, step=step)
    log(f"linear probe done: best epoch {best_epoch}, val balanced accuracy {best:.4f}")
    return summary

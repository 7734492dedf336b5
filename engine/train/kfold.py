"""k-fold cross-validation: a parent run whose children each train on k-1 folds and predict the held-out one.

Layout: `RUN/folds/fold<i>/` are complete run folders (contract 2); the parent holds config.json,
status.json, classes.json, summary.json (per-fold metrics, mean and std) and `predictions/oof.npz`:
out-of-fold probabilities for every train+val image, which the Evaluate page uses to flag likely
mislabelled images. The test split, when the data has one, is never folded: each child reports on it.

The parent opens the dataset once (`setup.dataset_for`, at the size the children train at) and gives
each child that same decoded copy with its fold's splits; a child trains with `fit` or `fit_probe`
like any other run. `engine.train.run.run_training` sends a config here when `cfg.kfold >= 2`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np

from engine.config import RunConfig
from engine.data.splits import kfold_indices
from engine.runs.folder import Run, atomic_write_json, now_iso, write_npz
from engine.train.children import require_one_process, train_child
from engine.train.fit import fit
from engine.train.probe import fit_probe
from engine.train.setup import dataset_for, prepare


def fit_kfold(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Train `cfg.kfold` child runs into `run/folds/`, then aggregate them; returns the parent's summary,
    or `{'state': 'stopped', ...}`. `resume` is implied per child: completed folds are kept, stopped or
    failed ones resume."""
    train_fold = fit_probe if cfg.strategy == "linear_probe" else fit
    require_one_process("kfold", "cross-validation")
    wall0 = time.time()
    ds = dataset_for(cfg, progress)  # the children train on this same decoded copy, with their fold's splits
    pool = np.sort(np.concatenate([ds.splits["train"], ds.splits["val"]]))
    test = ds.splits.get("test", np.zeros(0, np.int64))
    folds = kfold_indices(ds.labels, pool, cfg.kfold, cfg.seed)
    child_cfg = cfg.replace(kfold=0)
    atomic_write_json(run.path / "classes.json", ds.classes)
    run.write_hierarchy(ds.source.hierarchy)
    header = run.config()
    header.update(
        {
            "kfold": cfg.kfold,
            "task": ds.task,
            "image_size": ds.image_size,
            "channels": ds.channels,
            "dataset_fingerprint": ds.fingerprint,
            "children": [f"folds/fold{k + 1}" for k in range(cfg.kfold)],
        }
    )
    atomic_write_json(run.path / "config.json", header)
    run.write_status(
        state="running",
        epoch=0,
        epochs=cfg.kfold,
        fold=0,
        folds=cfg.kfold,
        pid=os.getpid(),
        started_at=run.raw_status().get("started_at") or now_iso(),
    )
    summaries = []
    for k, (train_idx, held_idx) in enumerate(folds):
        log(f"fold {k + 1}/{cfg.kfold}: train {len(train_idx)}, held out {len(held_idx)}")
        run.write_status(state="running", fold=k + 1, epoch=k)
        fold_ds = dataclasses.replace(ds, splits={"train": train_idx, "val": held_idx, "test": test})
        _, out = train_child(
            run,
            f"folds/fold{k + 1}",
            child_cfg,
            train_fold,
            lambda fold_ds=fold_ds: prepare(child_cfg, progress=progress, dataset=fold_ds),
            log,
            progress,
            fold=k + 1,
        )
        if out.get("state") == "stopped":
            run.clear_stop()
            run.write_status(state="stopped", fold=k + 1)
            return {"state": "stopped", "fold": k + 1}
        summaries.append(out)
    return _aggregate(cfg, run, summaries, wall0, log)


def _aggregate(cfg: RunConfig, run: Run, summaries: list[dict], wall0: float, log: Callable[[str], None]) -> dict:
    """Mean and std of each metric over folds, and the out-of-fold probabilities of every image."""
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("val", "test"):
        per_fold = [s["final"].get(split, {}) for s in summaries]
        keys = [k for k, v in per_fold[0].items() if isinstance(v, float)] if per_fold and per_fold[0] else []
        for key in keys:
            values = np.array([f[key] for f in per_fold if isinstance(f.get(key), float)])
            stats.setdefault(split, {})[key] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            }
    ids, idx, labels, probs = [], [], [], []
    for k in range(cfg.kfold):
        z = np.load(Run(run.path / "folds" / f"fold{k + 1}").predictions / "val.npz")
        ids.append(z["ids"]), idx.append(z["indices"]), labels.append(z["labels"]), probs.append(z["probs"])
    order = np.argsort(np.concatenate(idx))
    run.predictions.mkdir(exist_ok=True)
    write_npz(
        run.predictions / "oof.npz",
        ids=np.concatenate(ids)[order],
        indices=np.concatenate(idx)[order],
        labels=np.concatenate(labels)[order],
        probs=np.concatenate(probs)[order],
    )
    summary = {
        "kfold": cfg.kfold,
        "folds": [s["final"] for s in summaries],
        "cv": stats,
        "final": {split: {k: v["mean"] for k, v in m.items()} for split, m in stats.items()},
        "monitor": summaries[0].get("monitor"),
        "best": {k: v["mean"] for k, v in stats.get("val", {}).items()},
        "best_epoch": None,
        "wall_seconds": round(time.time() - wall0, 2),
        "train_img_per_s": float(np.mean([s.get("train_img_per_s") or 0 for s in summaries])),
        "thresholds": summaries[0].get("thresholds", {}),
        "oof_images": int(len(order)),
    }
    run.write_summary(summary)
    run.write_status(state="completed", epoch=cfg.kfold, fold=cfg.kfold)
    val = stats.get("val", {}).get("balanced_accuracy")
    if val:
        log(f"{cfg.kfold}-fold CV: val balanced accuracy {val['mean']:.4f} +/- {val['std']:.4f}")
    return summary

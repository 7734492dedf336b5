"""Pseudo-labelling (`pseudo_label` > 0): train on the labelled images, add the unlabelled ones the model is
sure of, train again.

Layout: `RUN/round1/` is a complete run folder (contract 2) trained on the labelled images alone; its best
model's pool predictions (`predictions/pool.npz`) pick the pseudo-labels; `RUN` itself is round 2, trained from
scratch on the labelled images plus those, and evaluated on the same val/test images (pool images never enter
val or test). RUN's summary.json adds `pseudo_label`: the thresholds, how many pseudo-labels per class, and
both rounds' metrics, so the gain (or loss) is measured, not assumed.

The per-class threshold (FlexMatch's idea, Zhang et al. 2021): t_c = T x (class c's mean confidence on val /
the highest class's), never below 0.5. A class the model finds hard gets a lower bar, so the added images are
not all of the easy classes (which would skew the class balance); T itself is the bar for the easiest class.
Multi-label: an image is added when every label is decided with confidence (p_j >= t_j or p_j <= 1 - t_j),
with the labels at p_j >= 0.5.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from engine.config import ConfigError, RunConfig
from engine.data.dataset import Dataset
from engine.data.pool import decode_pool
from engine.data.source import TRAIN, ScanResult, fingerprint
from engine.runs.folder import Run, now_iso
from engine.train.children import require_one_process, train_child
from engine.train.fit import fit
from engine.train.setup import dataset_for, prepare

FLOOR = 0.5  # no pseudo-label below an even chance of being right


def class_thresholds(val_probs: np.ndarray, threshold: float, multilabel: bool) -> np.ndarray:
    """Per class (label) t_c = threshold x (its mean confidence on val / the highest), floored at `FLOOR`.

    Confidence: multi-class, the top probability of the val images predicted as c; multi-label, max(p_j,
    1 - p_j) over val. A class no val image is predicted as keeps `threshold`."""
    c = val_probs.shape[1]
    if multilabel:
        conf = np.maximum(val_probs, 1 - val_probs).mean(axis=0) if len(val_probs) else np.ones(c)
    else:
        pred = val_probs.argmax(axis=1)
        top = val_probs.max(axis=1)
        counts = np.bincount(pred, minlength=c)
        conf = np.divide(np.bincount(pred, top, minlength=c), counts, out=np.zeros(c), where=counts > 0)
        conf[counts == 0] = conf.max() if counts.any() else 1.0
    scale = conf / conf.max() if conf.max() > 0 else np.ones(c)
    return np.maximum(threshold * scale, FLOOR)


def pick(pool_probs: np.ndarray, thresholds: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the pool to add, their labels: class ids, or (k, C) multi-hot) under `thresholds`."""
    if multilabel:
        sure = ((pool_probs >= thresholds) | (pool_probs <= 1 - thresholds)).all(axis=1)
        rows = np.flatnonzero(sure)
        return rows, (pool_probs[rows] >= 0.5).astype(np.uint8)
    pred = pool_probs.argmax(axis=1)
    rows = np.flatnonzero(pool_probs.max(axis=1) >= thresholds[pred])
    return rows, pred[rows].astype(np.int64)


def with_pseudo_labels(ds: Dataset, files: list[str], images: np.ndarray, labels: np.ndarray) -> Dataset:
    """`ds` plus pool images as training items with the given labels (appended, marked `from_pool`); val and
    test are untouched, so both rounds are scored on the same images."""
    n0, k = len(ds), len(files)
    src = ds.source
    from_pool = np.zeros(n0 + k, bool)
    if src.from_pool is not None:
        from_pool[:n0] = src.from_pool
    from_pool[n0:] = True
    source = dataclasses.replace(
        src,
        labels=np.concatenate([src.labels, labels.astype(src.labels.dtype)]),
        files=[*(src.files or []), *files],
        split_of=None if src.split_of is None else np.concatenate([src.split_of, np.full(k, TRAIN, np.int8)]),
        from_pool=from_pool,
        strata_labels=None,  # the splits are made: val and test stay as they are
        fingerprint=fingerprint(src.fingerprint, "pseudo", files, labels),
    )
    scan = ds.scan
    scan = ScanResult(
        ok=np.concatenate([scan.ok, np.ones(k, bool)]),
        width=np.concatenate([scan.width, np.full(k, ds.image_size, scan.width.dtype)]),
        height=np.concatenate([scan.height, np.full(k, ds.image_size, scan.height.dtype)]),
        mode=[*scan.mode, *[""] * k],
        format=[*scan.format, *[""] * k],
        corrupt=scan.corrupt,
    )
    splits = dict(ds.splits)
    splits["train"] = np.sort(np.concatenate([splits["train"], np.arange(n0, n0 + k)]))
    return dataclasses.replace(
        ds,
        source=source,
        images=np.concatenate([np.asarray(ds.images), np.asarray(images)]) if k else ds.images,
        scan=scan,
        splits=splits,
        notes=[*ds.notes, f"Pseudo-labelling added {k} unlabelled images to train."],
    )


def fit_pseudo(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Round 1 into `run/round1/`, the pseudo-labels from its pool predictions, round 2 into `run`; returns round
    2's summary with `pseudo_label` added (or `{'state': 'stopped', ...}`). A completed round 1 is kept on resume."""
    require_one_process("pseudo_label", "pseudo-labelling")
    ds = dataset_for(cfg, progress)
    pool = decode_pool(ds)
    if pool is None:
        raise ConfigError(
            f"Field 'pseudo_label': the dataset '{cfg.dataset}' has no unlabelled images (an empty label cell, an "
            "unlabeled/ folder or a -1 line); set it to 0 or add some."
        )
    pool_source, pool_images, _ = pool
    child_cfg = cfg.replace(pseudo_label=0.0)
    run.write_status(
        state="running", round=1, pid=os.getpid(), started_at=run.raw_status().get("started_at") or now_iso()
    )
    log(f"pseudo-labelling round 1: the {len(ds.splits['train'])} labelled training images alone")
    child, out = train_child(
        run, "round1", child_cfg, fit, lambda: prepare(child_cfg, progress=progress, dataset=ds), log, progress, round=1
    )
    if out.get("state") == "stopped":
        run.write_status(state="stopped", round=1)
        return {"state": "stopped", "round": 1}
    resume = resume and run.last_state.exists()  # round 2 goes on from its checkpoint, if it had begun
    multilabel = ds.task == "multilabel"
    with np.load(child.predictions / "val.npz") as z:
        val_probs = z["probs"]
    with np.load(child.predictions / "pool.npz") as z:
        pool_probs, pool_rows = z["probs"], z["indices"]
    thresholds = class_thresholds(val_probs, cfg.pseudo_label, multilabel)
    rows, labels = pick(pool_probs, thresholds, multilabel)
    chosen = pool_rows[rows]
    files = [pool_source.files[int(i)] for i in chosen]
    ds2 = with_pseudo_labels(ds, files, pool_images[chosen], labels)
    per_class = (labels.sum(axis=0) if multilabel else np.bincount(labels, minlength=len(ds.classes))).tolist()
    log(
        f"pseudo-labelling: {len(files)} of {len(pool_rows)} unlabelled images cleared their class's threshold; "
        f"round 2 trains on {len(ds2.splits['train'])} images"
    )
    summary = fit(
        cfg, run, resume=resume, log=log, progress=progress, setup=prepare(cfg, progress=progress, dataset=ds2)
    )
    if summary.get("state") == "stopped":
        return summary
    round1 = child.summary() or {}
    summary["pseudo_label"] = {
        "threshold": cfg.pseudo_label,
        "class_thresholds": {c: round(float(t), 4) for c, t in zip(ds.classes, thresholds)},
        "pool": int(len(pool_rows)),
        "added": int(len(files)),
        "per_class": dict(zip(ds.classes, (int(v) for v in per_class))),
        "round1": round1.get("final", {}),
        "round2": summary.get("final", {}),
        "round1_run": "round1",
    }
    run.write_summary(summary)
    return summary

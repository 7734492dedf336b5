"""Everything a run needs before its first step: data, model, device, and the run folder's header files."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from engine.config import RunConfig
from engine.data import Dataset, open_dataset
from engine.device import Compute, configure_threads, resolve_compute
from engine.metrics import summarize
from engine.models.factory import ImageClassifier, ModelInfo, build_model
from engine.runs.folder import Run, atomic_write_json, now_iso, write_npz


@dataclass
class Session:
    ds: Dataset
    task: str
    model: ImageClassifier
    info: ModelInfo
    compute: Compute
    train_idx: np.ndarray
    positive: int
    notes: list[str] = field(default_factory=list)

    def default_thresholds(self) -> dict:
        """Decision thresholds until the Evaluate page tunes them on val."""
        if self.task == "binary":
            return {"binary": 0.5, "positive_class": self.positive, "tuned_on": None}
        if self.task == "multilabel":
            return {"multilabel": [0.5] * len(self.ds.classes), "tuned_on": None}
        return {}


def limit_train(train_idx: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A stratified subset of `limit` training items (for quick experiments), deterministic per seed."""
    if not limit or limit >= len(train_idx):
        return train_idx
    from engine.data.splits import _carve, strata

    keep = limit / len(train_idx)
    rest, chosen = _carve(strata(labels), train_idx, (keep,), np.random.default_rng([seed, 7]))
    return chosen


def image_size_for(cfg: RunConfig, info_default: int | None) -> int | None:
    """The user's size, else the model's pretrained input size (timm models), else the data's own."""
    return cfg.image_size or info_default or None


def default_image_size(model: str) -> int | None:
    """A timm model's pretrained input size; None for built-ins, which work at the data's own size."""
    from engine.models.factory import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        return None
    import timm

    try:
        return int(timm.models.get_pretrained_cfg(model).input_size[-1])
    except Exception:  # no pretrained config for this architecture
        return 224


def versions() -> dict[str, str]:
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__}


def open_session(cfg: RunConfig, run: Run, dist, log: Callable = print, progress=None, write: bool = True,
                 splits: dict[str, np.ndarray] | None = None) -> Session:
    """Open data, model and device for `cfg`; `splits` replaces the dataset's own (k-fold children)."""
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    compute = resolve_compute(cfg.device, cfg.precision, cfg.channels_last)
    if compute.device.type == "cpu":
        configure_threads()
    if dist.enabled and compute.device.type == "cuda":
        compute.device = torch.device("cuda", dist.local_rank)
    size = image_size_for(cfg, default_image_size(cfg.model))
    ds = open_dataset(cfg.dataset, image_size=size, task=None if cfg.task == "auto" else cfg.task, seed=cfg.seed,
                      val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, progress=progress)
    if len(ds.splits.get("val", [])) == 0:
        from engine.errors import DatasetError

        raise DatasetError(f"The dataset '{cfg.dataset}' has no validation images; it is too small to train on.")
    if splits is not None:
        ds = dataclasses.replace(ds, splits=splits)
    train_idx = limit_train(ds.splits["train"], ds.labels, cfg.train_limit, cfg.seed)
    pretrained = cfg.pretrained and cfg.strategy != "scratch"
    model, info = build_model(cfg.model, len(ds.classes), in_chans=ds.channels, pretrained=pretrained,
                              weights_file=cfg.weights_file, allow_scratch=cfg.allow_scratch, head=cfg.head,
                              dropout=cfg.dropout, image_size=ds.image_size)
    model = model.to(compute.device)
    if compute.channels_last:
        model = model.to(memory_format=torch.channels_last)
    positive = cfg.positive_class if ds.task == "binary" else 0
    notes = list(ds.notes) + list(info.notes)
    if write:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.path / "classes.json", ds.classes)
        header = run.config()
        header.update({
            "config": cfg.to_dict(), "run_id": run.id, "created_at": header.get("created_at", now_iso()),
            "task": ds.task, "image_size": ds.image_size, "channels": ds.channels,
            "dataset_fingerprint": ds.fingerprint, "num_train": int(len(train_idx)),
            "model_info": {"weights_source": info.weights_source, "mean": list(info.mean), "std": list(info.std)},
            "versions": versions(), "world_size": dist.world,
        })
        atomic_write_json(run.path / "config.json", header)
        (run.checkpoints).mkdir(exist_ok=True)
        run.write_status(started_at=run.raw_status().get("started_at") or now_iso(), pid=_pid(), device=compute.name)
    log(f"{cfg.dataset}: {len(ds)} images, {len(ds.classes)} classes, task {ds.task}, "
        f"{ds.image_size}px x{ds.channels}; train {len(train_idx)}, val {len(ds.splits['val'])}, "
        f"test {len(ds.splits.get('test', []))}; model {cfg.model} ({info.weights_source}) on {compute.name}")
    return Session(ds, ds.task, model, info, compute, train_idx, positive, notes)


def _pid() -> int:
    import os

    return os.getpid()


def save_predictions(run: Run, s: Session, predict: Callable[[np.ndarray], np.ndarray]) -> dict:
    """predictions/{val,test}.npz from `predict` (item indices -> probabilities of the best model),
    and the metrics of each split. The full model and the linear probe's head both come through here."""
    run.predictions.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("val", "test"):
        idx = s.ds.splits.get(split)
        if idx is None or len(idx) == 0:
            continue
        probs = predict(idx)
        labels = s.ds.labels[idx]
        ids = np.array([s.ds.source.item_id(int(i)) for i in idx])
        write_npz(run.predictions / f"{split}.npz", ids=ids, indices=idx, labels=labels, probs=probs)
        out[split] = summarize(probs, labels, s.task, positive=s.positive)
    return out

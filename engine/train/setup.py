"""Everything a run needs before its first step: the dataset at the right size, the model on its device.

Three jobs, kept apart so each caller takes only what it needs:
- `image_size_for(cfg)` and `dataset_for(cfg)` are the one mapping from a config to its decoded dataset.
  The CLI and the Train page call `image_size_for` to refuse a bad size before a run folder exists;
  plain runs, k-fold parents and the LR finder open their data through `dataset_for`, so every mode
  trains on the same decoded copy (decode-once, `engine.data.cache`).
- `prepare(cfg)` opens data, model and device and returns a `TrainingSetup`. It writes no file, so the
  LR finder and k-fold children use it exactly as the trainer does.
- `write_header(run, setup, cfg)` writes the run folder's header (classes.json, config.json, the first
  status.json) for a run that is about to train (contract 2 in ARCHITECTURE.md).
`prepared_run` puts them together for the plain trainer and the probe: join the DDP process group
under torchrun, prepare, write the header (rank 0), leave the group when training ends.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.config import RunConfig
from engine.data.dataset import Dataset, open_dataset
from engine.data.source import Progress
from engine.data.splits import carve, strata
from engine.device import Compute, configure_threads, resolve_compute
from engine.errors import DatasetError
from engine.models.classifier import ImageClassifier, ModelInfo
from engine.models.factory import BUILTIN_MODELS, build_model, check_image_size
from engine.runs.folder import Run, atomic_write_json, now_iso
from engine.train import distributed
from engine.train.distributed import Dist


@dataclass
class TrainingSetup:
    """What `prepare` made for one run: the data with its splits, the model on its device, and notes."""

    ds: Dataset  # decoded images, labels, classes and splits (a k-fold child's carry its fold's splits)
    model: ImageClassifier  # on `compute.device`, channels_last when asked; not yet wrapped by DDP or compile
    info: ModelInfo  # where the weights came from, the normalisation, notes from building
    compute: Compute  # device, precision and memory format
    dist: Dist  # this process's rank in a torchrun job (`Dist()` in one process)
    train_idx: np.ndarray  # (n,) int64 item indices trained on: `ds.splits['train']`, or a stratified subset of it
    positive: int  # the positive class of a binary task; 0 otherwise
    notes: list[str] = field(default_factory=list)  # the dataset's and model's notes, shown with the run
    started: float = field(default_factory=time.time)  # when preparing began; a run's wall_seconds count from here

    @property
    def task(self) -> str:
        return self.ds.task

    @property
    def multilabel(self) -> bool:
        return self.ds.task == "multilabel"

    def default_thresholds(self) -> dict:
        """Decision thresholds until the Evaluate page tunes them on val."""
        if self.task == "binary":
            return {"binary": 0.5, "positive_class": self.positive, "tuned_on": None}
        if self.task == "multilabel":
            return {"multilabel": [0.5] * len(self.ds.classes), "tuned_on": None}
        return {}

    def describe(self, cfg: RunConfig) -> str:
        """One log line: the data, its splits and size, and the model on its device."""
        ds = self.ds
        usable = sum(len(idx) for idx in ds.splits.values())
        left_out = f" ({len(ds) - usable} unusable left out)" if len(ds) > usable else ""
        return (
            f"{cfg.dataset}: {usable} usable images{left_out}, {len(ds.classes)} classes, task {ds.task}, "
            f"{ds.image_size}px x{ds.channels}; train {len(self.train_idx)}, val {len(ds.splits['val'])}, "
            f"test {len(ds.splits.get('test', []))}; model {cfg.model} ({self.info.weights_source}) on {self.compute.name}"
        )


# --- config -> image size -> dataset (the one mapping) ------------------------------------------------


def default_image_size(model: str) -> int | None:
    """A timm model's pretrained input size; None for built-ins, which work at the data's own size."""
    if model in BUILTIN_MODELS:
        return None
    import timm

    try:
        return int(timm.models.get_pretrained_cfg(model).input_size[-1])
    except Exception:  # no pretrained config for this architecture
        return 224


def image_size_for(cfg: RunConfig) -> int | None:
    """The side length `cfg`'s images are decoded and trained at.

    The user's `image_size`, else the model's pretrained input size (timm models), else None: the
    data's own typical size, capped (`engine.data.cache.default_size`). Raises `ImageSizeError` (a
    `ConfigError`) for a size the model would downsample to nothing, and `ModelError` for an unknown
    model, so the CLI and the Train page call it to refuse a config before any run folder exists."""
    check_image_size(cfg.model, cfg.image_size)
    return cfg.image_size or default_image_size(cfg.model) or None


def dataset_for(cfg: RunConfig, progress: Progress | None = None) -> Dataset:
    """`cfg`'s dataset, decoded once (cached) at `image_size_for(cfg)` and split by its seed and fractions."""
    ds = open_dataset(
        cfg.dataset,
        image_size=image_size_for(cfg),
        task=None if cfg.task == "auto" else cfg.task,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        progress=progress,
    )
    if len(ds.splits.get("val", [])) == 0:
        raise DatasetError(f"The dataset '{cfg.dataset}' has no validation images; it is too small to train on.")
    return ds


def limit_train(train_idx: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A stratified subset of `limit` training items (for quick experiments), deterministic per seed."""
    if not limit or limit >= len(train_idx):
        return train_idx
    keep = limit / len(train_idx)
    rest, chosen = carve(strata(labels), train_idx, (keep,), np.random.default_rng([seed, 7]))
    return chosen


# --- prepare and write the header ------------------------------------------------------------------


def prepare(
    cfg: RunConfig, dist: Dist | None = None, progress: Progress | None = None, dataset: Dataset | None = None
) -> TrainingSetup:
    """Open data, model and device for `cfg`; writes nothing.

    `dist`: this process's place in a torchrun job (default: one process). `dataset`: data already
    opened by `dataset_for` with the splits to use (a k-fold child's fold); by default it is opened here.
    Seeds torch and sets the thread count first: the model's initial weights depend on the seed."""
    dist = dist or Dist()
    started = time.time()
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    compute = resolve_compute(cfg.device, cfg.precision, cfg.channels_last)
    if compute.device.type == "cpu":
        configure_threads()
    if dist.enabled and compute.device.type == "cuda":
        compute.device = torch.device("cuda", dist.local_rank)
    ds = dataset if dataset is not None else dataset_for(cfg, progress)
    given = ds.splits["train"]
    from_pool = np.zeros(0, np.int64)  # images labelled from the pool (by a person or pseudo-labels) always train
    if ds.source.from_pool is not None:
        given, from_pool = given[~ds.source.from_pool[given]], given[ds.source.from_pool[given]]
    train_idx = np.sort(np.concatenate([limit_train(given, ds.labels, cfg.train_limit, cfg.seed), from_pool]))
    pretrained = cfg.pretrained and cfg.strategy != "scratch"
    model, info = build_model(
        cfg.model,
        len(ds.classes),
        in_chans=ds.channels,
        pretrained=pretrained,
        weights_file=cfg.weights_file,
        allow_scratch=cfg.allow_scratch,
        head=cfg.head,
        dropout=cfg.dropout,
        image_size=ds.image_size,
    )
    model = model.to(compute.device)
    if compute.channels_last:
        model = model.to(memory_format=torch.channels_last)
    positive = cfg.positive_class if ds.task == "binary" else 0
    return TrainingSetup(
        ds=ds,
        model=model,
        info=info,
        compute=compute,
        dist=dist,
        train_idx=train_idx,
        positive=positive,
        notes=list(ds.notes) + list(info.notes),
        started=started,
    )


def versions() -> dict[str, str]:
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
    }


def write_header(run: Run, setup: TrainingSetup, cfg: RunConfig) -> None:
    """classes.json, config.json (the config plus what preparing found) and status.json's start fields.

    config.json keeps what `jobs.prepare_run` (or a k-fold parent) wrote there and adds to it."""
    ds = setup.ds
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.path / "classes.json", ds.classes)
    run.write_hierarchy(ds.source.hierarchy)
    header = run.config()
    header.update(
        {
            "config": cfg.to_dict(),
            "run_id": run.id,
            "created_at": header.get("created_at", now_iso()),
            "task": ds.task,
            "image_size": ds.image_size,
            "channels": ds.channels,
            "dataset_fingerprint": ds.fingerprint,
            "num_train": int(len(setup.train_idx)),
            "model_info": {
                "weights_source": setup.info.weights_source,
                "mean": list(setup.info.mean),
                "std": list(setup.info.std),
            },
            "versions": versions(),
            "world_size": setup.dist.world,
        }
    )
    atomic_write_json(run.path / "config.json", header)
    run.checkpoints.mkdir(exist_ok=True)
    run.write_status(
        started_at=run.raw_status().get("started_at") or now_iso(), pid=os.getpid(), device=setup.compute.name
    )


@contextlib.contextmanager
def prepared_run(
    cfg: RunConfig,
    run: Run,
    log: Callable[[str], None],
    progress: Progress | None = None,
    setup: TrainingSetup | None = None,
    header: RunConfig | None = None,
) -> Iterator[TrainingSetup]:
    """The setup one plain or linear-probe run trains with, its header written (by rank 0 under torchrun).

    Prepared here unless `setup` is given (a k-fold child's, on its fold's splits); joins the DDP process
    group first when launched by torchrun, and leaves it when the block ends, however it ends."""
    dist = setup.dist if setup is not None else distributed.setup(cfg.device)
    try:
        if setup is None:
            setup = prepare(cfg, dist, progress=progress)
        if dist.is_main:
            write_header(run, setup, header or cfg)
        log(setup.describe(cfg))
        yield setup
    finally:
        distributed.teardown(dist)

"""Child runs: the complete run folders some modes train inside their run (`RUN/folds/foldK/` for k-fold,
`RUN/round1/` for pseudo-labelling, `RUN/head/` for a linear probe's head before its fine-tune).

One function makes, trains and resumes them all, so a child always has the same layout (contract 2 plus
`parent` and the mode's own keys in config.json) and a resumed parent never retrains a finished child.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from engine.config import ConfigError, RunConfig
from engine.runs.folder import Run, atomic_write_json, now_iso
from engine.train.setup import TrainingSetup


def require_one_process(field: str, what: str) -> None:
    """Refuse a mode that trains child runs one after another under torchrun (every rank would train them all):
    `ConfigError` naming the field when WORLD_SIZE says this process is one of several."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(f"Field '{field}': {what} runs in one process; start it without torchrun.")


class TrainFn(Protocol):
    """`engine.train.fit.fit` or `engine.train.probe.fit_probe`."""

    def __call__(
        self,
        cfg: RunConfig,
        run: Run,
        resume: bool = ...,
        log: Callable[[str], None] = ...,
        progress: Callable[[int, int, str], None] | None = ...,
        setup: TrainingSetup | None = ...,
    ) -> dict: ...


def train_child(
    parent: Run,
    rel: str,
    cfg: RunConfig,
    train: TrainFn,
    setup: Callable[[], TrainingSetup],
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
    **meta: object,
) -> tuple[Run, dict]:
    """(the child run `parent/rel`, its summary): the saved summary of a child that completed before (a
    resumed parent), else the child trained now by `train` with `cfg` on `setup()` (prepared only when it
    trains), resumed from its checkpoint when it had stopped or failed. `meta` goes into a new child's
    config.json beside its config (`fold=2`, `round=1`, `phase='head'`). The summary is
    `{'state': 'stopped', ...}` when the child was asked to stop, directly or through its parent."""
    child = Run(parent.path / rel)
    state = child.raw_status().get("state") if child.exists() else None
    if state == "completed":
        return child, child.summary() or {}
    if not child.exists():
        child.path.mkdir(parents=True)
        atomic_write_json(
            child.path / "config.json",
            {"config": cfg.to_dict(), "run_id": child.id, "parent": parent.id, **meta, "created_at": now_iso()},
        )
        child.write_status(state="queued", epoch=0, epochs=cfg.epochs, step=0)
    if parent.stop_requested():
        child.request_stop()  # the child's loop checks its own folder
    resume = state in ("stopped", "failed")
    return child, train(cfg, child, resume=resume, log=log, progress=progress, setup=setup())

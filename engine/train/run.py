"""`run_training(cfg, run)`: the one entry point that trains a config into a prepared run folder.

It picks the mode, and each mode knows nothing of the ones above it:
- k-fold cross-validation (`cfg.kfold >= 2`): `engine.train.kfold`, which trains one child run per fold
  with the plain trainer or the probe;
- pseudo-labelling (`cfg.pseudo_label > 0`): `engine.train.pseudo`, two plain runs (round 1 in `RUN/round1/`);
- head first, then fine-tune (a linear probe with `cfg.finetune_epochs`): `engine.train.head_first`, the head
  run in `RUN/head/`, then the last stage fine-tuned into RUN;
- linear probe (`cfg.strategy == "linear_probe"`): `engine.train.probe`;
- everything else: `engine.train.fit`.

A failure of any kind is recorded in status.json before it is re-raised, so a run never stays
`running` after a crash or Ctrl-C (the CLI prints the error's sentence). The CLI's `train` and
`resume`, and so the background jobs, come through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from engine.config import RunConfig
from engine.runs.folder import Run
from engine.train.fit import EpochHook, fit
from engine.train.head_first import fit_head_first
from engine.train.kfold import fit_kfold
from engine.train.loop import TrainingFailed
from engine.train.probe import fit_probe
from engine.train.pseudo import fit_pseudo


def run_training(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
    epoch_hook: EpochHook | None = None,
) -> dict:
    """Train per `cfg` into `run` (made by `engine.train.jobs.prepare_run`); returns the summary, or
    `{'state': 'stopped', ...}` when the run was asked to stop. `resume` continues from the last checkpoint.
    `epoch_hook` (a sweep's pruning) reaches plain runs only: k-fold and the probe report no epochs to it."""
    main = int(os.environ.get("RANK", 0)) == 0  # under torchrun only rank 0 logs and writes the run folder
    if not main:
        log, progress = (lambda message: None), None
    try:
        if cfg.kfold >= 2:
            return fit_kfold(cfg, run, resume=resume, log=log, progress=progress)
        if cfg.pseudo_label > 0:
            return fit_pseudo(cfg, run, resume=resume, log=log, progress=progress)
        if cfg.strategy == "linear_probe" and cfg.finetune_epochs:
            return fit_head_first(cfg, run, resume=resume, log=log, progress=progress)
        if cfg.strategy == "linear_probe":
            return fit_probe(cfg, run, resume=resume, log=log, progress=progress)
        return fit(cfg, run, resume=resume, log=log, progress=progress, epoch_hook=epoch_hook)
    except TrainingFailed as e:
        if main:
            run.write_status(state="failed", error=str(e))
        raise
    except BaseException as e:  # any crash or Ctrl-C: the run must not stay 'running' forever
        if main:
            run.write_status(state="failed", error=f"{type(e).__name__}: {e}")
        raise

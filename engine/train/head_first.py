"""Head first, then a short fine-tune (`strategy=linear_probe` with `finetune_epochs` > 0): the transfer
recipe a practitioner runs on a CPU.

1. `RUN/head/` is a complete linear-probe run (contract 2): the frozen backbone's features computed once
   (cached), a head trained on them in seconds per epoch.
2. `RUN` itself then fine-tunes the backbone's last stage and the head for `finetune_epochs` epochs on the
   images (with the config's augmentation), starting from the head run's best weights, at a tenth of the
   head's learning rate (the head is already trained: a large rate would wreck what it learned), within
   what is left of the time budget.
3. Whichever of the two is better on val is RUN's model: when the fine-tune never beats the head, the
   head's weights and predictions are copied into RUN, so the second phase can only help.

RUN's config.json keeps the config the user gave (so a copy of it runs both phases again); summary.json
adds `head_first`: both phases' val/test figures, which was kept, and why. Why not fine-tune from the start:
a randomly initialised head sends large gradients into the pretrained stage in the first steps; training
the head first on cached features costs seconds and avoids that (Kumar et al. 2022, "LP-FT").
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from engine.config import RunConfig
from engine.data.dataset import Dataset
from engine.runs.folder import Run, now_iso
from engine.train.children import require_one_process, train_child
from engine.train.fit import fit
from engine.train.probe import fit_probe
from engine.train.records import best_value, improved, monitor_name
from engine.train.setup import dataset_for, prepare, write_header

HEAD = "head"  # the head run's folder inside RUN
LR_SCALE = 0.1  # the fine-tune's peak learning rate, as a share of the head's
MIN_LEFT = 0.05  # no fine-tune when less than this share of the time budget is left after the head


def finetune_config(cfg: RunConfig, head_run: Run, seconds_left: float) -> RunConfig:
    """The second phase's config: the last stage and head train from the head run's best weights."""
    return cfg.replace(
        strategy="finetune_last",
        finetune_epochs=0,
        epochs=cfg.finetune_epochs,
        lr=cfg.lr * LR_SCALE,
        weights_file=str(head_run.best_weights),
        pretrained=True,
        time_budget_s=max(1.0, seconds_left) if cfg.time_budget_s else 0.0,
    ).validate()


def keep_head(run: Run, head_run: Run) -> None:
    """Make the head run's model RUN's model: its best weights and its predictions (the fine-tuned model's
    pool predictions go too: the label queue must rank with the model RUN holds)."""
    shutil.copyfile(head_run.best_weights, run.best_weights)
    run.predictions.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        source = head_run.predictions / f"{split}.npz"
        if source.exists():
            shutil.copyfile(source, run.predictions / f"{split}.npz")
    (run.predictions / "pool.npz").unlink(missing_ok=True)


def head_only(
    cfg: RunConfig, run: Run, head_run: Run, head: dict, ds: Dataset, why: str, log: Callable[[str], None]
) -> dict:
    """RUN as a copy of the head run (header, curves, weights, predictions) when no fine-tune can follow."""
    setup = prepare(cfg.replace(finetune_epochs=0), dataset=ds)
    write_header(run, setup, cfg)
    keep_head(run, head_run)
    shutil.copyfile(head_run.last_weights, run.last_weights)
    shutil.copyfile(head_run.path / "metrics.jsonl", run.path / "metrics.jsonl")
    log(f"no fine-tune: {why}; the head's model is this run's")
    summary = {
        **head,
        "notes": [*head.get("notes", []), f"No fine-tune: {why}; the head's model is kept."],
        "head_first": {"head_run": HEAD, "kept": HEAD, "finetune": {"epochs": 0, "skipped": why}},
    }
    run.write_summary(summary)
    run.write_status(state="completed", epoch=head.get("epochs_run"), step=head.get("steps"))
    return summary


def fit_head_first(
    cfg: RunConfig,
    run: Run,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """The head into `run/head/`, then the fine-tune into `run`; returns RUN's summary with `head_first` added
    (or `{'state': 'stopped', ...}`). A completed head run is kept on resume."""
    require_one_process("finetune_epochs", "the head-first recipe")
    wall0 = time.time()
    ds = dataset_for(cfg, progress)  # both phases train on this one decoded copy
    head_cfg = cfg.replace(finetune_epochs=0)
    run.write_status(
        state="running", phase=HEAD, pid=os.getpid(), started_at=run.raw_status().get("started_at") or now_iso()
    )
    log(f"head first: {cfg.model}'s features, then the head ({cfg.epochs} epochs), into {HEAD}/")
    head_run, head = train_child(
        run,
        HEAD,
        head_cfg,
        fit_probe,
        lambda: prepare(head_cfg, progress=progress, dataset=ds),
        log,
        progress,
        phase=HEAD,
    )
    if head.get("state") == "stopped":
        run.write_status(state="stopped", phase=HEAD)
        return {"state": "stopped", "phase": HEAD}
    spent = float(head.get("wall_seconds") or time.time() - wall0)
    left = cfg.time_budget_s - spent
    if cfg.time_budget_s and left < MIN_LEFT * cfg.time_budget_s:
        return head_only(
            cfg,
            run,
            head_run,
            head,
            ds,
            f"the features and the head took {spent:.0f} s of the {cfg.time_budget_s:.0f} s time budget",
            log,
        )
    ft_cfg = finetune_config(cfg, head_run, left)
    log(
        f"then fine-tuning the last stage for {cfg.finetune_epochs} epochs at lr {ft_cfg.lr:g}, from the head's best "
        "weights" + (f", within the {left:.0f} s left of the time budget" if cfg.time_budget_s else "")
    )
    summary = fit(
        ft_cfg,
        run,
        resume=resume and run.last_state.exists(),
        log=log,
        progress=progress,
        setup=prepare(ft_cfg, progress=progress, dataset=ds),
        header=cfg,
    )
    if summary.get("state") == "stopped":
        return summary
    ft_final = summary.get("final", {})
    monitor = monitor_name(cfg, ds.task)
    head_best, ft_best = best_value(head_run.metrics(), monitor), best_value(run.metrics(), monitor)
    kept = "finetune" if improved(ft_best, head_best, monitor) else HEAD
    if kept == HEAD:
        keep_head(run, head_run)
        summary["final"] = head.get("final", {})
        summary["best"] = summary["final"].get("val", {})
        summary["notes"] = [
            *summary.get("notes", []),
            f"The fine-tune did not beat the head on val ({monitor}); the head's model is kept.",
        ]
        log(f"the fine-tune did not beat the head on val ({monitor}): keeping the head's model")
    summary["head_first"] = {
        "head_run": HEAD,
        "monitor": monitor,
        "head": {"best_val": head_best, "final": head.get("final", {}), "wall_seconds": head.get("wall_seconds")},
        "finetune": {"best_val": ft_best, "final": ft_final, "epochs": ft_cfg.epochs, "lr": ft_cfg.lr},
        "kept": kept,
    }
    summary["wall_seconds"] = round(time.time() - wall0, 2)
    run.write_summary(summary)
    return summary

"""`train`, `runs list|delete`, `stop` and `resume`: the command line for runs.

Every `RunConfig` field is a flag (`batch_size` -> `--batch-size`), generated from the dataclass so
the CLI, the config file and the Train page can never drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING

from engine.cli.flags import JSON, NO_PROGRESS, RUNS_DIR
from engine.cli.progress import TqdmProgress
from engine.cli.values import numbers
from engine.config import GROUPS, ConfigError, RunConfig, field_groups

if TYPE_CHECKING:
    from engine.runs.folder import Run


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


#: RunConfig fields lr-find has no use for (one short sweep in one process, with its own learning rates, saving
#: nothing): they are not its flags, so giving one is refused instead of silently ignored
LR_FIND_UNUSED = (
    "name",
    "kfold",
    "nproc",
    "sync_bn",
    "compile",
    "epochs",
    "patience",
    "monitor",
    "time_budget_s",
    "lr",
    "scheduler",
    "warmup_epochs",
    "step_epochs",
    "step_gamma",
)


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per config field (but those in `skip`); defaults are suppressed so we know which ones the user
    gave."""
    for group, group_fields in field_groups().items():
        g = parser.add_argument_group(group, GROUPS[group])
        for f in (f for f in group_fields if f.name not in skip):
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else f.default_factory()
            help_text = f"{f.metadata['help']} (default: {default!r})"
            if isinstance(default, bool):
                g.add_argument(
                    flag,
                    type=_parse_bool,
                    nargs="?",
                    const=True,
                    default=argparse.SUPPRESS,
                    metavar="BOOL",
                    help=help_text,
                )
            elif isinstance(default, list):
                g.add_argument(
                    flag,
                    type=numbers(0, lo_open=True),
                    default=argparse.SUPPRESS,
                    metavar="W1,W2,...",
                    help=help_text,
                )
            else:
                g.add_argument(
                    flag, type=type(default), default=argparse.SUPPRESS, choices=f.metadata["choices"], help=help_text
                )


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        parents=[RUNS_DIR, NO_PROGRESS],
        help="train a model (foreground, with a progress bar)",
        description="Train a model into a new run folder. With only --dataset, the defaults pick a "
        "recipe that suits the dataset and print what they chose and why.",
    )
    train.add_argument(
        "--config", help="a JSON/YAML config file (a run's config.json starts a new run with its config)"
    )
    train.add_argument(
        "--run",
        help="a prepared run folder to train into, with the config.json in it (what "
        "background jobs run); no other config source goes with it",
    )
    train.add_argument(
        "--preset",
        help="a named starting point: quick (a small, fast recipe for --dataset, "
        "Fashion-MNIST when none is given) or demo (the Fashion-MNIST demo); the "
        "config file and flags override it",
    )
    train.add_argument("--background", action="store_true", help="start as a background job and return")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.add_argument(
        "--no-estimate",
        action="store_true",
        help="skip the time estimate printed before training (a short timed probe of the model on "
        "this device, cached per model, size, batch and device)",
    )
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    est = sub.add_parser(
        "estimate",
        help="how long a run would take on this device (a short timed probe, cached)",
        description="Time a few training steps of the configured model at its size, batch, "
        "precision and memory format on this device (cached per configuration; a "
        "finished run's own speeds replace the probe's), and print the time per "
        "epoch and for the whole run. Takes the same config sources as train.",
    )
    est.add_argument("--config", help="a JSON/YAML config file")
    est.add_argument("--preset", help="a named starting point: quick (for --dataset) or demo")
    est.add_argument("--refresh", action="store_true", help="measure again instead of using the cached figures")
    est.add_argument("--json", action="store_true", help="print the estimate and the measured speeds as JSON")
    add_config_flags(est)
    est.set_defaults(func=cmd_estimate)

    lrf = sub.add_parser(
        "lr-find",
        parents=[NO_PROGRESS],
        help="LR range test: loss vs learning rate and a suggested value",
        description="Train briefly with an exponentially rising learning rate on the configured "
        "data and model (nothing is saved) and suggest a learning rate. It runs in one process and sets "
        "the learning rates itself, so the flags of a whole run ("
        + ", ".join("--" + n.replace("_", "-") for n in LR_FIND_UNUSED)
        + ") are not its options.",
    )
    lrf.add_argument("--config", help="a JSON/YAML config file")
    lrf.add_argument("--preset", help="a named starting point: quick (for --dataset) or demo")
    lrf.add_argument("--steps", type=int, default=100, help="batches in the sweep")
    lrf.add_argument("--start-lr", type=float, default=1e-6, help="the sweep's first learning rate (default 1e-6)")
    lrf.add_argument("--end-lr", type=float, default=1.0, help="the sweep's last learning rate (default 1)")
    lrf.add_argument("--json", action="store_true", help="print lrs, losses and the suggestion as JSON")
    lrf.set_defaults(func=cmd_lr_find)
    add_config_flags(lrf, skip=LR_FIND_UNUSED)

    runs = sub.add_parser("runs", help="list or delete runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="SUBCOMMAND", required=True)
    ls = runs_sub.add_parser("list", parents=[RUNS_DIR, JSON], help="the runs, newest first")
    ls.set_defaults(func=cmd_runs_list)
    rm = runs_sub.add_parser("delete", parents=[RUNS_DIR], help="delete a finished run folder")
    rm.add_argument("run", help="run id or run folder")
    rm.set_defaults(func=cmd_runs_delete)

    stop = sub.add_parser("stop", parents=[RUNS_DIR], help="ask a running training to stop at the next batch")
    stop.add_argument("run", help="run id or run folder")
    stop.set_defaults(func=cmd_stop)

    resume = sub.add_parser(
        "resume", parents=[RUNS_DIR, NO_PROGRESS], help="continue a stopped or crashed run from its last checkpoint"
    )
    resume.add_argument("run", help="run id or run folder")
    resume.add_argument(
        "--background", action="store_true", help="resume as a background job and return (output in RUN/train.log)"
    )
    resume.add_argument("--json", action="store_true", help="print the summary as JSON")
    resume.set_defaults(func=cmd_resume)


def build_config(args: argparse.Namespace) -> tuple[RunConfig, list[str]]:
    """Preset < config file < flags; then dataset-aware defaults for what none of them set.

    A preset never overrides a value given in the config file or as a flag: `--preset quick --dataset D`
    is the quick recipe for D (`engine.train.recipes.quick_recipe`), `--preset quick` alone the quick
    recipe for the default dataset (Fashion-MNIST, where it is the demo), `--preset demo` the
    Fashion-MNIST demo."""
    from engine.device import resolve_device

    flags = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    loaded = RunConfig.load(args.config) if args.config else None
    values: dict = {}
    reasons: list[str] = []
    if args.preset:
        from engine.train.recipes import QUICK, apply_preset, quick_recipe

        given = {**(_explicit(loaded) if loaded else {}), **flags}
        if args.preset == QUICK:
            from engine.data import quick_stats

            dataset = given.get("dataset", RunConfig().dataset)
            gpu = resolve_device(given.get("device", "auto")).type == "cuda"
            values, reasons = quick_recipe(quick_stats(dataset), gpu=gpu)
            values["dataset"] = dataset
            reasons = [r for r in reasons if not (r.startswith("train_limit") and "train_limit" in given)]
        else:
            values = apply_preset(args.preset)
    if loaded is not None:
        values.update(loaded.to_dict() if not values else _explicit(loaded))
    values.update(flags)
    if not args.preset and not args.config:
        from engine.data import quick_stats
        from engine.train.recipes import suggest

        dataset = values.get("dataset", RunConfig().dataset)
        stats = quick_stats(dataset)
        gpu = resolve_device(values.get("device", "auto")).type == "cuda"
        chosen, reasons = suggest(stats, set(values), gpu=gpu, values=values)
        values = {**chosen, **values}
    cfg = RunConfig(**values).validate()
    if cfg.sync_bn and resolve_device(cfg.device).type != "cuda":  # from a flag, a config file or a preset
        given = "--sync-bn" if flags.get("sync_bn") else "sync_bn: true in the config"
        raise ConfigError(
            f"{given} synchronises batch norm across GPUs, and this run trains on the CPU; "
            "leave it out (or pass --sync-bn false)."
        )
    from engine.train.setup import image_size_for

    image_size_for(cfg)  # a size the model cannot take is refused before a run folder exists, not in the job
    return cfg, reasons


def _explicit(cfg: RunConfig) -> dict:
    default = RunConfig()
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)}


def cmd_train(args: argparse.Namespace) -> int:
    from engine.train import jobs

    if args.run:
        run, cfg = _prepared_run(args)
    else:
        cfg, reasons = build_config(args)
        for r in reasons:
            print(f"chose {r}", file=sys.stderr)
        if not args.no_estimate:
            print_estimate(cfg)
        if args.background:
            run = jobs.start(cfg, args.runs_dir)
            print(run.path)
            return 0
        run = _shared_run(cfg, args.runs_dir)
    if cfg.nproc > 1 and not jobs.under_torchrun():
        return _relaunch_ddp(cfg, run, ["train", "--run", str(run.path)], args)
    return _run_foreground(cfg, run, resume=False, args=args)


def print_estimate(cfg: RunConfig) -> None:
    """'estimate: about 12 s per epoch, 2.5 min in total on this CPU' on stderr, from a timed probe of the
    model (`engine.train.timing`). A dataset or model that cannot be used prints nothing here: training
    reports the same problem as one sentence right after."""
    from engine.data import quick_stats
    from engine.errors import LoupeError
    from engine.train.timing import estimate_run

    try:
        est = estimate_run(cfg, quick_stats(cfg.dataset))
    except LoupeError:
        return
    print(f"estimate: {est.describe()}; {est.throughput.describe()} on {est.throughput.device}", file=sys.stderr)


def _prepared_run(args: argparse.Namespace) -> tuple[Run, RunConfig]:
    """`--run RUN`: the run folder and the config in its config.json; any other config source is refused,
    since it would silently not apply."""
    from engine.runs.folder import find_run

    given = [
        flag
        for flag, value in (("--config", args.config), ("--preset", args.preset), ("--background", args.background))
        if value
    ]
    given += ["--" + f.name.replace("_", "-") for f in fields(RunConfig) if hasattr(args, f.name)]
    if given:
        raise ConfigError(
            f"--run trains a prepared run folder with the config in its config.json; leave out {', '.join(given)}."
        )
    run = find_run(args.run, args.runs_dir)
    return run, RunConfig.load(run.path / "config.json")


def _relaunch_ddp(cfg: RunConfig, run, engine_args: list[str], args: argparse.Namespace) -> int:
    """`--nproc N` outside torchrun: the same command again under torchrun, N processes, in the foreground."""
    from engine.device import resolve_device
    from engine.train import jobs

    flags = [f for f in ("--no-progress", "--json") if getattr(args, f[2:].replace("-", "_"), False)]
    print(f"run {run.id}: DDP with {cfg.nproc} processes (torchrun --standalone)", file=sys.stderr)
    return jobs.launch_ddp(run, engine_args + flags, cfg.nproc, resolve_device(cfg.device).type)


def _shared_run(cfg: RunConfig, runs_dir: str | None):
    """A new run folder; under torchrun, rank 0 makes it and every rank gets its path."""
    from engine.runs.folder import Run
    from engine.train import distributed, jobs

    d = distributed.setup(cfg.device)
    if not d.enabled:
        return jobs.prepare_run(cfg, runs_dir)
    import torch.distributed as tdist

    path = [str(jobs.prepare_run(cfg, runs_dir).path) if d.is_main else None]
    tdist.broadcast_object_list(path, src=0)
    return Run(path[0])


def _run_foreground(cfg: RunConfig, run, resume: bool, args: argparse.Namespace) -> int:
    from engine.device import resolve_device
    from engine.train.jobs import device_slot
    from engine.train.run import run_training

    print(f"run {run.id} in {run.path}", file=sys.stderr)
    progress = TqdmProgress(enabled=not args.no_progress)

    def log(msg):
        return progress.write(str(msg))

    try:
        with device_slot(run, resolve_device(cfg.device).type):
            run_training(cfg, run, resume=resume, log=log, progress=progress)
    finally:
        progress.close()
    if int(os.environ.get("RANK", 0)) != 0:
        return 0  # under torchrun, rank 0 reports for the whole job
    summary = run.summary() or {}
    status = run.raw_status()
    state, reason = status.get("state"), status.get("stop_reason")
    if args.json:
        print(
            json.dumps(
                {"run": run.id, "path": str(run.path), "state": state, "stop_reason": reason, **summary}, indent=2
            )
        )
    else:
        budget = f" (time budget: {status.get('epoch')} of {cfg.epochs} epochs)" if reason == "time budget" else ""
        print(f"{state}{budget}: {run.path}")
        for split, m in (summary.get("final") or {}).items():
            print(f"  {split}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine.data import quick_stats
    from engine.train.timing import estimate_run, measure_throughput, planned_shape

    cfg, _ = build_config(args)
    stats = quick_stats(cfg.dataset)
    size, channels = planned_shape(cfg, stats)
    multilabel = (cfg.task if cfg.task != "auto" else stats.get("task")) == "multilabel"
    tp = measure_throughput(
        cfg, size, channels, max(2, len(stats.get("classes") or [])), multilabel, refresh=args.refresh
    )
    est = estimate_run(cfg, stats, tp)
    if args.json:
        print(
            json.dumps(
                {
                    **asdict(est),
                    "seconds_per_epoch": est.seconds_per_epoch,
                    "describe": est.describe(),
                    "image_size": size,
                    "channels": channels,
                },
                indent=2,
            )
        )
    else:
        print(f"{est.describe()}; {tp.describe()} on {tp.device}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from engine.train.lr_find import find_lr

    cfg, _ = build_config(args)
    progress = TqdmProgress(enabled=not args.no_progress)
    try:
        result = find_lr(cfg, num_steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr, progress=progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(result))
        return 0
    lrs, losses = result["lrs"], result["losses"]
    for i in range(0, len(lrs), max(1, len(lrs) // 12)):
        print(f"lr {lrs[i]:9.2e}  loss {losses[i]:.4f}")
    print(
        f"suggested lr: {result['suggested_lr']:.2e} (steepest fall of the smoothed loss; "
        f"minimum at {result['min_loss_lr']:.2e})"
    )
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from engine.runs.folder import list_runs, run_row

    rows = [run_row(r) for r in list_runs(args.runs_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs yet; start one with: python -m engine train --preset quick")
        return 0
    for r in rows:
        best = f"{r['monitor']} {r['best']:.4f}" if isinstance(r["best"], float) else "-"
        where = f"fold {r['fold'] or 0}/{r['kfold']}" if r.get("kfold") else f"epoch {r['epoch']}/{r['epochs']}"
        print(f"{r['id']:<52} {r['state']:<25} {r['model']:<22} {r['dataset']:<28} {where}  {best}")
    return 0


def cmd_runs_delete(args: argparse.Namespace) -> int:
    from engine.runs.folder import delete_run, find_run

    run = find_run(args.run, args.runs_dir)
    delete_run(run)
    print(f"deleted {run.path}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from engine.runs.folder import find_run
    from engine.train import jobs

    run = find_run(args.run, args.runs_dir)
    jobs.stop(run)
    print(f"asked {run.id} to stop; it saves its last checkpoint at the next batch")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.runs.folder import find_run
    from engine.train import jobs

    run = find_run(args.run, args.runs_dir)
    if args.background:
        jobs.resume(run)
        print(run.path)
        return 0
    cfg = RunConfig.load(run.path / "config.json")
    if jobs.under_torchrun():  # the launcher below checked and cleared the run already
        return _run_foreground(cfg, run, resume=True, args=args)
    if run.raw_status().get("state") != "queued" and not jobs.can_resume(run):
        jobs.resume(run)  # raises the clear "cannot resume" error
    run.clear_stop()
    if cfg.nproc > 1:
        run.write_status(state="queued", error=None)
        return _relaunch_ddp(cfg, run, ["resume", str(run.path)], args)
    return _run_foreground(cfg, run, resume=True, args=args)

"""`sweep`: an Optuna study of training runs from the shell (`engine.sweep`).

    python -m engine sweep --dataset D --param lr=loguniform:1e-4:1e-2 --param batch_size=choice:32,64,128 \
        --trials 12 --time-budget-s 1800 [--grid] [--pruner median|halving|none] [--study NAME] [--storage URL]

Every `RunConfig` field is a flag here too and sets the base config every trial starts from (but
`--time-budget-s`, which is the whole sweep's wall time here, and `--name`, which each trial gets from
the study). `sweep --study NAME` alone continues a study (killed or stopped trials are tried again). A tqdm
bar counts finished trials with the best so far; the trials table and the best config as YAML go to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from engine.cli.flags import NO_PROGRESS, RUNS_DIR
from engine.cli.train import add_config_flags, build_config
from engine.config import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep",
        parents=[RUNS_DIR, NO_PROGRESS],
        help="search hyperparameters: an Optuna study whose trials are runs",
        description="Search RunConfig fields with Optuna (TPE, or --grid), pruning hopeless trials from their "
        "per-epoch validation figure; each trial is a run folder tagged with the study. The study is stored in "
        "RUNS/sweeps.db (or --storage, any database Optuna supports, so several machines can work one study); "
        "`sweep --study NAME` continues it (trials a killed or stopped sweep left unfinished are tried again).",
    )
    sw.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=KIND:VALUES",
        help="a searched field: lr=loguniform:1e-4:1e-2, dropout=uniform:0:0.5, batch_size=choice:32,64,128 "
        "(repeat for each field)",
    )
    sw.add_argument("--trials", type=int, default=20, help="finished trials the study aims for (default 20)")
    sw.add_argument(
        "--time-budget-s",
        dest="sweep_budget_s",
        type=float,
        default=0.0,
        help="wall time of this sweep in seconds (0: no limit); the last trial gets what is left",
    )
    sw.add_argument("--grid", action="store_true", help="try every combination of the choice: values (no ranges)")
    sw.add_argument(
        "--pruner",
        choices=("median", "halving", "none"),
        default="median",
        help="end trials early whose per-epoch validation figure is worse than the median of earlier trials at "
        "that epoch (median, the default), by successive halving, or never (none)",
    )
    sw.add_argument("--study", help="the study's name (default: sweep-DATE-DATASET); an existing one continues")
    sw.add_argument(
        "--storage",
        help="an Optuna storage URL, e.g. postgresql://user:pass@host/db for several machines "
        "(default: sqlite in the runs folder)",
    )
    sw.add_argument("--config", help="a JSON/YAML file with the base config")
    sw.add_argument("--preset", help="a named starting point for the base config: quick or demo")
    sw.add_argument("--best-config", metavar="FILE.yaml", help="also write the best config to this YAML file")
    sw.add_argument("--json", action="store_true", help="print the trials and the best config as JSON")
    add_config_flags(sw, skip=("time_budget_s", "name"))
    sw.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.sweep.report import best_yaml, format_table, trial_rows
    from engine.sweep.space import parse_space
    from engine.sweep.study import SweepSettings, check_name, new_study_name, run_sweep

    config_given = bool(args.config or args.preset) or any(hasattr(args, f.name) for f in fields(RunConfig))
    settings = None
    if args.param or config_given or not args.study:
        base, reasons = build_config(args)
        for r in reasons:
            print(f"chose {r}", file=sys.stderr)
        settings = SweepSettings(
            base=base,
            params=parse_space(args.param, base, args.grid),
            trials=args.trials,
            time_budget_s=args.sweep_budget_s,
            grid=args.grid,
            pruner=args.pruner,
        ).validate()
    name = check_name(args.study) if args.study else new_study_name(settings.base)
    bar = _Bar(enabled=not args.no_progress)
    print(f"study {name}", file=sys.stderr)
    try:
        study = run_sweep(settings, name, args.runs_dir, args.storage, log=bar.write, on_progress=bar.update)
    finally:
        bar.close()
    text = best_yaml(study, args.runs_dir)
    if args.best_config and text:
        from pathlib import Path

        Path(args.best_config).write_text(text)
    if args.json:
        print(json.dumps({"study": name, "trials": trial_rows(study), "best_config": text}, indent=2, default=str))
        return 0
    print(format_table(study))
    if text:
        print()
        print(text, end="")
    else:
        print("no trial has completed yet, so there is no best config")
    return 0


class _Bar:
    """Finished trials out of the target, with the best figure so far, as a tqdm bar on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def update(self, prog) -> None:  # a `engine.sweep.study.SweepProgress`
        from engine.metrics.display import format_metric, label

        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=prog.target, initial=prog.done, desc="trials", unit="trial", file=sys.stderr)
        if prog.done > self.bar.n:
            self.bar.update(prog.done - self.bar.n)
        best = f"best {label(prog.monitor)} {format_metric(prog.monitor, prog.best)}" if prog.best is not None else ""
        now = f"trial {prog.trial} epoch {prog.epoch}/{prog.epochs}" if prog.trial is not None else ""
        self.bar.set_postfix_str("  ".join(x for x in (best, now) if x))

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(str(message), file=sys.stderr) if self.bar is not None else print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""`python -m engine ...`: the command line (DESIGN.md, contract 3).

Every subcommand prints a progress bar on stderr for long work, results on stdout (`--json` for
scripts), and user errors as one sentence on stderr with exit code 2 (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from engine.errors import LoupeError


class TqdmProgress:
    """Adapts the engine's `(done, total, stage)` callback to tqdm bars, one bar per stage."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.stage = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="img", file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def write(self, message: str) -> None:
        """A log line that does not break the progress bar."""
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr) if self.bar is not None else print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_data_stats(args: argparse.Namespace) -> int:
    from engine.data import dataset_stats, open_dataset, quick_stats
    from engine.data.stats import format_stats_text

    progress = TqdmProgress(enabled=not args.no_progress)
    try:
        if args.quick:
            stats = quick_stats(args.spec, task=args.task, seed=args.seed, progress=progress)
        else:
            ds = open_dataset(args.spec, image_size=args.image_size, task=args.task, seed=args.seed, progress=progress)
            stats = dataset_stats(ds)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(stats, indent=2, allow_nan=False))
    else:
        print(format_stats_text(stats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Loupe's engine: datasets, training, evaluation, explanations and predictions from the shell.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    stats = data_sub.add_parser(
        "stats",
        help="class balance, splits, image sizes, corrupt files and duplicates of a dataset",
        description="Print the statistics of a dataset spec (builtin:NAME, a folder, a .zip, a .csv or a .npz).",
    )
    stats.add_argument("spec", help="dataset spec, e.g. builtin:fashion-mnist or path/to/folder")
    stats.add_argument("--json", action="store_true", help="print JSON for scripts")
    stats.add_argument("--quick", action="store_true", help="headers only: no decoding, no corrupt/duplicate check")
    stats.add_argument("--image-size", type=int, default=None, help="working resolution of the decode cache")
    stats.add_argument("--task", choices=["binary", "multiclass", "multilabel"], default=None, help="override the inferred task")
    stats.add_argument("--seed", type=int, default=0, help="seed for splits and derived datasets")
    stats.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    stats.set_defaults(func=cmd_data_stats)

    from engine.cli.train import register

    register(sub)
    from engine.cli.evaluate import register as register_eval
    register_eval(sub)
    from engine.cli.explain import register as register_explain
    register_explain(sub)
    from engine.cli.predict import register as register_predict
    register_predict(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except LoupeError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not Loupe: a runs folder under a file, a full disk, permissions
        if args.debug:
            raise
        where = f" for '{e.filename}'" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; check that the path is a folder you can write to and that the "
              "disk has free space (rerun with --debug for the traceback).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

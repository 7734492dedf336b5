"""`python -m engine ...`: the command line (contract 3 in ARCHITECTURE.md): the top-level parser and the
error policy, nothing else.

Every subcommand prints a progress bar on stderr for long work, results on stdout (`--json` for
scripts), and user errors as one sentence on stderr with exit code 2 (a traceback only with --debug).
The subcommands live in one module per command group (`data`, `train`, `evaluate`, `explain`,
`predict`), each with a `register(sub)`; their flags shared across groups are in `engine.cli.flags`,
the progress bars in `engine.cli.progress`. Building the parser imports no torch: each group imports
the engine only inside its command functions, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from engine.cli import data, evaluate, explain, predict, train
from engine.errors import LoupeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Loupe's engine: datasets, training, evaluation, explanations and predictions from the shell.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for group in (data, train, evaluate, explain, predict):  # in the order `--help` lists them
        group.register(sub)
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
        print(
            f"error: {e.strerror or e}{where}; check that the path is a folder you can write to and that the "
            "disk has free space (rerun with --debug for the traceback).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

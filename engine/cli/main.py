"""`python -m engine ...`: the command line (contract 3 in ARCHITECTURE.md): the top-level parser and the
error policy, nothing else.

Every subcommand prints a progress bar on stderr for long work, results on stdout (`--json` for
scripts), and user errors as one sentence on stderr with exit code 2 (a traceback only with --debug,
which is accepted before or after the subcommand and keeps the exit code). A closed pipe (`... | head -1`)
ends quietly with 141, as standard tools killed by SIGPIPE do. The subcommands live in one module per
command group (`data`, `train`, `evaluate`, `explain`, `predict`), each with a `register(sub)`; their flags
shared across groups are in `engine.cli.flags`, the progress bars in `engine.cli.progress`. Building the
parser imports no torch: each group imports the engine only inside its command functions, so `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from engine.cli import data, evaluate, explain, predict, sweep, train
from engine.errors import LoupeError

USER_ERROR = 2  # exit code of every user error, with or without --debug
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s `yes`
DEBUG_HELP = "show the full traceback of an error (the exit code stays 2 for user errors)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Loupe's engine: datasets, training, evaluation, explanations and predictions from the shell.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for group in (data, train, evaluate, explain, predict, sweep):  # in the order `--help` lists them
        group.register(sub)
    for leaf in leaves(parser):  # --debug after the subcommand too: `engine predict ... --debug`
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser that runs a command (`data stats`, `train`, `runs list`, ...), walking nested subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for child in dict.fromkeys(a.choices.values()) for leaf in leaves(child)]


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into a closed pipe says nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests): nothing will be flushed there
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE
    return code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    debug = bool(getattr(args, "debug", False))
    try:
        return func(args)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not an error of the user's, handled quietly in `main`
    except LoupeError as e:
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return USER_ERROR
    except OSError as e:  # the environment, not Loupe: a runs folder under a file, a full disk, permissions
        if debug:
            traceback.print_exc(file=sys.stderr)
        where = f" for '{e.filename}'" if e.filename else ""
        print(
            f"error: {e.strerror or e}{where}; check that the path is a folder you can write to and that the "
            "disk has free space (rerun with --debug for the traceback).",
            file=sys.stderr,
        )
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

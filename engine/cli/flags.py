"""Flags that several subcommands share, declared once as argparse parent parsers.

A command module adds them with `sub.add_parser(..., parents=[RUNS_DIR, JSON])`: each flag then has one
spelling, one default and one help text everywhere it appears. A flag whose meaning is specific to one
command (`train --json` prints the training summary) stays with that command. A leaf like
`engine.cli.progress`: the command modules import it, it imports nothing of the engine.
"""

from __future__ import annotations

import argparse
from typing import Any


def _parent(*flags: str, **options: Any) -> argparse.ArgumentParser:
    """A help-less parser holding one argument, for `parents=`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*flags, **options)
    return parser


RUNS_DIR = _parent("--runs-dir", default=None, help="where run folders are (default: $LOUPE_RUNS_DIR or ./runs)")
JSON = _parent("--json", action="store_true", help="print JSON for scripts")
NO_PROGRESS = _parent("--no-progress", action="store_true", help="no progress bar on stderr")

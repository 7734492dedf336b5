"""README.md names every subcommand and every `LOUPE_*` environment variable the code reads (issue 14,
item 14): a command or a setting users cannot find in the README might as well not exist."""

from __future__ import annotations

import argparse
import re

from engine.cli.main import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
#: where the code that reads environment variables lives (the app, the engine, the benchmarks, the tests'
#: own settings such as the browser's path, and the Makefile)
CODE = ["engine", "app", "pages", "bench", "tests", "streamlit_app.py", "Makefile"]


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """'data stats', 'train', 'runs list', ... : every command a user can run."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = subcommands(child, f"{prefix}{name} ")
                out += nested or [f"{prefix}{name}"]
    return out


def test_every_subcommand_appears_in_the_readme_as_a_command_line():
    commands = subcommands(build_parser())
    assert {"data stats", "runs list", "runs delete", "estimate", "attack", "export"} <= set(commands)
    missing = [c for c in commands if f"python -m engine {c}" not in README]
    assert missing == []


def _read_variables() -> set[str]:
    names: set[str] = set()
    for entry in CODE:
        path = ROOT / entry
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", "")]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                names |= set(re.findall(r"\bLOUPE_[A-Z0-9_]+\b", f.read_text(errors="replace")))
    return names


def test_every_loupe_environment_variable_the_code_reads_appears_in_the_readme():
    names = _read_variables()
    assert {"LOUPE_RUNS_DIR", "LOUPE_STATE_FILE", "LOUPE_NO_QUEUE", "LOUPE_PEAK_TFLOPS"} <= names
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert missing == []


def test_the_readme_states_the_quick_presets_time_budget():
    from engine.train.recipes import SMALL_QUICK

    assert f"time budget of {SMALL_QUICK['time_budget_s']:g} s" in README
    assert "completed (time budget)" in README

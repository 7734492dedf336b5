"""The CLI's progress bars: `TqdmProgress` turns the engine's `(done, total, stage)` callbacks into tqdm bars
on stderr, so stdout stays clean for results and `--json`.

Each bar's unit is what its stage counts (`unit_of`): training, decoding, features, attacks and
prediction count images; reading headers and extracting an archive count files; the LR range test
counts optimiser steps. A stage may start part-way (a resumed run's training): the bar starts there,
so its rate and ETA count the work done since, not the work done before a stop.

A leaf on purpose: every command module (`engine.cli.data`, `train`, `explain`, `predict`) imports it
from here, and `engine.cli.main` imports those modules, so nothing here may import them or `main`.
"""

from __future__ import annotations

import sys
from typing import Any

# What each stage's `done` counts, where it is not images (engine stage names; attacks are "<attack> eps=<e>").
UNITS = {"reading headers": "file", "extracting": "file", "lr range test": "step"}


def unit_of(stage: str) -> str:
    """The unit of a stage's bar: 'img', 'file' or 'step' (see `UNITS`)."""
    return UNITS.get(stage, "img")


class TqdmProgress:
    """Adapts the engine's `(done, total, stage)` callback to tqdm bars, one bar per stage."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None  # the current stage's tqdm bar (tqdm is imported only once a bar is drawn)
        self.stage: str | None = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            # the first report is where the stage stands (0, or a resumed run's images so far): the rate
            # counts from there
            self.bar = tqdm(total=total, initial=done, desc=stage, unit=unit_of(stage), file=sys.stderr, leave=False)
            return
        if total != self.bar.total:
            self.bar.total = total
        if done >= self.bar.n:
            self.bar.update(done - self.bar.n)  # through update(), so tqdm's rate sees each increment
        else:  # the stage went back (it restarted): show where it is
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

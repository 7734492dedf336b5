"""The CLI's progress bars: `TqdmProgress` turns the engine's `(done, total, stage)` callbacks into tqdm bars
on stderr, so stdout stays clean for results and `--json`.

A leaf on purpose: every command module (`engine.cli.data`, `train`, `explain`, `predict`) imports it
from here, and `engine.cli.main` imports those modules, so nothing here may import them or `main`.
"""

from __future__ import annotations

import sys
from typing import Any


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

"""Reading Loupe's numeric `LOUPE_*` environment variables (limits such as `LOUPE_MAX_CSV_ROWS`) with one rule.

Unset or empty means the default; anything else must be a positive whole number (`env_int`) or a
positive finite number (`env_float`), or the user gets one sentence naming the variable, its value and
what is allowed, rather than a `ValueError` from deep inside a reader. Every `LOUPE_*` number is read
here. A shared basic beside `errors.py`: any stage may read a limit, so this module imports nothing of
the engine but errors.
"""

from __future__ import annotations

import math
import os

from engine.errors import EnvError, excerpt


def env_int(name: str, default: int) -> int:
    """The positive integer in environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value <= 0:
        raise EnvError(f"{name} must be a positive whole number, got {excerpt(raw)}; fix or unset it.")
    return value


def env_float(name: str, default: float) -> float:
    """The positive finite number in environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):  # NaN fails every comparison, so test it first
        raise EnvError(f"{name} must be a positive number, got {excerpt(raw)}; fix or unset it.")
    return value

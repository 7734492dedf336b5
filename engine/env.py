"""Reading Loupe's numeric `LOUPE_*` environment variables (limits such as `LOUPE_MAX_CSV_ROWS`) with one rule.

Unset or empty means the default; anything else must be a positive whole number, or the user gets one
sentence naming the variable, rather than a `ValueError` from deep inside a reader. A shared basic
beside `errors.py`: any stage may read a limit, so this module imports nothing of the engine but errors.
"""

from __future__ import annotations

import os

from engine.errors import EnvError


def env_int(name: str, default: int) -> int:
    """The positive integer in environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise EnvError(f"{name} must be a positive whole number, got {raw!r}; fix or unset it.")
    return value

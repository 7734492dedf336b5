"""Argparse `type=` functions: each validates one flag's value where it enters (issue 15).

argparse turns their `ArgumentTypeError` into exit code 2 and one line naming the option, its value
(cut to an excerpt by `engine.errors.excerpt`) and what is allowed. NaN and inf are refused wherever a
number is read. Beside `flags` (the shared flags, a leaf that imports nothing of the engine): this module
imports only the engine's basics (`errors`, `config`), which load no torch, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from engine.errors import excerpt


def whole(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi]."""
    allowed = f"a whole number >= {lo}" if hi is None else f"a whole number from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {excerpt(text)}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {excerpt(text)}")
        return value

    parse.__name__ = "whole number"
    return parse


def _number(text: str, lo: float, hi: float | None, lo_open: bool, allowed: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    below = value <= lo if lo_open else value < lo
    if not math.isfinite(value) or below or (hi is not None and value > hi):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {excerpt(text)}")
    return value


def _allowed(lo: float, hi: float | None, lo_open: bool) -> str:
    if hi is None:
        return f"a number {'>' if lo_open else '>='} {lo:g}"
    return f"a number {'above' if lo_open else 'from'} {lo:g} {'up ' if lo_open else ''}to {hi:g}"


def number(lo: float, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with `lo_open`); never NaN or inf."""
    allowed = _allowed(lo, hi, lo_open)

    def parse(text: str) -> float:
        return _number(text, lo, hi, lo_open, allowed)

    parse.__name__ = "number"
    return parse


def numbers(lo: float, hi: float | None = None, lo_open: bool = False) -> Callable[[str], list[float]]:
    """An argparse type: comma-separated finite numbers, each in [lo, hi] ((lo, hi] with `lo_open`)."""
    allowed = "comma-separated " + _allowed(lo, hi, lo_open).replace("a number", "numbers", 1)

    def parse(text: str) -> list[float]:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {excerpt(text)}")
        try:
            return [_number(p, lo, hi, lo_open, allowed) for p in parts]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {excerpt(text)}") from None

    parse.__name__ = "numbers"
    return parse


#: what `explain --out` may write (Pillow picks the format by the extension)
IMAGE_OUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_out(text: str) -> str:
    """An argparse type: a path for an output image, with an image extension and not an existing folder."""
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        raise argparse.ArgumentTypeError(f"names the folder {excerpt(text, 160)}; give a file such as heatmap.png")
    if path.suffix.lower() not in IMAGE_OUT_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"must name an image file ending in {', '.join(IMAGE_OUT_SUFFIXES)}, got {excerpt(text, 160)}"
        )
    return text


def image_size() -> Callable[[str], int]:
    """An argparse type: a working resolution from 8 px to the training cap (`engine.config.MAX_IMAGE_SIZE`)."""
    from engine.config import MAX_IMAGE_SIZE

    return whole(8, MAX_IMAGE_SIZE)


SEED = whole(0)

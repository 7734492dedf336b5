"""A sweep's search space: `--param NAME=KIND:ARGS` lines parsed into `ParamSpec`s, checked against `RunConfig`.

One syntax for the CLI, the Train page's editor and the study's stored settings:

    lr=loguniform:1e-4:1e-2          a float (or int) range sampled on a log scale (both ends > 0)
    dropout=uniform:0:0.5            a float (or int) range sampled evenly
    batch_size=choice:32,64,128      a list of values (any field: numbers, true/false, names)

Why validate here: a sweep runs for hours, so a bound the config would refuse (a negative learning rate, an
optimiser that does not exist) must fail when the sweep starts, as one sentence naming the `--param`, not
in its fifth trial. Each value is checked by `RunConfig.validate` on the sweep's base config, so the rules
are the config's own (ranges, choices, and the checks across fields).
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, fields
from typing import Any

from engine.config import ConfigError, RunConfig
from engine.errors import LoupeError, excerpt

KINDS = ("choice", "uniform", "loguniform")
#: fields a sweep cannot vary: what the data is, where and how the trial runs, and the run's own name
FIXED = ("dataset", "name", "device", "nproc", "sync_bn", "weights_file", "class_weights", "kfold", "time_budget_s")
SWEEPABLE = tuple(f.name for f in fields(RunConfig) if f.name not in FIXED)


class SweepError(LoupeError):
    """A sweep's settings, search space or study that cannot be used; one sentence, naming the setting."""


def field_kind(name: str) -> type:
    """The Python type of RunConfig field `name` (int, float, bool or str)."""
    f = next(f for f in fields(RunConfig) if f.name == name)
    return type(f.default) if f.default is not MISSING else list


def _value(text: str, kind: type, where: str) -> Any:
    """One value of a choice, read as the field's type."""
    text = text.strip()
    try:
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("true", "1", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise SweepError(
            f"--param '{where}': {excerpt(text)} is not a{'n' if kind is int else ''} {kind.__name__}; "
            f"write it as the field's type."
        ) from None
    return text


@dataclass(frozen=True)
class ParamSpec:
    """One searched field: `kind` is 'choice' (with `choices`) or 'uniform'/'loguniform' (with `low`, `high`)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def text(self) -> str:
        """The spec as `--param` takes it (how the study stores its space)."""
        if self.kind == "choice":
            return f"{self.name}=choice:" + ",".join(
                str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices
            )
        return f"{self.name}={self.kind}:{self.low:g}:{self.high:g}"

    def suggest(self, trial: Any) -> Any:
        """The trial's value for this field, asked of Optuna (`trial` is an `optuna.Trial`)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if field_kind(self.name) is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def parse_param(text: str, base: RunConfig | None = None) -> ParamSpec:
    """`NAME=KIND:ARGS` -> `ParamSpec`; raises `SweepError` (one sentence naming `text`) when it cannot be used
    with `base` (default: the default config)."""
    base = base or RunConfig()
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*([a-z]+)\s*:(.*)", text or "")
    if not m:
        raise SweepError(
            f"--param {excerpt(text)} is not NAME=KIND:VALUES; write e.g. lr=loguniform:1e-4:1e-2 or "
            "batch_size=choice:32,64,128."
        )
    name, kind, rest = m.group(1).replace("-", "_"), m.group(2), m.group(3)
    if name not in SWEEPABLE:
        known = {f.name for f in fields(RunConfig)}
        why = "it is fixed for the whole sweep" if name in known else "no config field has that name"
        raise SweepError(
            f"--param '{text}': '{name}' cannot be searched ({why}); choose one of {', '.join(SWEEPABLE)}."
        )
    if kind not in KINDS:
        raise SweepError(f"--param '{text}': the kind {excerpt(kind)} is not one of {', '.join(KINDS)}.")
    ftype = field_kind(name)
    if kind == "choice":
        values = [v for v in rest.split(",") if v.strip()]
        if not values:
            raise SweepError(f"--param '{text}': give at least one value after 'choice:', separated by commas.")
        choices = tuple(dict.fromkeys(_value(v, ftype, text) for v in values))
        spec = ParamSpec(name, kind, choices=choices)
        checked: list[Any] = list(choices)
    else:
        if ftype not in (int, float):
            raise SweepError(f"--param '{text}': '{name}' is not a number; search it with choice:A,B,...")
        parts = rest.split(":")
        if len(parts) != 2:
            raise SweepError(f"--param '{text}': a range is {kind}:LOW:HIGH, two numbers separated by ':'.")
        low, high = (_value(p, float, text) for p in parts)
        if ftype is int and (low != int(low) or high != int(high)):
            raise SweepError(f"--param '{text}': '{name}' takes whole numbers; give whole-number bounds.")
        if not low < high:
            raise SweepError(f"--param '{text}': LOW must be below HIGH; got {low:g} and {high:g}.")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"--param '{text}': a log scale needs LOW > 0; got {low:g}.")
        spec = ParamSpec(name, kind, low=low, high=high)
        checked = [int(low), int(high)] if ftype is int else [low, high]
    for value in checked:  # the config's own rules, on the sweep's base config
        try:
            base.replace(**{name: value})
        except ConfigError as e:
            msg = str(e)
            raise SweepError(f"--param '{text}': {msg[0].lower()}{msg[1:]}") from None
    return spec


def parse_space(texts: list[str], base: RunConfig | None = None, grid: bool = False) -> list[ParamSpec]:
    """Every `--param`; a field given twice, an empty space, or (for `grid`) a range are refused."""
    specs = [parse_param(t, base) for t in texts]
    if not specs:
        raise SweepError("A sweep needs at least one --param NAME=KIND:VALUES (e.g. lr=loguniform:1e-4:1e-2).")
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise SweepError(f"--param: '{s.name}' is given twice; give each field once.")
        seen.add(s.name)
    if grid:
        ranges = [s.name for s in specs if s.kind != "choice"]
        if ranges:
            raise SweepError(
                f"--grid tries every combination of listed values, and '{ranges[0]}' is a range; give it as "
                "choice:A,B,... or leave out --grid."
            )
    return specs


def grid_space(specs: list[ParamSpec]) -> dict[str, list]:
    """The grid sampler's search space: each field's listed values."""
    return {s.name: list(s.choices) for s in specs}


def grid_size(specs: list[ParamSpec]) -> int:
    return math.prod(len(s.choices) for s in specs)

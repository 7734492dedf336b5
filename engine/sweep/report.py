"""A study for people: the trials table (the CLI prints it, the Train page shows it), the best trial and its
config as YAML ready for `python -m engine train --config`.

Every number goes through `engine.metrics.display`: the objective in its metric's one format (a rate as a
percentage, a loss to 4 decimals), searched values through `setting`, durations in seconds.
"""

from __future__ import annotations

from typing import Any

from engine.config import RunConfig
from engine.metrics.display import MISSING, format_metric, label, number, setting
from engine.runs.folder import Run, runs_dir

#: Optuna's trial states as the table writes them
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "queued"}


def trial_rows(study: Any) -> list[dict]:
    """One dict per trial, in trial order: `trial`, `state`, `params` (field -> value), `value` and `std`
    (k-fold) of the objective, `epochs` (the last epoch reported), `seconds`, `run` (the run id) and `error`."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        value = t.value if t.state.name == "COMPLETE" else None
        if t.state.name == "PRUNED" and steps:
            value = t.intermediate_values[steps[-1]]  # the figure it was pruned at
        seconds = t.user_attrs.get("seconds")
        if seconds is None and t.datetime_start is not None and t.datetime_complete is not None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            {
                "trial": t.number,
                "state": STATES.get(t.state.name, t.state.name.lower()),
                # a queued trial (a killed one queued again) has no params yet: the values it will be given
                "params": dict(t.params) or dict(t.system_attrs.get("fixed_params") or {}),
                "value": value,
                "std": t.user_attrs.get("std"),
                "epochs": steps[-1] if steps else None,
                "seconds": seconds,
                "run": t.user_attrs.get("run"),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def objective_text(monitor: str, value: float | None, std: float | None = None) -> str:
    """'91.20%' or, for a k-fold trial, '91.20% ± 1.30%'; 'n/a' when there is none."""
    if value is None:
        return MISSING
    text = format_metric(monitor, value)
    return text + (f" ± {format_metric(monitor, std)}" if std is not None else "")


def table_cells(study: Any) -> tuple[list[str], list[list[str]]]:
    """The table's header and its rows as text: trial, state, each searched field, the objective, time, run."""
    monitor = study.user_attrs.get("monitor", "value")
    rows = trial_rows(study)
    names = list(dict.fromkeys(n for s in study.user_attrs.get("params", []) for n in [s.split("=", 1)[0]]))
    names += [n for r in rows for n in r["params"] if n not in names]
    header = ["trial", "state", *names, label(monitor), "seconds", "run"]
    cells = []
    for r in rows:
        state = r["state"] + (f" (epoch {r['epochs']})" if r["state"] == "pruned" and r["epochs"] else "")
        cells.append(
            [
                str(r["trial"]),
                state,
                *(setting(r["params"].get(n)) for n in names),
                objective_text(monitor, r["value"], r["std"]),
                number(r["seconds"], 1),
                r["run"] or MISSING,
            ]
        )
    return header, cells


def format_table(study: Any) -> str:
    """The trials table as aligned text columns (the CLI's output)."""
    header, cells = table_cells(study)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def best_trial(study: Any) -> Any | None:
    """The completed trial with the best objective (None before any completed)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return None
    pick = min if study.user_attrs.get("direction", study.direction.name.lower()) == "minimize" else max
    return pick(done, key=lambda t: t.value)


def best_config(study: Any, root: Any = None) -> RunConfig | None:
    """The best trial's full config, read from its run folder (or rebuilt from the stored base config and the
    trial's values when the folder is elsewhere), with the name cleared so a new run names itself."""
    t = best_trial(study)
    if t is None:
        return None
    path = t.user_attrs.get("run_path") or str(runs_dir(root) / str(t.user_attrs.get("run")))
    run = Run(path)
    if (run.path / "config.json").exists():
        cfg = RunConfig.load(run.path / "config.json")
    else:
        cfg = RunConfig.from_dict(study.user_attrs["base"]).replace(**t.params)
    return cfg.replace(name="", time_budget_s=RunConfig.from_dict(study.user_attrs["base"]).time_budget_s)


def best_yaml(study: Any, root: Any = None) -> str:
    """The best config as YAML for `train --config` (every field written out, so it reproduces the trial);
    a comment line says which trial it is and its objective. Empty when no trial has completed."""
    import yaml

    cfg, t = best_config(study, root), best_trial(study)
    if cfg is None or t is None:
        return ""
    monitor = study.user_attrs.get("monitor", "value")
    head = (
        f"# best trial {t.number} of study {study.study_name}: {label(monitor)} "
        f"{objective_text(monitor, t.value, t.user_attrs.get('std'))} (run {t.user_attrs.get('run')})\n"
        "# python -m engine train --config THIS_FILE\n"
    )
    return head + yaml.safe_dump(cfg.to_dict(), sort_keys=False)

"""A sweep: an Optuna study whose trials are normal training runs (contract 2), pruned from their epochs.

Why Optuna: its samplers (TPE by default, grid on request), pruners (median, successive halving), storage
(any SQLAlchemy database, so several machines can work one study) and plotly figures are well kept and
widely known; Loupe adds only what makes a trial a Loupe run:

- each trial is a run folder made by `engine.train.jobs.prepare_run`, trained by `run_training` under the
  device queue, its config.json tagged `study: {name, trial}`, so Evaluate/Explain/Predict work on it;
- the trial's per-epoch validation figure (the config's monitor) reaches the pruner through `fit`'s
  `epoch_hook`; a pruned run ends `completed` with `stop_reason: "pruned"` (its best epoch is still a model);
- the study lives in `RUNS/sweeps.db` (SQLite) unless `storage` names another database; its settings
  (space, base config, budget, pruner) are stored with it, so `sweep --study NAME` again continues it;
- a sweep killed mid-trial leaves that trial RUNNING: the next start marks it failed and queues its
  parameters again (trials of this machine whose process is gone at once; those of other machines when
  Optuna's heartbeat says they are stale), while completed and pruned trials are kept;
- `RUNS/.sweeps/NAME/` holds what the Train page follows: status.json (progress, best so far), sweep.log of
  a background sweep, and STOP (stop at the next batch; the stopped trial is queued again on resume).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.errors import LoupeError, excerpt
from engine.runs.folder import Run, atomic_write_json, now_iso, pid_alive, read_json, runs_dir
from engine.sweep.space import ParamSpec, SweepError, grid_size, grid_space, parse_space

PRUNERS = ("median", "halving", "none")
STUDY_DB = "sweeps.db"  # the default storage: one SQLite file in the runs folder holds every study
SWEEPS_DIR = ".sweeps"  # RUNS/.sweeps/NAME/: the page's view of a sweep (status, log, STOP)
HEARTBEAT_S = 30  # Optuna's trial heartbeat; a RUNNING trial silent for GRACE_S is failed by the next worker
GRACE_S = 120
MAX_FAILURES = 3  # trials failing one after another end the sweep: the same error would repeat forever
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass
class SweepSettings:
    """What a sweep searches and for how long; stored with the study so a second start continues it."""

    base: RunConfig  # every trial's config before its searched fields are set
    params: list[ParamSpec]
    trials: int = 20  # finished (completed or pruned) trials the study aims for
    time_budget_s: float = 0.0  # wall time of this start of the sweep (0: none); trials get what is left
    grid: bool = False  # every combination of the listed values instead of TPE
    pruner: str = "median"
    startup_trials: int = 2  # median pruner: trials finished before any is pruned
    warmup_epochs: int = 1  # median pruner: epochs each trial trains before it can be pruned

    def validate(self) -> SweepSettings:
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or not 1 <= self.trials <= 10_000:
            raise SweepError(f"--trials must be a whole number from 1 to 10000; got {excerpt(self.trials)}.")
        if not (isinstance(self.time_budget_s, (int, float)) and 0 <= self.time_budget_s < math.inf):
            raise SweepError(
                f"--time-budget-s must be 0 (no limit) or a positive number; got {excerpt(self.time_budget_s)}."
            )
        if self.pruner not in PRUNERS:
            raise SweepError(f"--pruner must be one of {', '.join(PRUNERS)}; got {excerpt(self.pruner)}.")
        if self.base.nproc > 1:
            raise SweepError("--nproc: a sweep trains each trial in one process; leave out --nproc.")
        parse_space([p.text() for p in self.params], self.base, self.grid)
        return self

    def stored(self) -> dict[str, Any]:
        """The study's user attributes: what a second start reads back."""
        return {
            "params": [p.text() for p in self.params],
            "base": self.base.to_dict(),
            "trials": self.trials,
            "grid": self.grid,
            "pruner": self.pruner,
            "startup_trials": self.startup_trials,
            "warmup_epochs": self.warmup_epochs,
        }

    @classmethod
    def from_stored(cls, attrs: dict[str, Any]) -> SweepSettings:
        base = RunConfig.from_dict(attrs["base"])
        return cls(
            base=base,
            params=parse_space(attrs["params"], base, attrs.get("grid", False)),
            trials=attrs["trials"],
            grid=attrs.get("grid", False),
            pruner=attrs.get("pruner", "median"),
            startup_trials=attrs.get("startup_trials", 2),
            warmup_epochs=attrs.get("warmup_epochs", 1),
        )


def default_storage(root: str | Path | None = None) -> str:
    return f"sqlite:///{runs_dir(root).resolve() / STUDY_DB}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise SweepError(
            f"--study {excerpt(name)} is not a usable name; use letters, digits, '.', '_' or '-' (up to 64)."
        )
    return name


def new_study_name(cfg: RunConfig) -> str:
    short = re.sub(r"[^A-Za-z0-9]+", "-", cfg.dataset.split(":")[-1].rstrip("/").split("/")[-1])[:24].strip("-")
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{short or 'data'}"


def sweep_dir(name: str, root: str | Path | None = None) -> Path:
    return runs_dir(root) / SWEEPS_DIR / check_name(name)


def open_storage(url: str, heartbeat: bool = True) -> Any:
    """An Optuna RDB storage for `url` (SQLite waits for a busy file rather than failing at once); one sentence
    when the database cannot be opened."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30}}
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what several machines need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:  # trials of another machine that stopped beating are failed and tried once more
                kwargs.update(
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as e:  # a bad URL, a missing driver, a server that does not answer
        raise SweepError(
            f"Cannot open the study storage {excerpt(redact(url))} ({type(e).__name__}: {excerpt(str(e), 120)[1:-1]}); "
            "check the URL, its database driver and that the server is reachable."
        ) from None


def redact(url: str) -> str:
    """A storage URL without its password, for messages and files."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]


def objective_of(cfg: RunConfig) -> tuple[str, str]:
    """The monitored metric (`monitor`, 'auto' resolved for the data's task) and Optuna's direction."""
    from engine.data.dataset import quick_stats
    from engine.train.records import LOWER_IS_BETTER, monitor_name

    task = cfg.task if cfg.task != "auto" else quick_stats(cfg.dataset, seed=cfg.seed)["task"]
    monitor = monitor_name(cfg, task)
    return monitor, "minimize" if monitor in LOWER_IS_BETTER else "maximize"


def make_sampler(settings: SweepSettings) -> Any:
    import optuna

    if settings.grid:
        return optuna.samplers.GridSampler(grid_space(settings.params), seed=settings.base.seed)
    return optuna.samplers.TPESampler(seed=settings.base.seed)


def make_pruner(settings: SweepSettings) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        )
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


# --- progress, for the CLI's bar and the page ---------------------------------------------------------


@dataclass
class SweepProgress:
    """Where a sweep stands; written to RUNS/.sweeps/NAME/status.json after each trial and each epoch."""

    study: str
    state: str = "running"  # running, completed, stopped, failed
    target: int = 0  # finished trials the study aims for
    done: int = 0  # finished (completed or pruned) trials so far, all machines together
    done_at_start: int = 0  # ... when this start of the sweep began (the ETA counts the trials since)
    started: float = field(default_factory=time.time)  # time.time() of this start
    deadline: float | None = None  # time.time() when the time budget ends
    monitor: str = ""
    direction: str = "maximize"
    best: float | None = None
    best_trial: int | None = None
    best_run: str | None = None
    trial: int | None = None  # the trial under way and its run
    run: str | None = None
    epoch: int = 0
    epochs: int = 0
    pid: int = field(default_factory=os.getpid)
    error: str | None = None

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left: the mean time of this start's finished trials times those left, capped by the budget."""
        now = now or time.time()
        finished = self.done - self.done_at_start
        left = None
        if finished > 0:
            left = (now - self.started) / finished * max(0, self.target - self.done)
        if self.deadline is not None:
            left = min(left if left is not None else math.inf, max(0.0, self.deadline - now))
        return left

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def read_progress(name: str, root: str | Path | None = None) -> dict | None:
    """status.json of a sweep (None when it has none); a `running` sweep whose process is gone reads `failed`."""
    data = read_json(sweep_dir(name, root) / "status.json")
    if not isinstance(data, dict):
        return None
    if data.get("state") == "running" and not pid_alive(data.get("pid")):
        data["state"] = "failed"
        data["error"] = (
            data.get("error") or "the sweep's process ended without recording why; start it again to continue"
        )
    return data


def list_sweeps(root: str | Path | None = None) -> list[str]:
    """Studies with a folder under RUNS/.sweeps, newest first (those the Train page can follow)."""
    base = runs_dir(root) / SWEEPS_DIR
    if not base.is_dir():
        return []
    dirs = [p for p in base.iterdir() if p.is_dir() and re.fullmatch(NAME_RE, p.name)]
    return [p.name for p in sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True)]


def request_stop(name: str, root: str | Path | None = None) -> None:
    """Ask a sweep to stop: its trial stops at the next batch and no new one starts."""
    folder = sweep_dir(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "STOP").touch()


# --- the sweep --------------------------------------------------------------------------------------


class SweepStopped(SweepError):
    """The user asked the sweep to stop (its STOP file) while a trial trained."""


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def requeue_stale(study: Any, storage: Any, log: Callable[[str], None]) -> list[int]:
    """Trials a dead process of this machine left RUNNING (killed) or failed by a stop or an interrupt: mark
    them failed and queue their parameters again, once each. Returns the trial numbers re-queued."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    done = set(study.user_attrs.get("requeued", []))
    again: list[int] = []
    for t in study.get_trials(deepcopy=False):
        if t.number in done:
            continue
        mine = t.user_attrs.get("host") == host
        if t.state == TrialState.RUNNING and mine and not pid_alive(t.user_attrs.get("pid")):
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), t.number
            )
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            run = t.user_attrs.get("run_path")
            if run and Run(run).exists() and Run(run).raw_status().get("state") in ("running", "queued"):
                Run(run).write_status(state="failed", error="the sweep's process was killed during this trial")
        elif not (t.state == TrialState.FAIL and t.user_attrs.get("retry")):
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        if "grid_id" in t.system_attrs:  # a grid point: the retry must carry it (Optuna's GridSampler.after_trial
            # reads it and raised KeyError 'grid_id' on an enqueued trial when one grid point was left)
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            retry = next(w for w in reversed(waiting) if w.user_attrs.get("retry_of") == t.number)
            for key in ("grid_id", "search_space"):
                storage.set_trial_system_attr(retry._trial_id, key, t.system_attrs[key])
        again.append(t.number)
        log(f"trial {t.number} did not finish (its sweep was killed or stopped); queued its parameters again")
    if again:
        study.set_user_attr("requeued", sorted(done | set(again)))
    return again


def trial_value(run: Run, cfg: RunConfig, monitor: str) -> tuple[float | None, float | None]:
    """The objective of a finished trial and, for k-fold, the std over folds: the best epoch's monitored
    figure (k-fold: the mean over folds of each fold's best)."""
    import numpy as np

    from engine.train.records import best_value

    if cfg.kfold >= 2:
        per_fold = [best_value(Run(run.path / "folds" / f"fold{k + 1}").metrics(), monitor) for k in range(cfg.kfold)]
        values = [v for v in per_fold if v is not None]
        if not values:
            return None, None
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return best_value(run.metrics(), monitor), None


def run_sweep(
    settings: SweepSettings | None,
    name: str,
    root: str | Path | None = None,
    storage_url: str | None = None,
    log: Callable[[str], None] = print,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> Any:
    """Run (or continue) study `name` until it has `settings.trials` finished trials, the time budget ends, a
    stop is asked or trials keep failing; returns the `optuna.Study`.

    `settings` None continues the stored study as it was set up; given for an existing study, its space and
    base config must match the stored ones (the number of trials and the budget may change)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines (a failed trial too)
    check_name(name)
    url = storage_url or default_storage(root)
    storage = open_storage(url)
    exists = name in study_names(storage)
    if exists:
        stored = optuna.load_study(study_name=name, storage=storage).user_attrs
        if "params" not in stored:
            raise SweepError(f"The study '{name}' in {redact(url)} was not made by Loupe; choose another --study name.")
        previous = SweepSettings.from_stored(stored)
        if settings is None:
            settings = previous
        elif [p.text() for p in settings.params] != stored["params"] or settings.base.to_dict() != stored["base"]:
            raise SweepError(
                f"The study '{name}' exists with another search space or base config; leave out --param and the "
                "config options to continue it, or choose another --study name."
            )
        settings.startup_trials, settings.warmup_epochs = previous.startup_trials, previous.warmup_epochs
    elif settings is None:
        raise SweepError(f"No study '{name}' in {redact(url)}; give --param to start one.")
    settings.validate()
    monitor, direction = objective_of(settings.base)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(settings),
        pruner=make_pruner(settings),
        direction=direction,
        load_if_exists=True,
    )
    for key, value in {**settings.stored(), "monitor": monitor, "storage": redact(url)}.items():
        study.set_user_attr(key, value)
    folder = sweep_dir(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "STOP").unlink(missing_ok=True)
    requeue_stale(study, storage, log)
    target = min(settings.trials, grid_size(settings.params)) if settings.grid else settings.trials
    t0 = time.time()
    prog = SweepProgress(
        study=name,
        target=target,
        done=_finished(study),
        started=t0,
        deadline=t0 + settings.time_budget_s if settings.time_budget_s else None,
        monitor=monitor,
        direction=direction,
    )
    prog.done_at_start = prog.done
    failures = 0

    def publish() -> None:
        _best(study, prog)
        atomic_write_json(folder / "status.json", prog.to_dict())
        if on_progress is not None:
            on_progress(prog)

    def objective(trial: optuna.Trial) -> float:
        return _train_trial(trial, settings, name, monitor, root, prog, folder, publish, log)

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        failures = failures + 1 if frozen.state == TrialState.FAIL else 0
        prog.done, prog.trial, prog.run = _finished(study), None, None
        if frozen.state == TrialState.FAIL:
            log(f"trial {frozen.number} failed: {frozen.user_attrs.get('error', 'see the log above')}")
        if prog.done >= target or (folder / "STOP").exists() or failures >= MAX_FAILURES:
            study.stop()
        if prog.deadline is not None and time.time() >= prog.deadline:
            study.stop()
        publish()

    try:
        publish()
        if prog.done >= target:
            log(f"study {name} already has {prog.done} finished trials (target {target})")
        else:
            study.optimize(
                objective,
                timeout=settings.time_budget_s or None,
                catch=(LoupeError,),
                callbacks=[after_trial],
            )
    except BaseException as e:  # Ctrl-C, a closed pipe, a bug: the page must not show it running forever
        prog.state, prog.error = "failed", f"{type(e).__name__}: {e}"
        publish()
        raise
    stopped = (folder / "STOP").exists()
    (folder / "STOP").unlink(missing_ok=True)
    if stopped:
        prog.state = "stopped"
    elif failures >= MAX_FAILURES:
        prog.state, prog.error = "failed", f"{failures} trials failed one after another; see the trials table"
    else:
        prog.state = "completed"
    publish()
    return study


def _best(study: Any, prog: SweepProgress) -> None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if done:
        pick = min if prog.direction == "minimize" else max
        best = pick(done, key=lambda t: t.value)
        prog.best, prog.best_trial, prog.best_run = best.value, best.number, best.user_attrs.get("run")


def _train_trial(
    trial: Any,
    settings: SweepSettings,
    name: str,
    monitor: str,
    root: str | Path | None,
    prog: SweepProgress,
    folder: Path,
    publish: Callable[[], None],
    log: Callable[[str], None],
) -> float:
    """One trial: a run folder with the trial's config, trained under the device queue; pruned from its epochs."""
    import optuna

    from engine.device import resolve_device
    from engine.train.jobs import device_slot, prepare_run
    from engine.train.run import run_training

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    values = {p.name: p.suggest(trial) for p in settings.params}
    changes: dict[str, Any] = {**values, "name": f"{name} #{trial.number}"}
    if prog.deadline is not None:  # the trial may use what is left of the sweep's budget, no more
        left = max(1.0, prog.deadline - time.time())
        changes["time_budget_s"] = min(settings.base.time_budget_s or left, left)
    try:
        cfg = settings.base.replace(**changes)
        run = prepare_run(cfg, root)
    except LoupeError as e:
        trial.set_user_attr("error", str(e))
        raise
    header = run.config()
    header["study"] = {"name": name, "trial": trial.number}
    atomic_write_json(run.path / "config.json", header)
    trial.set_user_attr("run", run.id)
    trial.set_user_attr("run_path", str(run.path))
    prog.trial, prog.run, prog.epoch, prog.epochs = trial.number, run.id, 0, cfg.epochs
    publish()
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    log(f"trial {trial.number}: {shown} -> {run.id}")
    pruning = settings.pruner != "none" and cfg.kfold < 2

    def hook(epoch: int, value: float | None) -> bool:
        prog.epoch = epoch
        publish()
        if value is None or not math.isfinite(value):
            return False
        trial.report(value, epoch)
        return pruning and trial.should_prune()

    watching = threading.Event()

    def watch_stop() -> None:  # a stop of the sweep reaches the trial's own STOP file within half a second
        while not watching.wait(0.5):
            if (folder / "STOP").exists():
                run.request_stop()
                return

    watcher = threading.Thread(target=watch_stop, daemon=True)
    watcher.start()
    t0 = time.time()
    try:
        with device_slot(run, resolve_device(cfg.device).type):
            out = run_training(cfg, run, log=lambda m: None, progress=None, epoch_hook=hook)
    except LoupeError as e:
        trial.set_user_attr("error", str(e))
        raise
    except BaseException as e:  # Ctrl-C or a crash: the next start of the sweep queues this trial again
        trial.set_user_attr("retry", True)
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        raise
    finally:
        watching.set()
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
    if out.get("state") == "stopped":
        trial.set_user_attr("retry", True)
        trial.set_user_attr("error", "stopped by the user")
        trial.study.stop()
        raise SweepStopped(f"The sweep was stopped during trial {trial.number}; start it again to continue.")
    value, std = trial_value(run, cfg, monitor)
    if std is not None:
        trial.set_user_attr("std", std)
    status = run.raw_status()
    if status.get("stop_reason") == "pruned":
        log(f"trial {trial.number}: pruned after epoch {status.get('epoch')}")
        raise optuna.TrialPruned(f"pruned after epoch {status.get('epoch')}")
    if value is None:
        trial.set_user_attr("error", f"the run recorded no {monitor}")
        raise SweepError(f"Trial {trial.number}'s run recorded no {monitor}; see {run.path / 'train.log'}.")
    return value


# --- background jobs from the page -------------------------------------------------------------------


def start_background(
    settings: SweepSettings, name: str, root: str | Path | None = None, storage_url: str | None = None
) -> Path:
    """`python -m engine sweep ...` in its own session (it survives page reloads), its output in
    RUNS/.sweeps/NAME/sweep.log; returns the sweep's folder. The base config goes as a JSON file."""
    from engine.train.jobs import spawn_engine

    settings.validate()
    folder = sweep_dir(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "STOP").unlink(missing_ok=True)
    atomic_write_json(folder / "base.json", settings.base.to_dict())
    args = ["sweep", "--study", name, "--config", str(folder / "base.json"), "--runs-dir", str(runs_dir(root))]
    args += [a for p in settings.params for a in ("--param", p.text())]
    args += ["--trials", str(settings.trials), "--pruner", settings.pruner, "--no-progress"]
    if settings.time_budget_s:
        args += ["--time-budget-s", str(settings.time_budget_s)]
    if settings.grid:
        args.append("--grid")
    if storage_url:
        args += ["--storage", storage_url]
    prog = SweepProgress(study=name, target=settings.trials, state="running")
    proc = spawn_engine(args, folder / "sweep.log")
    prog.pid = proc.pid
    atomic_write_json(folder / "status.json", {**prog.to_dict(), "queued_at": now_iso()})
    return folder


def load_log(name: str, root: str | Path | None = None, lines: int = 20) -> str:
    path = sweep_dir(name, root) / "sweep.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)

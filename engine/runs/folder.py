"""The run folder (contract 2 in ARCHITECTURE.md): its paths, atomic writes, reading, listing, crash detection.

The folder on disk is the truth: the app, the CLI and the training subprocess only ever talk
through these files, so a page reload or a second browser sees exactly what the trainer wrote.
`Run` names every file once (`run.best_weights`, `run.last_state`, ...); the trainer writes status,
metrics and the summary through it, and predictions with `write_npz`. Checkpoint formats live in
`engine.runs.checkpoint`, saved robustness sweeps in `engine.runs.sweeps`.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.env import env_float
from engine.errors import LoupeError

if TYPE_CHECKING:  # engine.data's package imports the dataset readers, and labels_file imports this module
    from engine.data.hierarchy import Hierarchy

STATES = ("queued", "running", "completed", "stopped", "failed")


class RunError(LoupeError):
    """A run that does not exist or cannot be used as asked."""


def runs_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get("LOUPE_RUNS_DIR", "runs")).expanduser().resolve()


def stale_after_s() -> float:
    """A running job rewrites status.json at least this often; older means it may be dead."""
    return env_float("LOUPE_HEARTBEAT_STALE_S", 30.0)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StorageError(RunError):
    """A run-folder file that cannot be written: disk full, read-only, or a path through a file."""


def storage_error(path: Path | str, e: OSError) -> StorageError:
    """One sentence for an OSError while writing `path` (the CLI and pages show it without a traceback)."""
    reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or type(e).__name__).lower()
    where = f"'{path}'" + (f" ('{e.filename}')" if e.filename and str(e.filename) != str(path) else "")
    return StorageError(
        f"Cannot write {where}: {reason}; free disk space or point --runs-dir (LOUPE_RUNS_DIR) "
        "at a writable folder, then try again (a stopped or failed run can be resumed)."
    )


_CHUNK = 1 << 20
_os_write = os.write  # module-level so tests can simulate a disk that fills up part-way through a write


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[_os_write(fd, view[:_CHUNK]) :]


def _remove_stale_temps(path: Path, min_age_s: float = 60.0) -> None:
    """Temp files of writers killed mid-write (SIGKILL skips every cleanup). Only old ones whose pid is
    gone: a live writer's file stays, even one on another host sharing the folder (its pid means nothing here)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        try:
            old = time.time() - tmp.stat().st_mtime > min_age_s
        except OSError:
            continue
        if old and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then `os.replace`: readers never see half a file.

    Any failure (disk full, read-only folder, a path through a file) removes the temp file, leaves
    the previous `path` byte-for-byte as it was, and raises `StorageError` naming the file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise storage_error(path, e) from e
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # the folder itself is gone or unusable: nothing was left there
        pass


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, allow_nan=False, default=_json_default).encode())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """A compressed .npz written atomically (the predictions/*.npz files of contract 2)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, default: Any = None) -> Any:
    """A run file's JSON, or `default` when it is missing or unreadable: a file being replaced or damaged
    must not break a listing or a page (atomic writes keep the window small, not zero)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Run:
    """One run folder: `Run(path)`; files named as in contract 2 (ARCHITECTURE.md)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.id = self.path.name

    # --- paths ----------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    @property
    def best_weights(self) -> Path:
        """The best epoch's weights (safetensors): what evaluation, explanations and prediction load."""
        return self.checkpoints / "best.safetensors"

    @property
    def last_weights(self) -> Path:
        """The latest epoch's weights (safetensors), saved with `last_state` so a run can resume."""
        return self.checkpoints / "last.safetensors"

    @property
    def last_state(self) -> Path:
        """Optimiser, scheduler, generator and trainer state of `last` (torch.save, loadable weights_only)."""
        return self.checkpoints / "last_state.pt"

    @property
    def ood_cache(self) -> Path:
        """The out-of-distribution check's calibration (`engine.predict.ood`), computed on first use."""
        return self.path / "ood.npz"

    @property
    def hierarchy_file(self) -> Path:
        """Two-level runs: the fine -> coarse mapping, so evaluation and prediction never re-read the dataset."""
        from engine.data.hierarchy import HIERARCHY_FILE  # at call time: see the TYPE_CHECKING import above

        return self.path / HIERARCHY_FILE

    def exists(self) -> bool:
        return (self.path / "config.json").exists()

    # --- reading --------------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.path / "config.json", {})

    def classes(self) -> list[str]:
        return read_json(self.path / "classes.json", [])

    def hierarchy(self) -> Hierarchy | None:
        """The run's coarse level (validated against classes.json), or None for a one-level run."""
        from engine.data.hierarchy import read_hierarchy_file  # at call time: see the TYPE_CHECKING import above

        if not self.hierarchy_file.is_file():
            return None
        return read_hierarchy_file(self.hierarchy_file, self.classes())

    def write_hierarchy(self, hierarchy: Hierarchy | None) -> None:
        if hierarchy is not None:
            atomic_write_json(self.hierarchy_file, hierarchy.to_json())

    def summary(self) -> dict | None:
        return read_json(self.path / "summary.json")

    def raw_status(self) -> dict:
        return read_json(self.path / "status.json", {"state": "queued"})

    def status(self) -> dict:
        """status.json plus `display_state`: 'failed (crashed)' for a dead job still marked running."""
        st = dict(self.raw_status())
        st["display_state"] = st.get("state", "queued")
        st["crashed"] = self.is_crashed(st)
        if st["crashed"]:
            st["display_state"] = "failed (crashed)"
        return st

    def is_crashed(self, st: dict | None = None) -> bool:
        st = st or self.raw_status()
        if st.get("state") not in ("running", "queued") or st.get("host", socket.gethostname()) != socket.gethostname():
            return False
        try:  # status.json is outside input too: a damaged heartbeat counts as none (stale)
            beat = float(st.get("heartbeat", 0))
        except (TypeError, ValueError):
            beat = 0.0
        age = time.time() - (beat if math.isfinite(beat) else 0.0)
        return age > stale_after_s() and not pid_alive(st.get("pid"))

    def metrics(self) -> list[dict]:
        """metrics.jsonl as a list; a torn last line (crash mid-write) is skipped."""
        out = []
        try:
            with open(self.path / "metrics.jsonl") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
        except OSError:
            pass
        return out

    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    # --- writing (the trainer) ------------------------------------------------------------------
    def write_status(self, **updates: Any) -> dict:
        st = self.raw_status()
        st.update(updates)
        st["updated_at"] = now_iso()
        st["heartbeat"] = time.time()
        st.setdefault("host", socket.gethostname())
        atomic_write_json(self.path / "status.json", st)
        return st

    def write_summary(self, summary: dict) -> None:
        """summary.json: the finished run's figures (the one writer; plain, k-fold and probe runs build it)."""
        atomic_write_json(self.path / "summary.json", summary)

    def record_thresholds(self, thresholds: dict) -> None:
        """summary.json's "thresholds" replaced by the ones just saved to thresholds.json (its other figures
        kept), so the summary never keeps training's 0.5 and `tuned_on: null` after a user saved thresholds.
        A run without a summary (still training) gets none: the trainer writes it when it ends."""
        summary = self.summary()
        if not isinstance(summary, dict):
            return
        atomic_write_json(self.path / "summary.json", {**summary, "thresholds": dict(thresholds)})

    def append_metrics(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, default=_json_default)
        try:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(line + "\n")
        except OSError as e:  # a torn last line is skipped by `metrics()`; the error names the file
            raise storage_error(self.path / "metrics.jsonl", e) from e

    def request_stop(self) -> None:
        (self.path / "STOP").write_text(now_iso())

    def clear_stop(self) -> None:
        (self.path / "STOP").unlink(missing_ok=True)


def new_run_id(model: str, dataset: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    short = re.sub(r"[^A-Za-z0-9]+", "-", dataset.split(":")[-1].rstrip("/").split("/")[-1])[:24].strip("-")
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9_]+', '-', model)[:24]}-{short}-{os.urandom(2).hex()}"


def find_run(ref: str | Path, root: str | Path | None = None) -> Run:
    """A run by folder path or by id under the runs folder; a clear error when neither exists."""
    for candidate in (Path(ref), runs_dir(root) / str(ref)):
        if (candidate / "config.json").exists():
            return Run(candidate)
    raise RunError(
        f"No run '{ref}' found (looked for a run folder there and under '{runs_dir(root)}'); see `python -m engine runs list`."
    )


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Runs under the runs folder, newest first."""
    base = runs_dir(root)
    if not base.is_dir():
        return []
    runs = [Run(p) for p in base.iterdir() if p.is_dir() and (p / "config.json").exists()]
    return sorted(runs, key=lambda r: (r.path / "config.json").stat().st_mtime, reverse=True)


def state_label(status: dict) -> str:
    """A run's state as people read it: `completed (time budget)` when its time budget ended it early (a budget
    cut is worth saying wherever the state is shown; early stopping on patience is the plan working), and
    `completed (pruned)` for a sweep's trial its pruner ended after an epoch (`engine.sweep`)."""
    reason = status.get("stop_reason")
    return status["display_state"] + (f" ({reason})" if reason in ("time budget", "pruned") else "")


def run_row(run: Run) -> dict:
    """One line of the runs table (UI and `runs list`)."""
    cfg = run.config().get("config", {})
    st, summary = run.status(), run.summary() or {}
    best = summary.get("best", {})
    return {
        "id": run.id,
        "name": cfg.get("name") or run.id,
        "dataset": cfg.get("dataset", ""),
        "model": cfg.get("model", ""),
        "state": state_label(st),
        "epoch": st.get("epoch", 0),
        "epochs": st.get("epochs", cfg.get("epochs")),
        "kfold": cfg.get("kfold") or 0,  # a k-fold parent counts folds (`fold`), its children count epochs
        "fold": st.get("fold"),
        "monitor": summary.get("monitor"),
        "best": best.get((summary.get("monitor") or "").removeprefix("val_")),
        "best_epoch": summary.get("best_epoch"),
        "wall_seconds": summary.get("wall_seconds"),
        "started_at": st.get("started_at"),
        "study": (run.config().get("study") or {}).get("name"),  # a sweep's trial names its study (engine.sweep)
    }


def delete_run(run: Run) -> None:
    if run.status()["display_state"] in ("running", "queued"):
        raise RunError(f"The run '{run.id}' is still {run.raw_status().get('state')}; stop it before deleting it.")
    shutil.rmtree(run.path)

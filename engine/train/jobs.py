"""Training as a background process: start, stop, resume, and one run at a time per device.

The job is `python -m engine train --run RUN` (a folder `prepare_run` made) in its own session, so it
survives the Streamlit script, page reloads and closed browsers; it talks to the app only through the
run folder. `resume` starts `python -m engine resume RUN` the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.config import RunConfig
from engine.runs.folder import Run, RunError, atomic_write_json, new_run_id, now_iso, runs_dir, storage_error

REPO_ROOT = Path(__file__).resolve().parents[2]  # engine/train/jobs.py -> the repository


def prepare_run(cfg: RunConfig, root: str | Path | None = None) -> Run:
    """Create the run folder with config.json and a `queued` status; nothing runs yet."""
    cfg.validate()
    base = runs_dir(root)
    run = Run(base / new_run_id(cfg.model, cfg.dataset))
    try:
        run.path.mkdir(parents=True)
    except OSError as e:  # a runs folder under a file, read-only or full: one sentence, in the app too
        raise storage_error(run.path, e) from None
    atomic_write_json(run.path / "config.json", {"config": cfg.to_dict(), "run_id": run.id, "created_at": now_iso()})
    run.write_status(
        state="queued", epoch=0, epochs=cfg.epochs, step=0, total_steps=None, pid=None, started_at=None, error=None
    )
    return run


def engine_command(args: list[str], nproc: int = 1) -> list[str]:
    """`python -m engine ARGS`, or the same under torchrun with `nproc` processes (DDP on one machine).

    Background jobs always start the plain command; a run with `nproc > 1` is relaunched under torchrun
    by the CLI itself (`launch_ddp`), which holds the device queue's lock for the whole DDP job."""
    if nproc > 1:
        # `--` ends torchrun's own options: its parser would otherwise take `--run` for an abbreviation of
        # its `--run-path` (ambiguous with `--run_path`) and refuse the command
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "engine",
            "--",
            *args,
        ]
    return [sys.executable, "-m", "engine", *args]


def engine_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn_engine(args: list[str], log_path: Path) -> subprocess.Popen:
    """`python -m engine ARGS` in the background, detached (its own session: it outlives the app's process and
    a Ctrl-C there), its output appended to `log_path`. Background runs and background sweeps start here."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            engine_command(args),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=engine_env(),
        )


def _spawn(run: Run, args: list[str]) -> subprocess.Popen:
    proc = spawn_engine(args, run.path / "train.log")
    run.write_status(pid=proc.pid)
    return proc


def start(cfg: RunConfig, root: str | Path | None = None) -> Run:
    """Prepare a run and launch its training process in the background."""
    run = prepare_run(cfg, root)
    _spawn(run, ["train", "--run", str(run.path), "--no-progress"])
    return run


def stop(run: Run) -> None:
    """Ask the trainer to stop at the next batch (it saves `last` and ends `stopped`)."""
    st = run.status()
    if st["display_state"] not in ("running", "queued"):
        raise RunError(f"The run '{run.id}' is {st['display_state']}, not running; nothing to stop.")
    run.request_stop()


def can_resume(run: Run) -> bool:
    st = run.status()
    return (
        st["display_state"] in ("stopped", "failed (crashed)") or st.get("state") == "failed"
    ) and run.last_state.exists()


def resume(run: Run) -> Run:
    """Continue a stopped, failed or crashed run from its `last` checkpoint, in the background."""
    if not can_resume(run):
        raise RunError(
            f"The run '{run.id}' is {run.status()['display_state']} or has no last checkpoint; only stopped or crashed runs with a checkpoint can resume."
        )
    run.clear_stop()
    run.write_status(state="queued", error=None)
    _spawn(run, ["resume", str(run.path), "--no-progress"])
    return run


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def launch_ddp(run: Run, args: list[str], nproc: int, device: str) -> int:
    """Run `python -m engine ARGS` under torchrun in the foreground, holding the device queue's lock.

    Rank 0 writes the run folder; if torchrun fails before any rank could record why (e.g. a rank
    died at start-up), the run is marked failed here so it never stays `queued`."""
    with device_slot(run, device):
        rc = subprocess.call(engine_command(args, nproc), cwd=REPO_ROOT, env=engine_env())
    if rc != 0 and run.raw_status().get("state") in ("queued", "running"):
        run.write_status(
            state="failed", error=f"torchrun with {nproc} processes exited with status {rc}; see train.log."
        )
    return rc


@contextlib.contextmanager
def device_slot(run: Run, device: str) -> Iterator[None]:
    """Hold the device's lock for the whole run; later runs wait here in state `queued`.

    A kernel file lock is released when the process dies, even by SIGKILL, so a crashed run never
    blocks the queue. Disabled under torchrun (all ranks of one job share the device set).
    """
    if under_torchrun() or os.environ.get("LOUPE_NO_QUEUE"):
        yield
        return
    locks = run.path.parent / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{device.replace(':', '_')}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            run.write_status(state="queued", pid=os.getpid())
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield

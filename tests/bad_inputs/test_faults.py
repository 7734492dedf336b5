"""Faults while training: SIGKILL, a full disk, a runs folder that cannot be written.

What must hold: the previous `last` checkpoint stays byte-for-byte intact and loadable (temp file +
os.replace), no temp file is left behind, and the error is one sentence naming the file or folder.
The background-job side of SIGKILL (crash detection, `jobs.resume`) is covered by
tests/test_jobs.py::test_sigkill_is_detected_as_crash_and_resume_completes; here the checkpoint files
themselves are checked after the kill.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.runs.folder
from engine.cli.main import main
from engine.errors import LoupeError
from engine.models.factory import build_model
from engine.runs.checkpoint import load_state, load_weights, save_weights
from engine.runs.folder import StorageError, atomic_write_json
from engine.train import jobs
from engine.train.run import run_training
from tests.conftest import ROOT
from tests.test_jobs import reap, wait_for
from tests.test_train import tiny


def small_model(seed: int):
    import torch

    torch.manual_seed(seed)
    return build_model("small_cnn", 10, in_chans=1)[0]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# --- SIGKILL --------------------------------------------------------------------------------------

KILL_MID_WRITE = """
import os, sys, time
sys.path.insert(0, {root!r})
import engine.runs.folder
from engine.runs.checkpoint import save_weights
from engine.models.factory import build_model

engine.runs.folder._CHUNK = 4096
real = engine.runs.folder._os_write
calls = [0]
def slow_write(fd, data):
    calls[0] += 1
    if calls[0] == 3:  # part of the new file is on disk: tell the parent, then wait for SIGKILL
        print("writing", flush=True)
        time.sleep(60)
    return real(fd, data)
engine.runs.folder._os_write = slow_write
save_weights(build_model("small_cnn", 10, in_chans=1)[0], engine.runs.folder.Path({path!r}))
"""


def test_sigkill_mid_write_leaves_the_previous_checkpoint_intact(tmp_path: Path):
    last = tmp_path / "checkpoints" / "last.safetensors"
    save_weights(small_model(0), last)
    before = last.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_MID_WRITE.format(root=str(ROOT), path=str(last))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert last.read_bytes() == before  # the old `last`, untouched
    load_weights(small_model(1), last)
    stale = last.parent / f".last.safetensors.tmp-{proc.pid}"
    assert temps(last.parent) == [stale.name]  # SIGKILL skips every cleanup...
    save_weights(small_model(2), last)
    assert stale.exists()  # (a fresh temp file may be a live writer's on another host: kept for a minute)
    os.utime(stale, (time.time() - 120, time.time() - 120))
    save_weights(small_model(3), last)
    assert temps(last.parent) == []  # ...so a later write removes the dead writer's leftover


@pytest.mark.slow
def test_sigkill_mid_epoch_leaves_loadable_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_HEARTBEAT_STALE_S", "1")
    run = jobs.start(tiny(epochs=4, batch_size=16, train_limit=600), tmp_path / "runs")
    # after epoch 1's checkpoints, somewhere in epochs 2-4 (38 steps each): maybe even mid-write
    wait_for(lambda: run.raw_status().get("epoch", 0) >= 1 and (run.checkpoints / "last_state.pt").exists())
    pid = run.raw_status()["pid"]
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    wait_for(lambda: run.status()["display_state"] == "failed (crashed)", timeout=10)
    model = small_model(1)
    for name in ("last.safetensors", "best.safetensors"):
        load_weights(model, run.checkpoints / name)
    state = load_state(run.checkpoints / "last_state.pt")
    assert state["trainer"]["epoch"] >= 1 and state["trainer"]["position"] == 0
    assert temps(run.checkpoints) in (
        [],
        [f".last.safetensors.tmp-{pid}"],
        [f".last_state.pt.tmp-{pid}"],
        [f".best.safetensors.tmp-{pid}"],
    )
    assert jobs.can_resume(run)  # and resuming completes it: tests/test_jobs.py (same kill, then jobs.resume)


# --- a full disk ----------------------------------------------------------------------------------


def disk_fills_up(monkeypatch: pytest.MonkeyPatch, when=lambda target: True) -> list[Path]:
    """Make writes into temp files for which `when(target)` holds fail with ENOSPC after their first chunk."""
    monkeypatch.setattr(engine.runs.folder, "_CHUNK", 64 * 1024)
    real, started, failed = engine.runs.folder._os_write, set(), []

    def write(fd: int, data) -> int:
        tmp = Path(os.readlink(f"/proc/self/fd/{fd}"))
        target = tmp.with_name(tmp.name.split(".tmp-")[0].lstrip("."))
        if when(target) and fd in started:
            failed.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        started.add(fd)
        return real(fd, data)

    monkeypatch.setattr(engine.runs.folder, "_os_write", write)
    return failed


def test_full_disk_keeps_the_previous_last_and_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    last = tmp_path / "checkpoints" / "last.safetensors"
    save_weights(small_model(0), last)
    before = last.read_bytes()
    failed = disk_fills_up(monkeypatch)
    with pytest.raises(StorageError) as e:
        save_weights(small_model(1), last)
    assert failed == [last]  # it did fail part-way, after a first chunk was written
    assert str(e.value).startswith(f"Cannot write '{last}': the disk is full;") and isinstance(e.value, LoupeError)
    assert temps(last.parent) == [] and last.read_bytes() == before
    load_weights(small_model(2), last)


def test_full_disk_during_training_fails_the_run_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tiny(epochs=2, train_limit=300)
    run = jobs.prepare_run(cfg, tmp_path / "runs")
    snapshot: dict[str, bytes] = {}

    def second_last_write(target: Path) -> bool:  # epoch 1 writes `last`; the disk is full for epoch 2's
        if target.name == "last.safetensors" and target.exists():
            snapshot.setdefault("last", target.read_bytes())
            return True
        return False

    failed = disk_fills_up(monkeypatch, second_last_write)
    with pytest.raises(StorageError, match="the disk is full"):
        run_training(cfg, run, resume=False, log=lambda m: None)
    last = run.checkpoints / "last.safetensors"
    assert failed and failed[0] == last
    status = run.raw_status()
    assert status["state"] == "failed" and f"Cannot write '{last}': the disk is full" in status["error"]
    assert temps(run.checkpoints) == [] and last.read_bytes() == snapshot["last"]
    assert load_state(run.checkpoints / "last_state.pt")["trainer"]["epoch"] == 1  # epoch 1's, resumable
    assert jobs.can_resume(run)


# --- a runs folder that cannot be written ---------------------------------------------------------


def test_runs_folder_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    """As root chmod stops nothing; a path through a regular file fails for everyone (NotADirectoryError)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    target = blocker / "runs" / "x" / "status.json"
    with pytest.raises(StorageError, match=f"Cannot write '{target}'.*not a directory"):
        atomic_write_json(target, {"state": "queued"})
    code = main(
        [
            "train",
            "--runs-dir",
            str(blocker / "runs"),
            "--dataset",
            "builtin:digits",
            "--model",
            "small_cnn",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"Cannot write '{blocker / 'runs'}" in err and "not a directory" in err
    assert "--runs-dir" in err and "Traceback" not in err
    assert blocker.read_text() == "a file"


def test_train_page_shows_an_unwritable_runs_folder_as_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.pagetools import open_page

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(blocker / "runs"))
    at = open_page("pages/training.py", "Train", dataset="builtin:digits")
    at.number_input(key="train.f.image_size").set_value(8).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    assert any("Cannot write" in e.value and "not a directory" in e.value for e in at.error)
    assert blocker.read_text() == "a file"


def test_runs_folder_under_a_file_through_the_real_cli(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "train",
            "--runs-dir",
            str(blocker / "runs"),
            "--dataset",
            "builtin:digits",
            "--model",
            "small_cnn",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and time.time() - t0 < 120
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(blocker / "runs") in error[0]

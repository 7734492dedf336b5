"""Background training: real subprocesses, SIGKILL and resume, the CLI for runs, and torchrun DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs
from engine.runs import Run, list_runs
from tests.conftest import ROOT
from tests.test_train import tiny


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def reap(pid: int) -> None:
    """The job is our child here (in the app it is not): collect it so it does not linger as a zombie."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_sigkill_is_detected_as_crash_and_resume_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_HEARTBEAT_STALE_S", "1")
    cfg = tiny(epochs=4, batch_size=16, train_limit=600)
    run = jobs.start(cfg, tmp_path / "runs")
    wait_for(lambda: run.raw_status().get("epoch", 0) >= 1 and (run.checkpoints / "last_state.pt").exists())
    pid = run.raw_status()["pid"]
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    wait_for(lambda: run.status()["display_state"] == "failed (crashed)", timeout=10)
    assert jobs.can_resume(run)
    jobs.resume(run)
    wait_for(lambda: run.raw_status()["state"] in ("completed", "failed"), timeout=180)
    status = run.raw_status()
    assert status["state"] == "completed", (run.path / "train.log").read_text()[-2000:]
    assert status["epoch"] == 4
    assert {r["epoch"] for r in run.metrics() if r["split"] == "val"} == {1, 2, 3, 4}
    assert "resuming at epoch" in (run.path / "train.log").read_text()
    reap(status["pid"])


def test_cli_train_runs_list_stop_and_resume(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_RUNS_DIR": str(tmp_path / "runs")}

    def engine(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)

    out = engine("train", "--dataset", "builtin:digits", "--model", "small_cnn", "--strategy", "scratch",
                 "--image-size", "8", "--epochs", "1", "--batch-size", "32", "--lr", "0.01", "--json", "--no-progress")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["state"] == "completed" and summary["final"]["test"]["accuracy"] > 0.5
    listed = json.loads(engine("runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [summary["run"]] and listed[0]["state"] == "completed"

    bad = engine("train", "--dataset", "builtin:digits", "--epochs", "0")
    assert bad.returncode == 2 and "Field 'epochs' must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
    bad = engine("stop", summary["run"])
    assert bad.returncode == 2 and "not running" in bad.stderr


def test_only_dataset_given_picks_a_recipe_and_says_why(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, "-m", "engine", "train", "--dataset", "builtin:fashion-binary",
                          "--epochs", "1", "--train-limit", "300", "--json", "--no-progress"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "chose model small_cnn" in out.stderr and "chose imbalance weighted_loss" in out.stderr
    cfg = Run(json.loads(out.stdout)["path"]).config()["config"]
    assert cfg["model"] == "small_cnn" and cfg["image_size"] == 28 and cfg["imbalance"] == "weighted_loss"
    assert cfg["epochs"] == 1  # what the user gave wins over the recipe


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun missing")
def test_ddp_two_cpu_processes_with_gloo(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "engine", "train",
                          "--dataset", "builtin:digits", "--model", "small_cnn", "--strategy", "scratch",
                          "--image-size", "8", "--epochs", "2", "--batch-size", "64", "--lr", "0.01",
                          "--device", "cpu", "--precision", "fp32", "--no-progress"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 1  # rank 0 made the folder, rank 1 wrote nothing of its own
    run = runs[0]
    assert run.raw_status()["state"] == "completed" and run.config()["world_size"] == 2
    assert [r["epoch"] for r in run.metrics() if r["split"] == "val"] == [1, 2]
    for name in ("checkpoints/best.safetensors", "checkpoints/last_state.pt", "predictions/test.npz", "summary.json"):
        assert (run.path / name).exists()
    assert run.summary()["final"]["test"]["accuracy"] > 0.5


def test_second_run_queues_until_the_device_is_free(tmp_path: Path):
    first = jobs.start(tiny(epochs=3, batch_size=16, train_limit=600), tmp_path / "runs")
    wait_for(lambda: first.raw_status()["state"] == "running")
    second = jobs.start(tiny(epochs=1), tmp_path / "runs")
    seen = set()
    while first.raw_status()["state"] == "running":
        seen.add(second.raw_status()["state"])
        time.sleep(0.1)
    assert seen == {"queued"}  # never ran beside the first one
    wait_for(lambda: second.raw_status()["state"] == "completed", timeout=120)
    assert second.raw_status()["started_at"] >= first.raw_status()["updated_at"][:19]
    reap(first.raw_status()["pid"]), reap(second.raw_status()["pid"])

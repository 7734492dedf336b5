"""Several machines, on this one: two torchrun "nodes" (`--nnodes 2 --node-rank 0/1`, c10d rendezvous on
127.0.0.1, gloo), one process each, train like one process with the same global batch; killing one node
mid-run and starting both again with `resume RUN` finishes the run.

With the c10d backend torchrun hands out ranks in the order the nodes join (it says it ignores
`--node-rank`), as it would on real machines, so the node killed here may hold rank 0 or rank 1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import main
from engine.runs.folder import Run, list_runs
from tests.conftest import ROOT
from tests.test_jobs import DDP_FLAGS, _epoch_curves, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun missing"
)
EPOCHS = 3
# the last --epochs wins; no early stopping, so both runs train every epoch
FLAGS = [*DDP_FLAGS, "--epochs", str(EPOCHS), "--patience", "0", "--no-progress", "--no-estimate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(node_rank: int, port: int, job: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """One "machine": torchrun with one process."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--node-rank",
        str(node_rank),
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        job,
        "--max-restarts",
        "0",
        "-m",
        "engine",
        "--",
        *args,
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def node_pids(node: subprocess.Popen) -> list[int]:
    """The node's torchrun agent and every process under it (torchrun starts its workers in sessions of
    their own, so signalling the agent's process group would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [node.pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def signal_node(node: subprocess.Popen, sig: int) -> None:
    for pid in node_pids(node):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def step_until(node: subprocess.Popen, predicate, timeout: float, slice_s: float = 0.3) -> None:
    """Let the job run in short slices, checking `predicate` while `node` is frozen (SIGSTOP): the other node
    blocks at its next collective then, so the job cannot run past the point looked for, however slowly
    this test process is scheduled. Returns with `node` frozen."""
    end = time.time() + timeout
    while time.time() < end:
        signal_node(node, signal.SIGSTOP)
        if predicate():
            return
        signal_node(node, signal.SIGCONT)
        time.sleep(slice_s)
    raise AssertionError("timed out waiting")


def finish(nodes: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes of every node; a node still running after `timeout` is killed (and the test fails)."""
    codes = []
    for node in nodes:
        try:
            codes.append(node.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            signal_node(node, signal.SIGKILL)
            node.wait()
            codes.append(-9)
    return codes


def test_two_torchrun_nodes_match_one_process_and_resume_after_one_node_is_killed(tmp_path: Path, capsys):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOUPE_RUNS_DIR": str(tmp_path / "nodes"),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    port = free_port()
    nodes = [start_node(r, port, "loupe-a", ["train", *FLAGS], env, logs[r]) for r in (0, 1)]
    try:
        run = wait_for(lambda: (list_runs(tmp_path / "nodes") or [None])[0], timeout=180, every=0.1)
        assert isinstance(run, Run)
        step_until(nodes[1], lambda: run.raw_status().get("epoch", 0) >= 1 and run.last_state.exists(), timeout=180)
    finally:
        signal_node(nodes[1], signal.SIGKILL)  # the second node goes away whole: its torchrun agent and process
    codes = finish(nodes, timeout=120)
    log = "\n".join(p.read_text(errors="replace")[-1500:] for p in logs)
    assert codes[1] == -signal.SIGKILL and codes[0] != 0, log  # the first node could not go on without its peer
    stopped = run.raw_status()
    assert stopped["state"] != "completed" and 1 <= stopped["epoch"] < EPOCHS, (stopped, log)

    port = free_port()
    nodes = [start_node(r, port, "loupe-b", ["resume", str(run.path), "--no-progress"], env, logs[r]) for r in (0, 1)]
    codes = finish(nodes, timeout=240)
    log = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
    assert codes == [0, 0], log
    status = run.raw_status()
    assert status["state"] == "completed" and status["epoch"] == EPOCHS, log
    assert run.config()["world_size"] == 2
    assert {r["epoch"] for r in run.metrics() if r["split"] == "val"} == set(range(1, EPOCHS + 1))
    # the whole logs: the resume's line comes before its epochs' lines and torchrun's closing output, which can
    # push it out of the last 3,000 characters shown above (CI saw that once)
    whole = "\n".join(p.read_text(errors="replace") for p in logs)
    assert f"resuming at epoch {stopped['epoch'] + 1}" in whole, log

    # the same run in one process (in-process CLI), global batch 64 as well
    assert main(["train", *FLAGS, "--runs-dir", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    single = list_runs(tmp_path / "single")[0]
    assert single.config()["world_size"] == 1
    (nodes_train, nodes_val), (one_train, one_val) = _epoch_curves(run), _epoch_curves(single)
    assert len(nodes_val) == len(one_val) == EPOCHS
    assert nodes_val[-1] < nodes_val[0] * 0.6  # it learned
    # as in the two-process test (tests/test_jobs.py): batch norm normalises over each node's 32 items, not
    # 64 (SyncBatchNorm is GPU-only), so the curves agree closely but not bit for bit (a 4-epoch run once
    # ended at val losses 0.104 vs 0.086 in its second epoch: 20% apart, 0.018 absolute)
    np.testing.assert_allclose(nodes_train, one_train, rtol=0.15, atol=0.02)
    np.testing.assert_allclose(nodes_val, one_val, rtol=0.1, atol=0.02)  # val losses fall to ~0.05: 0.02 absolute
    assert abs(run.summary()["final"]["test"]["accuracy"] - single.summary()["final"]["test"]["accuracy"]) < 0.05

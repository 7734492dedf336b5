"""`make bench-gpu DRY_RUN=1`: the GPU check walks every code path on the CPU, on tiny sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_make_bench_gpu_dry_run_passes_the_flag():
    out = subprocess.run(
        ["make", "-n", "bench-gpu", "DRY_RUN=1"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "bench/bench_gpu.py --dry-run" in out
    plain = subprocess.run(["make", "-n", "bench-gpu"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "bench/bench_gpu.py" in plain and "--dry-run" not in plain


def test_bench_gpu_dry_run_prints_every_section(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--dry-run"])
    # the dry run sets LOUPE_NO_QUEUE for its own runs: set here, so it is undone after this test (it leaked into
    # tests/test_jobs.py once, whose second run then trained beside the first instead of queueing)
    monkeypatch.setenv("LOUPE_NO_QUEUE", "1")
    import bench_gpu

    assert bench_gpu.main() == 0
    out = capsys.readouterr().out
    assert "device: CPU (dry run" in out
    for model in ("| small_cnn | 8 | 8 | no |", "| small_cnn | 8 | 8 | yes |", "| resnet50 | 32 | 2 | no |"):
        assert model in out
    assert "| resnet50 | 32 | 2 | yes |" in out
    assert out.count("| builtin:digits |") == 2  # the stand-ins for Fashion-MNIST and Imagenette
    assert "loss curve, first 5 steps, cpu vs cpu" in out and ": ok;" in out
    assert "DDP over 2 CPU processes (dry run): state completed" in out
    assert "n/a" in out  # no GPU: MFU and utilisation are not made up

"""Issue 15, the cases that are about the process: a real `python -m engine` that must end (no hang on a
pipe or a device), keep its peak memory bounded (a padded image, an `.npz` member bomb, a YAML alias
bomb), and exit 2 with one line and no traceback. Peak memory is the child's own `ru_maxrss`, read by a
small wrapper process (`peak_rss_mb`), so other tests' children never count.

`import torch` alone costs ~0.9 GB of resident memory here, so the bounds are set against what an
unguarded read would need (several GB), not against a tight baseline.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.bad_inputs.conftest import peak_rss_mb
from tests.conftest import ROOT, make_class_folders, write_image

GB = 1024**3


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOUPE_CACHE_DIR": str(tmp_path / "cache"),
        "LOUPE_DATA_DIR": str(tmp_path / "data"),
        "LOUPE_RUNS_DIR": str(tmp_path / "runs"),
        **extra,
    }


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_pipes_devices_and_a_padded_image_neither_hang_nor_fill_memory(tmp_path: Path):
    root = make_class_folders(tmp_path / "faces", {"c0": 3, "c1": 3})
    os.mkfifo(root / "c0" / "pipe.png")
    (root / "c0" / "zero.png").symlink_to("/dev/zero")
    padded = write_image(root / "c1" / "padded.png", value=5)
    with open(padded, "r+b") as f:
        f.truncate(3 * GB)  # sparse: a 3 GB file that costs no disk; the default cap is 512 MiB
    cmd = [sys.executable, "-m", "engine", "data", "stats", str(root), "--image-size", "8", "--json", "--no-progress"]
    done, peak = peak_rss_mb(cmd, _env(tmp_path), timeout=240)  # a hang on the pipe ends in TimeoutExpired
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    stats = json.loads(done.stdout)
    assert stats["num_images"] == 6
    reasons = {c["path"]: c["reason"] for c in stats["corrupt"]}
    assert set(reasons) == {"c0/pipe.png", "c0/zero.png", "c1/padded.png"}
    assert "over the cap of 536,870,912 bytes per file (LOUPE_MAX_IMAGE_BYTES)" in reasons["c1/padded.png"]
    assert peak < 2 * 1024, f"peak RSS {peak:.0f} MB: the padded file (3 GB) must not be read"


def _npz_bomb(path: Path, member_bytes: int) -> Path:
    """A valid .npz whose 'images' member is `member_bytes` of zeros, deflated ~1000 times, streamed so
    the test itself never holds it."""
    n = member_bytes // (64 * 64)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 64, 64)})
            block = bytes(1024**2)
            for _ in range(n * 64 * 64 // len(block)):
                f.write(block)
        with zf.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(n) % 2)
    return path


@pytest.mark.slow
def test_an_npz_member_bomb_is_refused_before_it_inflates(tmp_path: Path):
    path = _npz_bomb(tmp_path / "bomb.npz", GB)
    assert path.stat().st_size < 8 * 1024**2  # ~230 times smaller than what it inflates to
    cmd = [sys.executable, "-m", "engine", "data", "stats", str(path), "--quick", "--no-progress"]
    done, peak = peak_rss_mb(cmd, _env(tmp_path), timeout=240)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert "'bomb.npz' member 'images.npy' inflates" in line and "LOUPE_MAX_NPZ_RATIO" in line
    assert peak < 1536, f"peak RSS {peak:.0f} MB: the 1 GB member must not be inflated (torch alone is ~0.9 GB)"


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def test_a_yaml_alias_bomb_is_one_line_and_small(tmp_path: Path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "epochs: *i\n")  # a field holding the expansion: its error must not print it
    cmd = [sys.executable, "-m", "engine", "train", "--config", str(path)]
    done, peak = peak_rss_mb(cmd, _env(tmp_path), timeout=240)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert "expands to more than 10,000 YAML nodes" in line and len(line) < 300
    assert peak < 1536, f"peak RSS {peak:.0f} MB"


def test_an_environment_number_holding_text_exits_2_without_a_traceback(tmp_path: Path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"run_id": "r1", "config": {}}')
    (run / "status.json").write_text('{"state": "running", "heartbeat": 0, "pid": 4194321}')
    cmd = [sys.executable, "-m", "engine", "runs", "list"]
    done, _ = peak_rss_mb(cmd, _env(tmp_path, LOUPE_HEARTBEAT_STALE_S="thirty"), timeout=240)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line == "error: LOUPE_HEARTBEAT_STALE_S must be a positive number, got 'thirty'; fix or unset it."
    assert not any((tmp_path / "cwd").glob("*")) if (tmp_path / "cwd").exists() else True

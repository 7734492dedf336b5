"""Bad checkpoints and weights: pickles are refused unread, damage and mismatches are one clear sentence.

Every case builds its bad file from a real one-epoch run (copied per test), then goes through the
engine and through the command line (`python -m engine ...`): exit 2, the sentence on stderr, no traceback.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli.main import main
from engine.errors import WeightsError
from engine.models.factory import build_model
from engine.predict.run_model import load_run_model
from engine.runs.checkpoint import CheckpointError, load_state, load_weights, save_weights
from engine.runs.folder import Run
from engine.train.fit import fit
from tests.conftest import ROOT
from tests.pagetools import train_tiny


class MakesMarker:
    """A pickle payload: unpickling it calls open(marker, 'w'), i.e. runs code and creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    return train_tiny(tmp_path_factory.mktemp("ckpt-runs"), "builtin:digits", 8, session_cache)


@pytest.fixture
def run(base_run: Run, tmp_path: Path) -> Run:
    """A private copy of the trained run, free to damage."""
    dst = tmp_path / "runs" / base_run.id
    shutil.copytree(base_run.path, dst)
    return Run(dst)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
    return path


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`python -m engine ARGS` in this process (same code path as __main__); returns (exit code, stderr)."""
    code = main(list(args))
    return code, capsys.readouterr().err


def engine_subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def evil_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A marker path and pickles (torch.save zip and a bare pickle) that would create it when unpickled."""
    marker = tmp_path / "UNPICKLED"
    pt, pth = tmp_path / "evil.pt", tmp_path / "evil.pth"
    torch.save({"state_dict": MakesMarker(marker)}, pt)
    pth.write_bytes(pickle.dumps(MakesMarker(marker)))
    control = tmp_path / "control"  # the payload is live: a plain unpickle does run it
    pickle.loads(pickle.dumps(MakesMarker(control)))
    assert control.exists() and not marker.exists()
    return marker, [pt, pth]


# --- pickles are never unpickled ------------------------------------------------------------------


def test_pickle_weights_file_is_refused_without_unpickling(tmp_path: Path, capsys: pytest.CaptureFixture):
    marker, evil = evil_files(tmp_path)
    for path in evil:
        with pytest.raises(WeightsError, match="never unpickles") as e:
            build_model("small_cnn", 10, in_chans=1, weights_file=str(path))
        assert str(path) in str(e.value)
        code, err = cli(
            capsys,
            "train",
            "--dataset",
            "builtin:digits",
            "--model",
            "small_cnn",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--weights-file",
            str(path),
            "--no-progress",
        )
        assert code == 2 and "never unpickles" in err and str(path) in err and "Traceback" not in err
    assert not marker.exists()


def test_pickle_as_a_runs_checkpoints_is_refused_without_unpickling(
    run: Run, tmp_path: Path, image: Path, capsys: pytest.CaptureFixture
):
    marker, (pt, pth) = evil_files(tmp_path)
    shutil.copy(pth, run.checkpoints / "best.safetensors")
    shutil.copy(pt, run.checkpoints / "last.safetensors")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_run_model(run)
    code, err = cli(capsys, "predict", str(run.path), str(image))
    assert code == 2 and "best.safetensors" in err and "never unpickles" in err
    # last_state.pt is a torch pickle by design; weights_only=True refuses anything but plain data
    shutil.copy(pt, run.checkpoints / "last_state.pt")
    with pytest.raises(CheckpointError, match="last_state.pt.*not a plain-data checkpoint"):
        load_state(run.checkpoints / "last_state.pt")
    assert not marker.exists()


def test_engine_never_calls_torch_load_without_weights_only():
    """Every `torch.load(...)` under engine/ passes weights_only=True (the behaviour is tested above)."""
    offenders, calls = [], 0
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls >= 1 and offenders == []


# --- damaged files --------------------------------------------------------------------------------


def _flip_header(data: bytearray) -> None:
    data[20] ^= 0xFF  # inside the JSON header: names/shapes no longer parse


def _flip_body(data: bytearray) -> None:
    i = len(data) - len(data) // 3  # inside the tensor data: the file still parses, the checksum does not match
    data[i] ^= 0xFF
    data[i + 1] ^= 0x55


def _truncate(data: bytearray) -> None:
    del data[len(data) // 2 :]


@pytest.mark.parametrize("damage", [_flip_header, _flip_body, _truncate], ids=["header", "body", "truncated"])
def test_damaged_best_checkpoint_names_the_file(run: Run, image: Path, damage, capsys: pytest.CaptureFixture):
    best = run.checkpoints / "best.safetensors"
    data = bytearray(best.read_bytes())
    damage(data)
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged") as e:
        load_run_model(run)
    assert str(best) in str(e.value)
    code, err = cli(capsys, "predict", str(run.path), str(image))
    assert code == 2 and str(best) in err and "damaged" in err and "Traceback" not in err
    code, err = cli(
        capsys, "explain", str(run.path), str(image), "--method", "saliency", "--out", str(image) + ".x.png"
    )
    assert code == 2 and str(best) in err and not Path(str(image) + ".x.png").exists()


def _largest_zip_record(path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:  # the data starts after the local header, its name and its extra field
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("how", ["body", "truncated"])
def test_damaged_training_state_stops_resume_with_its_name(run: Run, how: str, capsys: pytest.CaptureFixture):
    state = run.checkpoints / "last_state.pt"
    data = bytearray(state.read_bytes())
    if how == "body":
        start, size = _largest_zip_record(state)
        data[start + size // 2] ^= 0xFF  # a tensor's bytes: the zip CRC no longer matches
    else:
        del data[len(data) // 2 :]
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="last_state.pt' is damaged"):
        load_state(state)
    run.write_status(state="stopped")
    code, err = cli(capsys, "resume", str(run.path), "--no-progress")
    assert code == 2 and str(state) in err and "cannot be resumed" in err
    assert run.raw_status()["state"] == "failed" and str(state) in run.raw_status()["error"]


def test_saved_weights_carry_a_checksum_that_a_clean_load_passes(run: Run, tmp_path: Path):
    model, _ = build_model("small_cnn", 10, in_chans=1)
    load_weights(model, run.checkpoints / "best.safetensors")  # the undamaged file loads
    save_weights(model, tmp_path / "again.safetensors")
    again, _ = build_model("small_cnn", 10, in_chans=1)
    load_weights(again, tmp_path / "again.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


# --- checkpoints from another model ---------------------------------------------------------------


def test_checkpoint_for_another_class_count_or_architecture(run: Run, image: Path, capsys: pytest.CaptureFixture):
    best = run.checkpoints / "best.safetensors"
    three, _ = build_model("small_cnn", 3, in_chans=1)
    save_weights(three, best)
    with pytest.raises(CheckpointError, match="was trained for 3 classes, but this model has 10"):
        load_run_model(run)
    out = engine_subprocess("predict", str(run.path), str(image))  # the real `python -m engine` entry point
    assert out.returncode == 2 and "was trained for 3 classes, but this model has 10" in out.stderr
    assert str(best) in out.stderr and "Traceback" not in out.stderr

    face, _ = build_model("facenet", 10, in_chans=1)
    save_weights(face, best)
    code, err = cli(capsys, "predict", str(run.path), str(image))
    assert code == 2 and "another architecture" in err and str(best) in err


def test_resume_with_a_last_checkpoint_of_another_class_count(run: Run, capsys: pytest.CaptureFixture):
    three, _ = build_model("small_cnn", 3, in_chans=1)
    save_weights(three, run.checkpoints / "last.safetensors")
    cfg_path = run.path / "config.json"
    from engine.config import RunConfig

    with pytest.raises(CheckpointError, match="trained for 3 classes"):
        fit(RunConfig.load(cfg_path), run, resume=True, log=lambda m: None)
    run.write_status(state="stopped")
    code, err = cli(capsys, "resume", str(run.path), "--no-progress")
    assert code == 2 and "was trained for 3 classes, but this model has 10" in err and "Traceback" not in err

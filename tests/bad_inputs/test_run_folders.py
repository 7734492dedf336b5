"""Issue 15, class 1: damaged run folders read by `evaluate` and `predict`.

A run folder is outside input too: a predictions file can be truncated, hand-edited, swapped for
another format or made to inflate; thresholds.json can hold a string or NaN. Each is one sentence
naming the file (exit 2, no traceback), read through the same guards as datasets (regular files only,
`.npz` members capped), never unpickled.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.runs.folder import Run
from tests.bad_inputs.conftest import cli, refused


@pytest.fixture
def run(digits_run: Run, tmp_path: Path) -> Run:
    """A private copy of the trained run, free to damage."""
    dst = tmp_path / "runs" / digits_run.id
    shutil.copytree(digits_run.path, dst)
    return Run(dst)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good(run: Run) -> dict[str, np.ndarray]:
    with np.load(run.predictions / "test.npz") as z:
        return {k: z[k] for k in z.files}


def _with(run: Run, **changes) -> bytes:
    arrays = {**_good(run), **changes}
    return _npz(**{k: v for k, v in arrays.items() if v is not None})


def _bomb(run: Run) -> bytes:
    """A valid predictions file plus a member of zeros that inflates ~1000 times (4 MB from ~4 KB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in _good(run).items():
            with zf.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, v)
        with zf.open("pad.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(4 * 1024**2, np.uint8))
    return buf.getvalue()


DAMAGE = {
    "truncated": lambda run: (run.predictions / "test.npz").read_bytes()[:200],
    "not a zip": lambda run: b"probs,labels\n0.1,1\n",
    "empty": lambda run: b"",
    "object probs": lambda run: _npz(probs=np.array([{"a": 1}] * 3, dtype=object), labels=np.zeros(3, np.int64)),
    "no probs": lambda run: _with(run, probs=None),
    "no labels": lambda run: _with(run, labels=None),
    "wider than classes.json": lambda run: _with(run, probs=np.full((len(_good(run)["labels"]), 11), 1 / 11)),
    "probs 1-D": lambda run: _with(run, probs=_good(run)["probs"][:, 0]),
    "probs NaN": lambda run: _with(run, probs=np.where(np.eye(*_good(run)["probs"].shape) > 0, np.nan, 0.1)),
    "probs inf": lambda run: _with(run, probs=np.full(_good(run)["probs"].shape, np.inf)),
    "probs text": lambda run: _with(run, probs=_good(run)["probs"].astype(str)),
    "labels float": lambda run: _with(run, labels=_good(run)["labels"].astype(float) + 0.5),
    "labels out of range": lambda run: _with(run, labels=_good(run)["labels"] + 50),
    "labels too few": lambda run: _with(run, labels=_good(run)["labels"][:-3]),
    "ids 2-D": lambda run: _with(run, ids=np.zeros((2, 2))),
    "member bomb": _bomb,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_predictions_file_is_one_sentence(run: Run, damage: str, capsys, jail):
    path = run.predictions / "test.npz"
    path.write_bytes(DAMAGE[damage](run))
    jail.seal()
    line = refused(cli(["evaluate", str(run.path), "--bootstrap", "0"], capsys), str(path))
    assert "damaged" in line or "cap" in line


@pytest.mark.parametrize("kind", ["fifo", "folder", "link to /dev/zero"])
def test_a_predictions_file_that_is_not_a_regular_file_is_refused_at_once(run: Run, kind: str, capsys, jail):
    path = run.predictions / "test.npz"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    jail.seal()
    line = refused(cli(["evaluate", str(run.path), "--bootstrap", "0"], capsys), str(path))
    assert "not a regular file" in line


THRESHOLDS = {
    "a string": '"abc"',
    "a list": "[0.5, 0.5]",
    "binary text": '{"binary": "abc"}',
    "binary NaN": '{"binary": NaN}',
    "binary inf": '{"binary": Infinity}',
    "binary null": '{"binary": null}',
    "multilabel text": '{"multilabel": "0.5"}',
    "temperature negative": '{"temperature": -1}',
    "temperature NaN": '{"temperature": NaN}',
    "positive class 5": '{"binary": 0.5, "positive_class": 5}',
}


@pytest.fixture
def digit(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("content", list(THRESHOLDS.values()), ids=list(THRESHOLDS))
def test_thresholds_json_holding_no_usable_number_is_one_sentence(run: Run, content: str, digit: Path, capsys, jail):
    (run.path / "thresholds.json").write_text(content)
    jail.seal()
    line = refused(cli(["predict", str(run.path), str(digit)], capsys), "thresholds.json")
    assert "Delete the file or save the thresholds again" in line


def test_good_thresholds_json_is_used(run: Run, digit: Path, capsys):
    (run.path / "thresholds.json").write_text(json.dumps({"temperature": 1.5, "tuned_on": "val"}))
    res = cli(["predict", str(run.path), str(digit), "--json"], capsys)
    assert res.code == 0, res.err
    assert json.loads(res.out)[0]["ok"]


def test_a_damaged_heartbeat_counts_as_stale(run: Run, capsys):
    (run.path / "status.json").write_text(json.dumps({"state": "running", "heartbeat": "abc", "pid": 2**22 + 17}))
    res = cli(["runs", "list", "--runs-dir", str(run.path.parent)], capsys)
    assert res.code == 0 and "Traceback" not in res.err
    assert run.status()["crashed"]

"""Issue 15, class 2: files that are not what they claim, inside datasets and as predictions' inputs.

A named pipe, a `.png` symlink to a device (`/dev/zero` never ends, `/dev/urandom` neither), a dangling
link, and a tiny image padded past the per-file byte cap. Only regular files are opened (checked with
fstat on the open descriptor, symlinks resolved), and never more than the cap is read: each of these is
one per-file refusal in the corrupt list while the good files are all counted, or, for a label table or
`.npz`, one sentence (exit 2). A deadline turns a hang into a failure instead of a stuck suite.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from engine.runs.folder import Run
from tests.bad_inputs.conftest import cli, refused
from tests.conftest import make_class_folders, write_image

CAP = 4096  # LOUPE_MAX_IMAGE_BYTES for these cases: a padded file over it costs no disk (sparse)


@pytest.fixture(autouse=True)
def deadline():
    """Fail (instead of hanging the suite) if a case blocks on a pipe or reads a device for 60 s."""

    def expire(*_):
        raise TimeoutError("blocked for 60 s: a special file was opened or read")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _special(path: Path, kind: str) -> str:
    """Make `path` a special file of `kind`; returns the words its refusal uses."""
    if kind == "fifo":
        os.mkfifo(path)
        return "a named pipe, not a regular file"
    if kind in ("zero", "urandom", "null"):
        path.symlink_to(f"/dev/{kind}")
        return "a device file, not a regular file"
    if kind == "dangling":
        path.symlink_to(path.parent / "gone.png")
        return "cannot read the file (No such file or directory)"
    if kind == "padded":
        write_image(path, value=9)
        with open(path, "r+b") as f:
            f.truncate(CAP + 1)  # a real PNG, then zeros up to one byte over the cap
        return f"is {CAP + 1:,} bytes, over the cap of {CAP:,} bytes per file (LOUPE_MAX_IMAGE_BYTES)"
    raise ValueError(kind)


KINDS = ["fifo", "zero", "urandom", "null", "dangling", "padded"]


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_MAX_IMAGE_BYTES", str(CAP))
    root = make_class_folders(tmp_path / "data" / "faces", {"c0": 3, "c1": 3})
    return root


@pytest.mark.parametrize("quick", [True, False], ids=["headers", "decoded"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_in_a_dataset_is_one_refused_file(dataset: Path, kind: str, quick: bool, capsys, jail):
    reason = _special(dataset / "c0" / "odd.png", kind)
    jail.seal()
    argv = ["data", "stats", str(dataset), "--json", "--no-progress"] + (
        ["--quick"] if quick else ["--image-size", "8"]
    )
    res = cli(argv, capsys)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    stats = json.loads(res.out)
    assert stats["num_images"] == 6 and stats["num_files"] == 7  # every good file counted
    assert [c["path"] for c in stats["corrupt"]] == ["c0/odd.png"]
    assert reason in stats["corrupt"][0]["reason"]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_over_a_folder_skips_or_refuses_each_special_file(
    digits_run: Run, dataset: Path, kind: str, tmp_path: Path, capsys, jail
):
    reason = _special(dataset / "c0" / "odd.png", kind)
    out = tmp_path / "data" / "out.csv"
    jail.seal()
    res = cli(["predict", str(digits_run.path), str(dataset), "--out", str(out), "--no-progress"], capsys)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6
    bad = [r for r in rows if r["error"]]
    if kind == "padded":  # a regular file: listed, with the reason
        assert [r["file"] for r in bad] == ["c0/odd.png"] and reason in bad[0]["error"]
    else:  # not a regular file: never opened, not listed as an image
        assert bad == []


@pytest.mark.parametrize("kind", ["fifo", "zero", "padded"])
def test_predict_on_one_special_file_is_a_per_file_error(
    digits_run: Run, tmp_path: Path, kind: str, capsys, jail, monkeypatch
):
    monkeypatch.setenv("LOUPE_MAX_IMAGE_BYTES", str(CAP))
    path = tmp_path / "odd.png"
    reason = _special(path, kind)
    jail.seal()
    res = cli(["predict", str(digits_run.path), str(path), "--json"], capsys)
    assert res.code == 2 and "Traceback" not in res.err
    (result,) = json.loads(res.out)
    assert not result["ok"] and reason in result["error"] and str(path) in result["error"]


TABLES = {
    "labels.csv as a fifo": ("labels.csv", "fifo"),
    "labels.csv to /dev/zero": ("labels.csv", "zero"),
    "labels.txt as a fifo": ("labels.txt", "fifo"),
    "labels.txt to /dev/urandom": ("labels.txt", "urandom"),
}


@pytest.mark.parametrize("name, kind", list(TABLES.values()), ids=list(TABLES))
def test_a_label_table_that_is_not_a_regular_file_is_one_sentence(tmp_path: Path, name: str, kind: str, capsys, jail):
    root = tmp_path / "numbered"
    for i in range(4):
        write_image(root / f"img{i}.png", value=i * 40)
    reason = _special(root / name, kind)
    jail.seal()
    line = refused(cli(["data", "stats", str(root), "--quick", "--no-progress"], capsys), f"'{name}'", reason)
    assert line.startswith("error: Cannot use the ")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_an_npz_that_is_not_a_regular_file_is_one_sentence(tmp_path: Path, kind: str, capsys, jail):
    root = tmp_path / "arrays"
    root.mkdir()
    reason = _special(root / "set.npz", kind)
    jail.seal()
    refused(cli(["data", "stats", str(root), "--quick", "--no-progress"], capsys), "'set.npz'", reason)


def test_a_class_folder_nested_a_thousand_levels_deep_is_one_sentence(tmp_path: Path, capsys):
    root = make_class_folders(tmp_path / "deep", {"a": 2, "b": 2})
    levels = [root / "a"]
    for _ in range(1000):  # level by level: pathlib's mkdir(parents=True) itself recurses too deep here
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    write_image(levels[-1] / "x.png")
    try:
        line = refused(cli(["data", "stats", str(root), "--quick", "--no-progress"], capsys), "nested more than 64")
        assert "flatten" in line
    finally:  # deepest first, so no cleanup recurses a thousand levels either
        (levels[-1] / "x.png").unlink()
        for level in reversed(levels[1:]):
            level.rmdir()


def test_a_csv_file_name_holding_a_nul_byte_is_one_sentence(tmp_path: Path, capsys, jail):
    root = make_class_folders(tmp_path / "tab", {"a": 2, "b": 2})
    (root / "labels.csv").write_text("filename,label\na/0.png,a\nb/\x000.png,b\na/1.png,a\nb/1.png,b\n")
    jail.seal()
    line = refused(cli(["data", "stats", str(root), "--quick", "--no-progress"], capsys), "Row 3", "control character")
    assert "\\x00" in line and "\x00" not in line


@pytest.mark.parametrize("size", [np.uint8, np.int64])
def test_an_npz_whose_member_inflates_past_the_ratio_is_one_sentence(tmp_path: Path, size, capsys, jail):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, images=np.zeros((64, 128, 128), np.uint8), labels=np.zeros(64, size))
    jail.seal()
    line = refused(cli(["data", "stats", str(path), "--quick", "--no-progress"], capsys), "'bomb.npz'", "images.npy")
    assert "LOUPE_MAX_NPZ_RATIO" in line


def test_an_npz_member_over_the_size_cap_is_one_sentence(tmp_path: Path, capsys, jail, monkeypatch):
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (8, 32, 32), np.uint8), labels=np.arange(8) % 2)
    monkeypatch.setenv("LOUPE_MAX_NPZ_BYTES", "4096")
    jail.seal()
    line = refused(cli(["data", "stats", str(path), "--quick", "--no-progress"], capsys), "'big.npz'", "4,096")
    assert "LOUPE_MAX_NPZ_BYTES" in line

"""`python -m engine data stats`: real subprocesses, JSON for scripts, one-sentence errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT, make_class_folders


def engine(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300
    )


def test_help_lists_subcommands():
    out = engine("--help")
    assert out.returncode == 0
    for cmd in ("data", "train", "runs", "stop", "resume"):
        assert cmd in out.stdout


def test_stats_json_for_a_folder_with_problems(tmp_path: Path):
    root = make_class_folders(tmp_path / "pets", {"cat": 9, "dog": 3}, size=(20, 16))
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "cat" / "copy.png").write_bytes((root / "dog" / "0.png").read_bytes())
    out = engine("data", "stats", str(root), "--json", "--no-progress")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["num_images"] == 13 and stats["num_files"] == 14
    assert stats["classes"] == ["cat", "dog"] and stats["class_counts"] == {"cat": 10, "dog": 3}
    assert stats["task"] == "binary" and stats["imbalance_ratio"] == 10 / 3
    assert [c["path"] for c in stats["corrupt"]] == ["dog/broken.jpg"]
    assert stats["duplicates"]["exact"] == [["cat/copy.png", "dog/0.png"]]
    assert stats["images"]["width"]["max"] == 20 and stats["images"]["height"]["min"] == 16


def test_stats_text_for_a_builtin():
    out = engine("data", "stats", "builtin:fashion-longtail", "--no-progress")
    assert out.returncode == 0, out.stderr
    for name in ("Sneaker", "Sandal", "Ankle boot"):
        assert name in out.stdout
    assert "imbalance" in out.stdout.lower()


def test_quick_stats_reads_headers_only(tmp_path: Path):
    root = make_class_folders(tmp_path / "d", {"a": 3, "b": 3})
    out = engine("data", "stats", str(root), "--quick", "--json", "--no-progress")
    stats = json.loads(out.stdout)
    assert stats["deep"] is False and stats["duplicates"] == {"checked": False} and stats["num_images"] == 6


def test_zip_spec_is_extracted_into_the_data_dir(tmp_path: Path):
    root = make_class_folders(tmp_path / "src", {"a": 3, "b": 3})
    zpath = tmp_path / "upload.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in root.rglob("*.png"):
            z.write(p, p.relative_to(root))
    out = engine("data", "stats", str(zpath), "--json", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["num_images"] == 6
    assert any(Path(os.environ["LOUPE_DATA_DIR"]).iterdir())


def test_errors_are_one_sentence_without_traceback(tmp_path: Path):
    (tmp_path / "evil.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    for spec, words in [(str(tmp_path / "missing"), "does not exist"), (str(tmp_path / "evil.zip"), "zip")]:
        out = engine("data", "stats", spec, "--no-progress")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]


def test_stats_lead_with_label_conflicts_and_small_split_warnings(tmp_path: Path):
    """The same photo in negatives/ and positives/ of a 40-image upload: the conflict and the tiny validation
    split are the first things `data stats` says, and the JSON carries both and the training's class weights."""
    import shutil

    from engine.train.imbalance import suggested_class_weights

    root = make_class_folders(tmp_path / "faces", {"negatives": 28, "positives": 12}, size=(20, 20))
    shutil.copy(root / "negatives" / "5.png", root / "positives" / "5-again.png")
    text = engine("data", "stats", str(root), "--no-progress")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[3].startswith("LABEL CONFLICTS: 1 duplicate group carries different labels")
    assert "negatives/5.png [negatives" in lines[4] and "positives/5-again.png [positives" in lines[4]
    assert any(line.startswith("warning: The validation split has fewer than 10 images") for line in lines[5:7])
    assert "suggested class weights" in text.stdout
    stats = json.loads(engine("data", "stats", str(root), "--json", "--no-progress").stdout)
    assert stats["duplicates"]["num_label_conflicts"] == 1
    assert stats["duplicates"]["label_conflicts"][0]["labels"] == ["negatives", "positives"]
    assert {w["split"] for w in stats["warnings"]} == {"val", "test"}
    assert stats["class_weights"] == suggested_class_weights(stats) and set(stats["class_weights"]) == {
        "negatives",
        "positives",
    }

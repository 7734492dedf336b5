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
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


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

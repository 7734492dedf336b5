"""Issue 15, class 1: option values and environment variables that parse but make no sense.

Every number that enters from outside is validated where it enters: a flag by its type function
(`engine/cli/flags.py`), a config field by `RunConfig.validate`, a `LOUPE_*` variable by `engine.env`.
NaN and inf are refused wherever a number is read. Each case runs the real parser in this process and
checks the outcome: exit 2, one line naming the option or variable and the value, no traceback, and
nothing written outside the data, runs and cache folders.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.bad_inputs.conftest import cli, refused
from tests.conftest import make_class_folders

RUN = "some-run"  # the refusals come before any run is looked up

FLAG_CASES = [
    # (argv, option, value as echoed)
    (["data", "stats", "builtin:digits", "--seed", "-1"], "--seed", "'-1'"),
    (["data", "stats", "builtin:digits", "--seed", "abc"], "--seed", "'abc'"),
    (["data", "stats", "builtin:digits", "--seed", "1.5"], "--seed", "'1.5'"),
    (["data", "stats", "builtin:digits", "--image-size", "100000"], "--image-size", "'100000'"),
    (["data", "stats", "builtin:digits", "--image-size", "0"], "--image-size", "'0'"),
    (["data", "stats", "builtin:digits", "--image-size", "7"], "--image-size", "'7'"),
    (["data", "stats", "builtin:digits", "--image-size", "nan"], "--image-size", "'nan'"),
    (["attack", RUN, "--eps", "abc"], "--eps", "'abc'"),
    (["attack", RUN, "--eps", "nan"], "--eps", "'nan'"),
    (["attack", RUN, "--eps", "0,inf"], "--eps", "'0,inf'"),
    (["attack", RUN, "--eps", "-0.1"], "--eps", "'-0.1'"),
    (["attack", RUN, "--eps", "0,2"], "--eps", "'0,2'"),
    (["attack", RUN, "--eps", ","], "--eps", "','"),
    (["attack", RUN, "--limit", "-1"], "--limit", "'-1'"),
    (["attack", RUN, "--seed", "-3"], "--seed", "'-3'"),
    (["attack", RUN, "--steps", "0"], "--steps", "'0'"),
    (["explain", RUN, "x.png", "--out", "heatmap.txt"], "--out", "'heatmap.txt'"),
    (["explain", RUN, "x.png", "--out", "heatmap"], "--out", "'heatmap'"),
    (["explain", RUN, "x.png", "--out", "OUTDIR"], "--out", "OUTDIR"),
    (["explain", RUN, "x.png", "--out", "x.png", "--alpha", "nan"], "--alpha", "'nan'"),
    (["explain", RUN, "x.png", "--out", "x.png", "--alpha", "2"], "--alpha", "'2'"),
    (["explain", RUN, "x.png", "--out", "x.png", "--alpha=-inf"], "--alpha", "'-inf'"),
    (["explain", RUN, "x.png", "--out", "x.png", "--n-steps", "0"], "--n-steps", "'0'"),
    (["explain", RUN, "x.png", "--out", "x.png", "--n-steps", "abc"], "--n-steps", "'abc'"),
    (["evaluate", RUN, "--seed", "-1"], "--seed", "'-1'"),
    (["evaluate", RUN, "--bootstrap", "-5"], "--bootstrap", "'-5'"),
    (["evaluate", RUN, "--top", "nan"], "--top", "'nan'"),
    (["predict", RUN, "x.png", "--top-k", "0"], "--top-k", "'0'"),
    (["predict", RUN, "x.png", "--unsure-margin", "nan"], "--unsure-margin", "'nan'"),
    (["predict", RUN, "x.png", "--unsure-margin", "inf"], "--unsure-margin", "'inf'"),
    (["predict", RUN, "x.png", "--unsure-margin", "1.5"], "--unsure-margin", "'1.5'"),
    (["train", "--class-weights", "inf,1"], "--class-weights", "'inf,1'"),
    (["train", "--class-weights", "nan,1"], "--class-weights", "'nan,1'"),
    (["train", "--class-weights", "0,1"], "--class-weights", "'0,1'"),
    (["train", "--class-weights=-1,2"], "--class-weights", "'-1,2'"),
    (["train", "--class-weights", "one,two"], "--class-weights", "'one,two'"),
]


@pytest.mark.parametrize("argv, option, value", FLAG_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in FLAG_CASES])
def test_a_flag_value_that_makes_no_sense_is_one_sentence(argv, option, value, capsys, jail, tmp_path):
    outdir = tmp_path / "outdir"  # an existing folder given as an output file
    outdir.mkdir()
    argv = [str(outdir) if a == "OUTDIR" else a for a in argv]
    jail.seal()
    line = refused(cli(argv, capsys), option, str(outdir) if value == "OUTDIR" else value)
    assert "must" in line or "names the folder" in line


CONFIG_CASES = [
    (["--lr", "nan"], "lr", "finite"),
    (["--lr", "inf"], "lr", "finite"),
    (["--dropout", "nan"], "dropout", "finite"),
    (["--val-fraction", "inf"], "val_fraction", "finite"),
    (["--seed", "-1"], "seed", ">= 0"),
    (["--image-size", "100000"], "image_size", "<= 1024"),
]


@pytest.mark.parametrize("flags, field, allowed", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_a_train_flag_is_checked_by_the_config_before_anything_runs(flags, field, allowed, capsys, jail, tmp_path):
    jail.seal()
    line = refused(cli(["train", "--dataset", "builtin:digits", *flags], capsys), f"'{field}'", allowed)
    assert line.startswith("error: Field")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder begun


# --- LOUPE_* environment variables -------------------------------------------------------------------


def _folder(tmp: Path) -> str:
    return str(make_class_folders(tmp / "faces", {"a": 2, "b": 2}))


def _table(tmp: Path) -> str:
    root = make_class_folders(tmp / "tab", {"a": 2, "b": 2})
    rows = [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    (root / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    return str(root / "labels.csv")


def _zip(tmp: Path) -> str:
    root = make_class_folders(tmp / "z", {"a": 2, "b": 2})
    path = tmp / "set.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(root.rglob("*.png")):
            zf.write(p, p.relative_to(root).as_posix())
    return str(path)


def _npz(tmp: Path) -> str:
    path = tmp / "set.npz"
    np.savez_compressed(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]))
    return str(path)


def _yaml(tmp: Path) -> str:
    path = tmp / "c.yaml"
    path.write_text("epochs: 1\n")
    return str(path)


def _running_run(tmp: Path) -> str:
    run = tmp / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_id": "r1", "config": {"dataset": "builtin:digits"}}))
    (run / "status.json").write_text(json.dumps({"state": "running", "heartbeat": 0, "pid": 2**22 + 17}))
    return str(tmp / "runs")


#: each LOUPE_* number, with a command that reads it: (variable, argv builder, kind of number)
ENV_READERS = [
    ("LOUPE_MAX_PIXELS", lambda t: ["data", "stats", _folder(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_IMAGE_BYTES", lambda t: ["data", "stats", _folder(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_CSV_ROWS", lambda t: ["data", "stats", _table(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_UNZIPPED_BYTES", lambda t: ["data", "stats", _zip(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_ZIP_FILES", lambda t: ["data", "stats", _zip(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_NPZ_BYTES", lambda t: ["data", "stats", _npz(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_NPZ_RATIO", lambda t: ["data", "stats", _npz(t), "--quick", "--no-progress"], "whole"),
    ("LOUPE_MAX_YAML_NODES", lambda t: ["train", "--config", _yaml(t)], "whole"),
    ("LOUPE_HEARTBEAT_STALE_S", lambda t: ["runs", "list", "--runs-dir", _running_run(t)], "number"),
]
BAD_ENV_VALUES = ["abc", "nan", "inf", "-5", "0"]


@pytest.mark.parametrize("value", BAD_ENV_VALUES)
@pytest.mark.parametrize("name, argv, kind", ENV_READERS, ids=[r[0] for r in ENV_READERS])
def test_an_environment_number_holding_text_is_one_sentence(
    name, argv, kind, value, capsys, jail, tmp_path, monkeypatch
):
    args = argv(tmp_path)
    jail.seal()
    monkeypatch.setenv(name, value)
    line = refused(cli(args, capsys), name, f"'{value}'")
    allowed = "a positive whole number" if kind == "whole" else "a positive number"
    assert line == f"error: {name} must be {allowed}, got '{value}'; fix or unset it."


def test_a_huge_environment_value_is_echoed_as_an_excerpt(capsys, jail, tmp_path, monkeypatch):
    args = ["data", "stats", _folder(tmp_path), "--quick", "--no-progress"]
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "9" * 50 + "x" * 100_000)
    line = refused(cli(args, capsys), "LOUPE_MAX_PIXELS", "...")
    assert len(line) < 200


@pytest.mark.parametrize("value", ["12", " 12 ", ""])
def test_a_good_environment_number_is_read(value, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_CSV_ROWS", value)
    res = cli(["data", "stats", _table(tmp_path), "--quick", "--json", "--no-progress"], capsys)
    assert res.code == 0, res.err
    assert json.loads(res.out)["num_images"] == 4

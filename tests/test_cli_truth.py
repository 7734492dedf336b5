"""The command line says what it does (issue 14, items 9, 10, 12, 13, 15): explicit choices win over the
defaults, a time budget that ends a run is named, errors go to stderr with exit 2, options that cannot
apply are refused, and every option has help text. In-process (`main([...])` with capsys) except where the
behaviour is about the process (a closed pipe)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import build_parser, main
from engine.runs.folder import Run, atomic_write_json, list_runs, run_row
from tests.conftest import ROOT, make_class_folders, write_image
from tests.test_inference import binary_run, digits_run  # noqa: F401  (session fixtures: tiny trained runs)


def small_faces(root: Path) -> Path:
    """A folder of small (20x16) photos in two classes: where the defaults pick small_cnn from scratch."""
    return make_class_folders(root, {"cat": 12, "dog": 12}, size=(20, 16))


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# --- item 9: what the user gave wins, and the reasons name what was chosen -------------------------------


@pytest.mark.parametrize("model", ["tf_efficientnet_lite0", "resnet18"])
def test_an_explicit_pretrained_model_is_not_overridden_by_the_small_image_defaults(tmp_path, model):
    from engine.cli.train import build_config

    data = small_faces(tmp_path / "faces")
    cfg, reasons = build_config(parse(["train", "--model", model, "--pretrained", "--dataset", str(data)]))
    assert cfg.model == model and cfg.pretrained is True
    assert cfg.strategy != "scratch"  # the issue: "chose strategy scratch: small_cnn has no pretrained weights"
    assert not any("small_cnn" in r for r in reasons), reasons
    strategy = next(r for r in reasons if r.startswith("strategy"))
    assert model in strategy and cfg.strategy in strategy
    assert cfg.image_size >= 32  # not the images' own 16 px, which a pretrained ImageNet model cannot use


def test_the_defaults_still_choose_small_cnn_from_scratch_when_nothing_is_given(tmp_path):
    from engine.cli.train import build_config

    cfg, reasons = build_config(parse(["train", "--dataset", str(small_faces(tmp_path / "faces"))]))
    assert (cfg.model, cfg.strategy, cfg.image_size) == ("small_cnn", "scratch", 16)
    assert "strategy scratch: small_cnn has no pretrained weights" in reasons


def test_an_explicit_strategy_and_image_size_win(tmp_path):
    from engine.cli.train import build_config

    argv = ["train", "--dataset", str(small_faces(tmp_path / "faces")), "--model", "resnet18", "--pretrained"]
    cfg, reasons = build_config(parse([*argv, "--strategy", "linear_probe", "--image-size", "64"]))
    assert (cfg.strategy, cfg.image_size) == ("linear_probe", 64)
    assert not any(r.startswith(("strategy", "image_size")) for r in reasons)


# --- items 10 and 15: a run its time budget ended says so; the header and the done line are exact ------


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory) -> tuple[Path, str, str]:
    """A 3-epoch run on a folder with two unusable files that a 1 ms time budget ends in its first epoch."""
    root = tmp_path_factory.mktemp("budget")
    data = make_class_folders(root / "pets", {"cat": 20, "dog": 20}, size=(20, 16))
    png = (data / "dog" / "0.png").read_bytes()
    (data / "dog" / "truncated.png").write_bytes(png[: len(png) // 2])
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runs = root / "runs"
    argv = ["train", "--dataset", str(data), "--epochs", "3", "--time-budget-s", "0.001", "--batch-size", "8"]
    argv += ["--runs-dir", str(runs), "--no-progress", "--no-estimate", "--device", "cpu"]
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()
    return runs, out.getvalue(), err.getvalue()


def test_a_run_its_time_budget_ended_says_so_in_status_runs_list_table_and_summary(budget_run, capsys):
    runs, out, _ = budget_run
    (run,) = list_runs(runs)
    path = run.path
    status = run.raw_status()
    assert status["state"] == "completed" and status["stop_reason"] == "time budget"
    assert status["epoch"] == 1 and status["epochs"] == 3
    assert out.startswith(f"completed (time budget: 1 of 3 epochs): {path}")
    assert run_row(run)["state"] == "completed (time budget)"
    assert main(["runs", "list", "--runs-dir", str(runs)]) == 0
    assert "completed (time budget)" in capsys.readouterr().out
    assert main(["runs", "list", "--runs-dir", str(runs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "completed (time budget)"
    assert (run.summary() or {})["stopped_early"] == "time"


def test_the_train_pages_runs_table_shows_the_time_budget(budget_run, monkeypatch):
    from app.train.runs_table import collect

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(budget_run[0]))
    assert [r["state"] for r in collect()] == ["completed (time budget)"]


def test_the_train_header_counts_usable_images_and_the_done_line_names_its_split(budget_run):
    _, _, err = budget_run
    header = next(line for line in err.splitlines() if "usable images" in line)
    assert ": 40 usable images (2 unusable left out), 2 classes" in header
    done = next(line for line in err.splitlines() if line.startswith("done:"))
    assert "test figures of the best model: accuracy" in done
    assert "the time budget of 0.001 s ended it after 1 of 3 epochs" in done


def test_runs_list_shows_a_k_fold_runs_folds_as_folds(tmp_path, capsys):
    run = Run(tmp_path / "runs" / "20260101-000000-small_cnn-digits-kf5")
    run.path.mkdir(parents=True)
    atomic_write_json(
        run.path / "config.json", {"config": {"model": "small_cnn", "dataset": "builtin:digits", "kfold": 5}}
    )
    run.write_status(state="completed", epoch=5, epochs=5, fold=5, folds=5)
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out
    assert "fold 5/5" in line and "epoch" not in line


def test_data_stats_names_each_corrupt_file_and_its_reason(tmp_path, capsys):
    root = make_class_folders(tmp_path / "pets", {"cat": 4, "dog": 4}, size=(20, 16))
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["data", "stats", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("corrupt: "))
    assert line.startswith("corrupt: dog/broken.jpg: ") and len(line) > len("corrupt: dog/broken.jpg: ") + 5


def test_binary_evaluate_says_which_accuracy_is_which(binary_run, capsys):  # noqa: F811
    assert main(["evaluate", str(binary_run), "--bootstrap", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    acc = next(x for x in lines if x.strip().startswith("accuracy "))
    top1 = next(x for x in lines if x.strip().startswith("top-1 accuracy"))
    assert "at the threshold 0." in acc
    assert "by argmax" in top1


def test_explain_writes_the_overlay_at_the_input_images_resolution(digits_run, tmp_path, capsys):  # noqa: F811
    photo = write_image(tmp_path / "wide.png", size=(45, 30), seed=zlib.crc32(b"wide"))
    out = tmp_path / "overlay.png"
    assert main(["explain", str(digits_run), str(photo), "--method", "saliency", "--out", str(out)]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[:2] == (30, 45)
    from engine.data.decode import decode

    original, _ = decode(photo, size=None, channels=1)  # the digits model reads grey images
    original = np.repeat(original, 3, axis=2)
    # outside the centred 30x30 square the model saw, the image is dimmed, not painted over
    np.testing.assert_array_equal(img[:, :7], (original[:, :7].astype(np.float32) * 0.4).round().astype(np.uint8))
    assert "45x30" in capsys.readouterr().out


# --- item 12: one channel for errors, one exit code, --debug anywhere, a closed pipe ends quietly ----------


def test_predict_reports_an_unreadable_image_on_stderr_only(digits_run, tmp_path, capsys):  # noqa: F811
    assert main(["predict", str(digits_run), str(tmp_path / "missing.png")]) == 2
    out, err = capsys.readouterr()
    assert "missing.png" not in out and "error" not in out.lower()
    assert "missing.png" in err and err.startswith("error: ")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_anywhere_and_keeps_exit_code_2(tmp_path, capsys, where):
    argv = ["runs", "delete", "no-such-run", "--runs-dir", str(tmp_path)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: No run 'no-such-run'")


def test_every_command_accepts_debug_after_its_arguments():
    from engine.cli.main import leaves

    parser = build_parser()
    for leaf in leaves(parser):
        assert "--debug" in leaf._option_string_actions, leaf.prog


def _closed_pipe(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    p.stdout.close()  # the reader is gone before the command writes anything (`| head -1` after its line)
    err = p.stderr.read().decode()
    return subprocess.CompletedProcess(p.args, p.wait(timeout=120), "", err)


def test_a_closed_pipe_ends_quietly_like_standard_tools(tmp_path):
    res = _closed_pipe("runs", "list", "--runs-dir", str(tmp_path))
    assert res.stderr == "" and res.returncode == 141  # 128 + SIGPIPE, as `yes | head -1` ends `yes`
    res = _closed_pipe("--help")  # argparse's help drops a failed write itself: exit 0, nothing said
    assert res.stderr == "" and res.returncode in (0, 141)


# --- item 13: options that cannot apply are refused; every option has help text ---------------------------


@pytest.mark.parametrize("flag", [["--nproc", "2"], ["--kfold", "5"], ["--name", "x"], ["--epochs", "3"]])
def test_lr_find_refuses_the_flags_of_a_whole_run(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["lr-find", "--dataset", "builtin:digits", *flag])
    assert e.value.code == 2 and f"unrecognized arguments: {flag[0]}" in capsys.readouterr().err


def test_evaluate_refuses_a_binary_rule_on_a_multiclass_run(digits_run, capsys):  # noqa: F811
    assert main(["evaluate", str(digits_run), "--rule", "min_hter", "--bootstrap", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--rule" in err and "multiclass" in err
    assert main(["evaluate", str(digits_run), "--bootstrap", "0"]) == 0  # without --rule it evaluates


def test_sync_bn_on_the_cpu_is_refused(tmp_path, capsys):
    argv = ["train", "--dataset", "builtin:digits", "--device", "cpu", "--sync-bn", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--no-estimate", "--no-progress"]) == 2
    assert "--sync-bn" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_sync_bn_from_a_config_file_on_the_cpu_is_refused_too(tmp_path, capsys):
    config = tmp_path / "gpu.yaml"
    config.write_text("dataset: builtin:digits\ndevice: cpu\nsync_bn: true\n")
    argv = ["train", "--config", str(config), "--runs-dir", str(tmp_path), "--no-estimate", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sync_bn: true in the config" in err and not (tmp_path / "runs").exists()
    assert main([*argv, "--sync-bn", "false", "--epochs", "0"]) == 2  # refused for its 0 epochs, not for sync_bn
    err = capsys.readouterr().err
    assert "epochs" in err and "sync" not in err  # `--sync-bn false` overrides the config file


def _all_parsers(parser: argparse.ArgumentParser, name: str = "engine"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _all_parsers(child, f"{name} {sub}")


def test_every_option_of_every_subcommand_has_help_text():
    missing = [
        f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, parser in _all_parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and action.help != argparse.SUPPRESS and not action.help
    ]
    assert missing == []

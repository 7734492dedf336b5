"""Out-of-range config values and image sizes a model cannot take: refused with the field's name,
before any run folder or training exists, in the engine, the command line and the Train page."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli.main import main
from engine.config import ConfigError, RunConfig
from engine.models.factory import build_model, check_image_size, min_image_size
from engine.runs.folder import list_runs, runs_dir
from engine.train.fit import fit
from engine.train.jobs import prepare_run
from tests.conftest import ROOT

BASE = [
    "train",
    "--dataset",
    "builtin:digits",
    "--model",
    "small_cnn",
    "--strategy",
    "scratch",
    "--image-size",
    "8",
    "--epochs",
    "1",
    "--no-progress",
]


@pytest.mark.parametrize(
    "flag, value, field",
    [
        ("--epochs", "-1", "epochs"),
        ("--epochs", "0", "epochs"),
        ("--lr", "0", "lr"),
        ("--lr", "-0.1", "lr"),
        ("--lr", "nan", "lr"),
        ("--batch-size", "0", "batch_size"),
        ("--image-size", "4", "image_size"),
        ("--time-budget-s", "inf", "time_budget_s"),
    ],
)
def test_cli_refuses_out_of_range_values_naming_the_field(flag, value, field, capsys: pytest.CaptureFixture):
    code = main([*BASE, flag, value])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and f"Field '{field}'" in lines[0], err
    assert list_runs() == [] and not runs_dir().exists()  # refused before a run folder was made


def test_cli_subprocess_prints_one_sentence_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "engine", *BASE, "--epochs", "-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "error: Field 'epochs' must be >= 1; got -1."


def test_config_file_values_are_validated_too(tmp_path: Path, capsys: pytest.CaptureFixture):
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset": "builtin:digits", "batch_size": 0}')
    with pytest.raises(ConfigError, match="Field 'batch_size' must be >= 1"):
        RunConfig.load(bad)
    assert main(["train", "--config", str(bad), "--no-progress"]) == 2
    assert "Field 'batch_size'" in capsys.readouterr().err


# --- image size too small for the model -----------------------------------------------------------


def test_minimum_image_size_is_the_models_total_stride():
    assert min_image_size("resnet18") == 32 and min_image_size("vit_tiny_patch16_224") == 16
    model, _ = build_model("resnet18", 2, image_size=32)  # the minimum itself really runs
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    for name, size in [("resnet18", 16), ("resnet18", 31), ("vit_tiny_patch16_224", 8), ("facenet", 6)]:
        with pytest.raises(ConfigError, match=rf"Field 'image_size' is {size} px, but '{name}'"):
            build_model(name, 2, in_chans=1, image_size=size)
    check_image_size("small_cnn", 4)  # the built-ins' own minimum (4 px for small_cnn) passes


def test_cli_refuses_a_too_small_image_for_the_model_before_any_run(capsys: pytest.CaptureFixture):
    code = main(
        [
            "train",
            "--dataset",
            "builtin:digits",
            "--model",
            "resnet18",
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Field 'image_size' is 16 px, but 'resnet18'" in err and "at least 32 px" in err
    assert list_runs() == []


def test_data_too_small_for_a_builtin_fails_before_training(tmp_path: Path):
    """image_size 0 means the data's own size: a 6 px dataset cannot feed facenet (needs 8 px)."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny6.npz"
    np.savez(npz, images=rng.integers(0, 256, (60, 6, 6), dtype=np.uint8), labels=np.arange(60) % 2)
    cfg = RunConfig(dataset=str(npz), model="facenet", strategy="scratch", epochs=1, precision="fp32").validate()
    run = prepare_run(cfg)
    with pytest.raises(ConfigError, match="Field 'image_size' is 6 px, but 'facenet'"):
        fit(cfg, run, log=lambda m: None)
    assert not (run.checkpoints / "last.safetensors").exists() and run.metrics() == []


# --- the Train page -------------------------------------------------------------------------------


def _page_refuses(at, expect: str) -> None:
    at.button(key="train.start").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and expect in errors[0], errors
    assert list_runs() == []
    assert at.button(key="train.start")


@pytest.mark.parametrize("field, value", [("epochs", -1), ("batch_size", 0)])
def test_train_page_widgets_cannot_hold_out_of_range_values(field, value):
    """The number inputs take their bounds from the config's metadata, so -1 epochs never reaches a config
    (the browser refuses it; the server clamps it); values inside the widget's bounds that the config still
    refuses (lr 0, an image size too small for the model) are shown as an error below."""
    from tests.test_page_train import number, open_train

    at = open_train("builtin:digits")
    lo = {f.name: f.metadata["lo"] for f in fields(RunConfig)}[field]
    assert number(at, field).min == lo == 1
    number(at, field).set_value(value).run()
    assert not at.exception and number(at, field).value == lo  # never the out-of-range value
    RunConfig(**{field: number(at, field).value}).validate()


def test_train_page_refuses_an_image_size_too_small_for_the_model():
    from tests.test_page_train import number, open_train

    at = open_train("builtin:digits")
    at.selectbox(key="train.model_pick").set_value("resnet18").run()
    number(at, "image_size").set_value(16).run()
    _page_refuses(at, "Field 'image_size' is 16 px, but 'resnet18'")

"""Presets: `quick` is a small, fast recipe for the dataset that is selected, `demo` the Fashion-MNIST demo,
and neither ever overrides an explicit value (precedence: preset < config file < flags). Issue 13, item 10."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli.main import build_parser
from engine.cli.train import build_config
from engine.train.recipes import PRESETS, QUICK_MAX_TRAIN, quick_recipe
from tests.conftest import make_class_folders, needs_fashion


def config_of(*argv: str):
    return build_config(build_parser().parse_args(["train", *argv]))


def test_quick_keeps_the_dataset_given_and_suits_it():
    cfg, reasons = config_of("--preset", "quick", "--dataset", "builtin:digits")
    assert cfg.dataset == "builtin:digits"
    assert (cfg.model, cfg.image_size, cfg.strategy) == ("small_cnn", 8, "scratch")  # the digits' own 8 px
    assert cfg.epochs == 3 and cfg.time_budget_s > 0
    assert any("quick recipe" in r for r in reasons)


def test_a_preset_never_overrides_the_config_file_or_a_flag(tmp_path: Path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"dataset": "builtin:digits", "epochs": 7}))
    cfg, _ = config_of("--preset", "quick", "--config", str(config))
    assert cfg.dataset == "builtin:digits" and cfg.epochs == 7 and cfg.image_size == 8
    cfg, _ = config_of("--preset", "quick", "--config", str(config), "--epochs", "9", "--image-size", "16")
    assert cfg.epochs == 9 and cfg.image_size == 16
    cfg, _ = config_of("--preset", "demo", "--dataset", "builtin:digits", "--image-size", "8", "--batch-size", "32")
    assert (cfg.dataset, cfg.image_size, cfg.batch_size) == ("builtin:digits", 8, 32)
    assert cfg.epochs == PRESETS["demo"]["epochs"]


@needs_fashion
def test_demo_is_fashion_mnist_and_quick_alone_is_the_same_recipe_on_it():
    demo, _ = config_of("--preset", "demo")
    assert demo.dataset == "builtin:fashion-mnist"
    assert {k: getattr(demo, k) for k in PRESETS["demo"]} == PRESETS["demo"]
    quick, _ = config_of("--preset", "quick")
    assert quick.to_dict() == demo.to_dict()  # the benchmarks' `--preset quick` is unchanged


def test_quick_for_photos_takes_frozen_features_and_limits_big_splits(tmp_path: Path):
    root = make_class_folders(tmp_path / "photos", {"cat": 6, "dog": 6}, size=(120, 100))
    cfg, _ = config_of("--preset", "quick", "--dataset", str(root))
    assert cfg.dataset == str(root) and cfg.strategy == "linear_probe" and cfg.model == "tf_efficientnet_lite0"
    big = {
        "num_images": 200_000,
        "splits": {"train": {"num_images": 140_000}},
        "images": {"width": {"mean": 28}, "height": {"mean": 28}},
    }
    values, reasons = quick_recipe(big)
    assert values["train_limit"] == QUICK_MAX_TRAIN and any("train_limit" in r for r in reasons)


def test_unknown_preset_is_one_sentence():
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="available: quick, demo"):
        config_of("--preset", "slow")

"""Presets and dataset-aware defaults: what `train --dataset X` alone should do, and why.

Each rule returns the fields it sets and one sentence the CLI and the Train page show, so a user can
see (and override) every choice the defaults made.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Measured on the project's 2-core CPU (bench/RESULTS.md): about 92% test accuracy on
    # builtin:fashion-mnist after 3 epochs; the time budget is a guard that it ends within 2 minutes.
    "quick": {
        "dataset": "builtin:fashion-mnist", "model": "small_cnn", "image_size": 28, "epochs": 3,
        "batch_size": 256, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4, "scheduler": "onecycle",
        "hflip": True, "dropout": 0.1, "time_budget_s": 115.0, "strategy": "scratch",
    },
}


def apply_preset(name: str) -> dict[str, Any]:
    from engine.config import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}'; available: {', '.join(PRESETS)}.")
    return dict(PRESETS[name])


def suggest(stats: dict, given: set[str], gpu: bool) -> tuple[dict[str, Any], list[str]]:
    """Fields that suit the dataset described by `stats` (from `quick_stats`), except those in `given`."""
    from engine.train.imbalance import recommend

    out: dict[str, Any] = {}
    why: list[str] = []
    widths = stats.get("images", {}).get("width", {})
    heights = stats.get("images", {}).get("height", {})
    short = min(widths.get("mean") or 0, heights.get("mean") or 0)
    n = stats.get("num_images", 0)

    def put(field: str, value: Any, reason: str) -> None:
        if field not in given:
            out[field] = value
            why.append(reason)

    if short and short <= 72:
        size = max(8, int(round(short)))
        put("model", "small_cnn", f"model small_cnn: images are small (~{size}px), where a compact CNN trained from scratch beats resized ImageNet models")
        put("image_size", size, f"image_size {size}: the images' own resolution, no upscaling")
        put("strategy", "scratch", "strategy scratch: small_cnn has no pretrained weights")
    else:
        size = 224 if gpu else 128
        put("model", "tf_efficientnet_lite0", "model tf_efficientnet_lite0: larger photos profit from ImageNet features, and its weights ship offline")
        put("pretrained", True, "pretrained: start from ImageNet weights")
        put("image_size", size, f"image_size {size}: {'the pretrained resolution' if gpu else 'a CPU-friendly resolution close to pretraining'}")
        put("strategy", "finetune_all" if gpu or n < 5000 else "finetune_last",
            "strategy finetune_all" if gpu or n < 5000 else "strategy finetune_last: only the last stage and head train, which keeps CPU epochs short")
        put("lr", 1e-3, "lr 0.001: gentle enough not to wreck pretrained features")
    epochs = 30 if n < 5000 else 15 if n < 50000 else 8
    put("epochs", epochs, f"epochs {epochs} for {n:,} images")
    put("patience", 5, "patience 5: stop when val stops improving for 5 epochs")
    mode, reason = recommend(stats)
    put("imbalance", mode, f"imbalance {mode}: {reason}")
    return out, why

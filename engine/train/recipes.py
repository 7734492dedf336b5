"""Presets and dataset-aware defaults: what `train --dataset X` alone should do, and why.

Each rule returns the fields it sets and one sentence the CLI and the Train page show, so a user can
see (and override) every choice the defaults made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The fast small-image recipe: measured on the project's 2-core CPU (bench/RESULTS.md), about 92% test
# accuracy on builtin:fashion-mnist after 3 epochs; the time budget is a guard that it ends within 2 minutes.
SMALL_QUICK: dict[str, Any] = {
    "model": "small_cnn",
    "epochs": 3,
    "batch_size": 256,
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "scheduler": "onecycle",
    "hflip": True,
    "dropout": 0.1,
    "time_budget_s": 115.0,
    "strategy": "scratch",
}
DEMO_DATASET = "builtin:fashion-mnist"
PRESETS: dict[str, dict[str, Any]] = {
    # The Fashion-MNIST demo: a useful model on a real dataset in about a minute on a laptop CPU.
    "demo": {"dataset": DEMO_DATASET, "image_size": 28, **SMALL_QUICK},
}
QUICK = "quick"  # not a fixed set of fields: a small, fast recipe for the dataset it is given (`quick_recipe`)
QUICK_MAX_TRAIN = 60_000  # quick trains on at most this many images (Fashion-MNIST's whole training split)
QUICK_PROBE_TRAIN = 5_000  # ... and a linear probe on larger photos on at most this many (features take longest)
PRESET_NAMES = (QUICK, *PRESETS)
# The small-image recipe (images up to 72 px, trained from scratch), after the fast CIFAR-10 recipes
# (airbench, Myrtle's ResNet-9): random translation by 1/16 of the side (2 px at 32 px), label smoothing
# 0.1, and test-time flip wherever the horizontal flip is a training augmentation (bench/RESULTS.md).
SMALL_TRANSLATE = 0.0625
SMALL_LABEL_SMOOTHING = 0.1
RESNET_MIN_SIDE = 24  # below this small_resnet's three 2x2 poolings leave a 2x2 map or less (Grad-CAM 4 cells)


def quick_recipe(stats: dict, gpu: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A small, fast recipe for the dataset `stats` describe (from `quick_stats`), with one reason per choice.

    Small images (short side up to 72 px): the compact CNN from scratch at the images' own size (at most
    64 px), 3 epochs of the fast one-cycle recipe under a 2-minute time budget (on Fashion-MNIST this is
    exactly the demo preset). Larger photos: frozen ImageNet features of efficientnet-lite0 (shipped
    offline) computed once, and a linear head trained on them. Big training splits are limited."""
    images = stats.get("images", {})
    short = min((images.get("width") or {}).get("mean") or 0, (images.get("height") or {}).get("mean") or 0)
    n_train = ((stats.get("splits") or {}).get("train") or {}).get("num_images") or stats.get("num_images", 0)
    if short and short <= 72:
        size = max(8, min(64, int(round(short))))
        out = {**SMALL_QUICK, "image_size": size}
        why = [
            f"quick recipe: small_cnn from scratch at the images' own size ({size} px), 3 epochs of one-cycle "
            "AdamW, at most 2 minutes of training"
        ]
        limit = QUICK_MAX_TRAIN
    else:
        size = 224 if gpu else 128
        out = {
            "model": "tf_efficientnet_lite0",
            "pretrained": True,
            "strategy": "linear_probe",
            "image_size": size,
            "epochs": 10,
            "batch_size": 256,
            "optimizer": "adamw",
            "lr": 3e-3,
            "weight_decay": 1e-4,
            "scheduler": "cosine",
        }
        why = [
            f"quick recipe: frozen ImageNet features of tf_efficientnet_lite0 at {size} px, computed once, and a "
            "linear head trained on them for 10 epochs (seconds)"
        ]
        limit = QUICK_PROBE_TRAIN
    if n_train > limit:
        out["train_limit"] = limit
        why.append(f"train_limit {limit:,}: a stratified subset of the {n_train:,} training images keeps it quick")
    return out, why


def apply_preset(name: str, stats: dict | None = None, gpu: bool = False) -> dict[str, Any]:
    """The fields preset `name` sets: `quick` for the dataset `stats` describe (the demo's dataset when
    none is given), or a fixed preset of `PRESETS` ('demo': Fashion-MNIST)."""
    from engine.config import ConfigError

    if name == QUICK:
        if stats is None:
            from engine.data import quick_stats

            stats = quick_stats(DEMO_DATASET)
        return quick_recipe(stats, gpu)[0]
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}'; available: {', '.join(PRESET_NAMES)}.")
    return dict(PRESETS[name])


def suggest(
    stats: dict, given: set[str], gpu: bool, values: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Fields that suit the dataset described by `stats` (from `quick_stats`), except those in `given`.

    What the user gave always wins, and the other choices follow it: `values` holds the given fields' values
    (the model and whether it is pretrained decide the image size, strategy and learning rate suggested
    around them), and every reason names the model actually used, so `--model resnet18 --pretrained` on small
    images never reads "small_cnn has no pretrained weights"."""
    from engine.models.factory import BUILTIN_MODELS
    from engine.train.imbalance import recommend

    values = {k: v for k, v in (values or {}).items() if k in given}
    out: dict[str, Any] = {}
    why: list[str] = []
    widths = stats.get("images", {}).get("width", {})
    heights = stats.get("images", {}).get("height", {})
    short = min(widths.get("mean") or 0, heights.get("mean") or 0)
    n = stats.get("num_images", 0)
    small = bool(short and short <= 72)

    def put(field: str, value: Any, reason: str) -> None:
        if field not in given:
            out[field] = value
            why.append(reason)

    if small and short >= RESNET_MIN_SIDE:
        put(
            "model",
            "small_resnet",
            f"model small_resnet: images are small (~{max(8, int(round(short)))}px), where a compact residual CNN "
            "trained from scratch beats resized ImageNet models",
        )
    elif small:
        put(
            "model",
            "small_cnn",
            f"model small_cnn: images are tiny (~{max(8, int(round(short)))}px), too small for small_resnet's three "
            "poolings, and a compact CNN trained from scratch beats resized ImageNet models",
        )
    else:
        put(
            "model",
            "tf_efficientnet_lite0",
            "model tf_efficientnet_lite0: larger photos profit from ImageNet features, and its weights ship offline",
        )
    model = values.get("model", out.get("model"))
    if model in BUILTIN_MODELS:  # a built-in network: trained from scratch at the images' own size
        if small:
            size = max(8, int(round(short)))
            put("image_size", size, f"image_size {size}: the images' own resolution, no upscaling")
        if not values.get("pretrained") and not values.get("weights_file"):
            put("strategy", "scratch", f"strategy scratch: {model} has no pretrained weights")
    else:
        put("pretrained", True, f"pretrained: start {model} from ImageNet weights")
        pretrained = values.get("pretrained", out.get("pretrained")) or bool(values.get("weights_file"))
        size = 224 if gpu else 128
        put(
            "image_size",
            size,
            f"image_size {size}: {'the pretrained resolution' if gpu else 'a CPU-friendly resolution close to pretraining'}"
            + (f" ({model} needs more than the images' ~{int(round(short))}px)" if small else ""),
        )
        if pretrained:
            put(
                "strategy",
                "finetune_all" if gpu or n < 5000 else "finetune_last",
                f"strategy finetune_all: all of pretrained {model} trains"
                if gpu or n < 5000
                else f"strategy finetune_last: only the last stage and head of {model} train, which keeps CPU epochs "
                "short",
            )
            put("lr", 1e-3, f"lr 0.001: gentle enough not to wreck {model}'s pretrained features")
        else:
            put("strategy", "scratch", f"strategy scratch: {model} starts from random weights (not pretrained)")
    if small:
        _small_image_recipe(stats, values, out, put)
    epochs = 30 if n < 5000 else 15 if n < 50000 else 8
    put("epochs", epochs, f"epochs {epochs} for {n:,} images")
    put("patience", 5, "patience 5: stop when val stops improving for 5 epochs")
    mode, reason = recommend(stats)
    put("imbalance", mode, f"imbalance {mode}: {reason}")
    return out, why


def _small_image_recipe(
    stats: dict, values: dict[str, Any], out: dict[str, Any], put: Callable[[str, Any, str], None]
) -> None:
    """The augmentation and loss of the small-image recipe, for whichever model trains on small images:
    random translation, label smoothing (single-label tasks: multi-label losses take none), and test-time
    flip when the horizontal flip trains (it teaches the model that a mirror image is the same thing) and
    the strategy scores whole images (a linear probe scores cached features of unflipped images)."""
    from engine.config import RunConfig
    from engine.train.augment import max_shift

    shift = max_shift(RunConfig(translate=SMALL_TRANSLATE), values.get("image_size") or out.get("image_size") or 32)
    put(
        "translate",
        SMALL_TRANSLATE,
        f"translate {SMALL_TRANSLATE}: random shifts of up to {shift} px (1/16 of the side), the fast small-image "
        "recipes' random crop with padding",
    )
    if stats.get("task") != "multilabel":
        put(
            "label_smoothing",
            SMALL_LABEL_SMOOTHING,
            f"label_smoothing {SMALL_LABEL_SMOOTHING}: keeps a net trained from scratch from growing over-confident",
        )
    hflip = values.get("hflip", True)
    strategy = values.get("strategy", out.get("strategy"))
    if hflip and strategy != "linear_probe":
        put(
            "tta_hflip",
            True,
            "tta_hflip: predictions average each image and its mirror image, as the horizontal flip is a training "
            "augmentation",
        )

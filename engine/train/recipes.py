"""Presets and dataset-aware defaults: what `train --dataset X` alone should do, and why.

Each rule returns the fields it sets and one sentence the CLI and the Train page show, so a user can
see (and override) every choice the defaults made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.train.timing import Throughput

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

# Time-aware defaults (issue 16): with no --epochs, the epochs are planned to fill a time budget on this device,
# from a timed probe of the chosen model (engine.train.timing). The budget is also the run's stop guard.
DEFAULT_BUDGET_S = {"cpu": 600.0, "gpu": 300.0}  # about 10 minutes on a CPU; a GPU does the same work far faster
#: the share of the budget the epochs are planned to: a run on a shared machine can be slower than its probe
#: (a 53-epoch plan on fashion-binary ran 40% slower than probed, and the guard ended it before its schedule
#: annealed); the guard itself stays at the whole budget
PLAN_SHARE = 0.85
FINETUNE_MAX_EPOCHS = 5  # the head-first recipe's fine-tune is short: the head is already trained
MIN_EPOCHS, MAX_EPOCHS = 1, 100  # a budget far beyond the data's needs still stops at MAX
# (config, quick_stats) -> the model's measured speed, or None: not measured yet (the Train page times it in the
# background and plans again once it has)
Measure = Callable[["RunConfig", dict], "Throughput | None"]


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


#: the offline ImageNet models for larger photos, largest first, with their pretrained resolution
TRANSFER_SIZES = {"tf_efficientnet_lite2": 260, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite0": 224}
#: their feature-extraction speed (images/s at that resolution, bf16 + channels_last) on the project's 2-core
#: CPU, rounded down from the CPU time of one thread x 2 (bench/RESULTS.md: 50, 38 and 22 img/s per thread)
CPU_FEATURE_IMG_S = {"tf_efficientnet_lite2": 35.0, "tf_efficientnet_lite1": 60.0, "tf_efficientnet_lite0": 80.0}
#: the time budget planned for when none is given (seconds): what a user waits for a first model on a CPU
TRANSFER_BUDGET_S = 600.0
#: the share of the budget the features may take (the decode before them and the head after them take the rest)
FEATURE_SHARE = 0.6


def transfer_model(n_images: int, budget_s: float, gpu: bool) -> tuple[str, str]:
    """The largest offline EfficientNet-Lite whose features for all `n_images` fit the budget, and why.

    Why by budget: the features are computed once over every image (train, val and test), so their time is
    the run's time; lite2 at 260 px gives better features than lite0 at 224 px but costs ~2x per image.
    On a GPU every one of them takes seconds, so the largest is chosen."""
    if gpu:
        return "tf_efficientnet_lite2", (
            "model tf_efficientnet_lite2: the largest offline ImageNet model; its features take seconds on a GPU"
        )
    budget = budget_s or TRANSFER_BUDGET_S
    for name in TRANSFER_SIZES:
        seconds = n_images / CPU_FEATURE_IMG_S[name]
        if seconds <= FEATURE_SHARE * budget or name == "tf_efficientnet_lite0":
            return name, (
                f"model {name}: the largest offline ImageNet model whose features for {n_images:,} images take "
                f"at most {FEATURE_SHARE:.0%} of the {budget / 60:.0f}-minute budget on this CPU (about "
                f"{max(1, round(seconds / 60))} min at {TRANSFER_SIZES[name]} px)"
            )
    raise AssertionError("unreachable: lite0 is always chosen last")


def transfer_head(model: str) -> list[tuple[str, Any, str]]:
    """The frozen-features recipe for larger photos: (field, value, reason) for each choice.

    Why: fine-tuning the last stage at 128 px on a CPU overfits within a few epochs (issue 16: train loss
    0.05 vs val 1.04 on dog breeds) and ends below the untrained ImageNet model; a practitioner on a CPU
    computes the features once at the pretrained resolution (cached) and trains a regularised head on them
    in seconds per epoch (bench/RESULTS.md, imagenette)."""
    return [
        (
            "strategy",
            "linear_probe",
            f"strategy linear_probe: {model}'s frozen features computed once (cached) and only a head trains "
            "on them, seconds per epoch on a CPU, where fine-tuning overfits",
        ),
        ("head", "mlp", "head mlp: one hidden layer (512) over the features"),
        ("dropout", 0.3, "dropout 0.3 on the features: the head must not lean on a few of them"),
        (
            "weight_decay",
            0.05,
            "weight_decay 0.05: keeps the head's weights small (it overfits the features otherwise)",
        ),
        ("label_smoothing", 0.1, "label_smoothing 0.1: no over-confident answers on the training features"),
        ("lr", 1e-3, "lr 0.001: a steady rate for a head on fixed features"),
        ("scheduler", "cosine", "scheduler cosine: the head settles at the end of its epochs"),
    ]


def suggest(
    stats: dict, given: set[str], gpu: bool, values: dict[str, Any] | None = None, measure: Measure | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Fields that suit the dataset described by `stats` (from `quick_stats`), except those in `given`.

    Epochs not given are planned to a time budget (`plan_epochs`): the given `time_budget_s`, else
    DEFAULT_BUDGET_S for the device, which is then set as the run's guard. `measure` times the chosen model
    (default: `measure_throughput` in this process, cached); the Train page passes its own.

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
        budget = float(values.get("time_budget_s") or 0.0)
        name, reason = transfer_model(n, budget, gpu)
        put("model", name, reason)
    model = values.get("model", out.get("model"))
    if model in BUILTIN_MODELS:  # a built-in network: trained from scratch at the images' own size
        if small:
            size = max(8, int(round(short)))
            put("image_size", size, f"image_size {size}: the images' own resolution, no upscaling")
        if not values.get("pretrained") and not values.get("weights_file"):
            put("strategy", "scratch", f"strategy scratch: {model} has no pretrained weights")
    elif not small and model in TRANSFER_SIZES and values.get("strategy", "linear_probe") == "linear_probe":
        # Larger photos with an offline EfficientNet-Lite (the default): frozen features, a regularised head.
        put("pretrained", True, f"pretrained: start {model} from ImageNet weights")
        if values.get("pretrained", True) or values.get("weights_file"):
            size = TRANSFER_SIZES[model]
            put(
                "image_size",
                size,
                f"image_size {size}: {model}'s pretrained resolution, where its frozen features are best",
            )
            for field, value, reason in transfer_head(model):
                put(field, value, reason)
        else:
            put("strategy", "scratch", f"strategy scratch: {model} starts from random weights (not pretrained)")
    else:  # a pretrained model the user chose, or small images: fine-tune it
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
    mode, reason = recommend(stats)
    put("imbalance", mode, f"imbalance {mode}: {reason}")
    budget = float(values["time_budget_s"]) if "time_budget_s" in given else DEFAULT_BUDGET_S["gpu" if gpu else "cpu"]
    if "epochs" not in given:  # after every other choice: the plan times the model, size and epoch length chosen
        epochs, reason, budgeted = _budget_epochs(stats, {**values, **out}, budget, measure)
        put("epochs", epochs, reason)
        if budgeted:
            put(
                "patience",
                0,
                "patience 0: the epochs fill the time budget and the schedule anneals over them; stopping early "
                "would end the run at a high learning rate (the best epoch's model is kept)",
            )
            put(
                "time_budget_s",
                budget,
                f"time_budget_s {budget:g}: the budget the epochs were planned to, also a guard that ends the run "
                "there (--time-budget-s, or the Train form's time budget, changes it)",
            )
    if "patience" not in out:  # the size rule's epochs (or the user's): early stopping as before
        put("patience", 5, "patience 5: stop when val stops improving for 5 epochs")
    chosen = {**values, **out}
    # the head-first recipe, when the defaults chose the probe (a user who asks for a linear probe gets one)
    if out.get("strategy") == "linear_probe" and model in TRANSFER_SIZES and budget and chosen.get("pretrained"):
        epochs, reason = plan_finetune(stats, chosen, budget, measure)
        put("finetune_epochs", epochs, reason)
        if epochs:
            put(
                "time_budget_s",
                budget,
                f"time_budget_s {budget:g}: the features, the head and the fine-tune together, also a guard that ends "
                "the fine-tune there (--time-budget-s, or the Train form's time budget, changes it)",
            )
    return out, why


def plan_finetune(stats: dict, values: dict[str, Any], budget_s: float, measure: Measure | None) -> tuple[int, str]:
    """(epochs, reason) of the head-first recipe's fine-tune (`engine.train.head_first`): as many epochs of the
    last stage, at most FINETUNE_MAX_EPOCHS, as fit in what the features and the head leave of `budget_s`
    ("time permitting"); 0 when not even one does.

    One timed probe of the fine-tune's configuration gives both figures: its evaluation speed is the feature
    extraction's (the same forward pass), its training speed the fine-tune's."""
    from engine.config import RunConfig
    from engine.errors import LoupeError
    from engine.train.timing import duration, estimate_run

    try:
        probe_cfg = RunConfig(**{**values, "finetune_epochs": 0, "epochs": 1, "time_budget_s": 0.0}).validate()
        ft_cfg = probe_cfg.replace(strategy="finetune_last")
        throughput = measure(ft_cfg, stats) if measure is not None else None
        if measure is not None and throughput is None:
            return 0, "finetune_epochs 0 for now: the fine-tune is being timed on this device, then planned"
        ft = estimate_run(ft_cfg, stats, throughput)
        head = estimate_run(probe_cfg, stats, ft.throughput)
    except (LoupeError, RuntimeError, TypeError, ValueError) as e:  # a model that cannot be timed here
        return 0, f"finetune_epochs 0: the fine-tune could not be timed ({str(e).rstrip('.')})"
    where = "this CPU" if ft.on_cpu else "this GPU"
    left = budget_s - 1.1 * head.total_seconds  # the head's own epochs: a tenth of the features' time at most
    per_epoch = ft.seconds_per_epoch
    final = ft.final_images / ft.throughput.eval_img_per_s
    epochs = min(FINETUNE_MAX_EPOCHS, int((left - final) / per_epoch)) if per_epoch > 0 and left > final else 0
    if epochs < 1:
        return 0, (
            f"finetune_epochs 0: the features and the head take about {duration(head.total_seconds)} on {where}, and "
            f"one epoch of fine-tuning the last stage about {duration(per_epoch)} more, past the time budget "
            f"({duration(budget_s)}): the head alone"
        )
    return epochs, (
        f"finetune_epochs {epochs}: then the last stage fine-tunes from the trained head, {epochs} epoch"
        f"{'' if epochs == 1 else 's'} of about {duration(per_epoch)} on {where}, in what the features and the head "
        f"(about {duration(head.total_seconds)}) leave of the time budget ({duration(budget_s)})"
    )


def fixed_epochs(num_images: int) -> int:
    """The epochs from the dataset's size alone: the defaults before issue 16, and still the plan when there
    is no time budget or the speed cannot be measured. bench/bench_recipes.py compares against it."""
    return 30 if num_images < 5000 else 15 if num_images < 50000 else 8


def _budget_epochs(
    stats: dict, values: dict[str, Any], budget_s: float, measure: Measure | None
) -> tuple[int, str, bool]:
    """(epochs, reason, whether the budget applies): `plan_epochs` for the config `values` describe, or the
    size rule where no plan can be made (no budget, a linear probe, a model that cannot be timed), or for now
    (`measure` returned None: the model is being timed; the budget already guards the run)."""
    from engine.config import RunConfig
    from engine.errors import LoupeError

    n = stats.get("num_images", 0)
    fixed = fixed_epochs(n)
    if not budget_s:
        return fixed, f"epochs {fixed} for {n:,} images (no time budget to plan to)", False
    try:
        cfg = RunConfig(**values).validate()  # a bad value is refused by the config check later, not planned to
        if cfg.strategy == "linear_probe":
            return fixed, f"epochs {fixed} of the head on features computed once (seconds each)", False
        if measure is None:
            return (*plan_epochs(cfg, stats, budget_s), True)
        throughput = measure(cfg, stats)
        if throughput is None:
            return (
                fixed,
                f"epochs {fixed} for {n:,} images for now: {cfg.model} is being timed on this device, then the "
                "epochs are planned to the time budget",
                True,
            )
        return (*plan_epochs(cfg, stats, budget_s, throughput), True)
    except (LoupeError, RuntimeError, TypeError, ValueError) as e:  # a model that cannot be timed here
        return fixed, f"epochs {fixed} for {n:,} images (the timing probe failed: {str(e).rstrip('.')})", False


def plan_epochs(cfg: RunConfig, stats: dict, budget_s: float, throughput: Throughput | None = None) -> tuple[int, str]:
    """(epochs, reason): as many epochs of `cfg` on the data `stats` describe as fit in `budget_s` seconds on
    this device, between MIN_EPOCHS and MAX_EPOCHS.

    The time per epoch is the training pass plus the validation pass after it, from `throughput` (a timed
    probe of this model, size, batch and device, cached: `engine.train.timing.measure_throughput` when not
    given); the final predictions on val and test come off the budget first (`Estimate.epochs_within`). The
    one-cycle or cosine schedule spans the epochs planned, so a plan that fills the budget also anneals."""
    from dataclasses import replace

    from engine.train.timing import duration, estimate_run

    est = estimate_run(replace(cfg, epochs=1, time_budget_s=0.0), stats, throughput)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, est.epochs_within(PLAN_SHARE * budget_s)))
    total = est.folds * (epochs * est.seconds_per_epoch + est.final_images / est.throughput.eval_img_per_s)
    where = "this CPU" if est.on_cpu else "this GPU"
    per_epoch = f"about {duration(est.seconds_per_epoch)} per epoch, measured by a probe"
    one = epochs == 1
    n_epochs = f"{epochs} epoch{'' if one else 's'}"
    if total > budget_s:
        return epochs, (
            f"epochs {epochs}: {n_epochs} {'takes' if one else 'take'} about {duration(total)} on {where} ({per_epoch}), more than the "
            f"time budget ({duration(budget_s)}), which ends the run part-way"
        )
    if epochs == MAX_EPOCHS and total < 0.8 * budget_s:
        return epochs, (
            f"epochs {epochs}: the most the defaults plan; {n_epochs} fit in about {duration(total)} on "
            f"{where} ({per_epoch}), inside the time budget ({duration(budget_s)})"
        )
    return epochs, (
        f"epochs {epochs}: {n_epochs} {'fits' if one else 'fit'} in about {duration(total)} on {where} ({per_epoch}; "
        f"{PLAN_SHARE:.0%} of the time budget of {duration(budget_s)}, the rest a margin for a run slower than its probe)"
    )


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

"""The Train page's form: one widget per `RunConfig` field, laid out from the field metadata.

Widgets follow the metadata: bool -> checkbox, choices -> selectbox, number -> number_input within
lo/hi, str -> text input; `model` is a selectbox of `CURATED` plus a free timm name, `dataset`
follows the active dataset, and each augmentation op is a toggle with its strength, previewed on
real training images. One expander per group, with the group's one-line explanation. What the
widgets hold, and how they are prefilled, lives in `app/train/values.py`.
"""

from __future__ import annotations

from dataclasses import Field

import numpy as np
import streamlit as st

from app.common import state
from app.common.images import for_display
from app.common.loaders import load_dataset
from app.common.sidebar import compute_device
from app.train import lr_finder
from app.train.values import (
    AUG_ON,
    DEMO,
    FIELDS,
    K_MODEL_OTHER,
    K_MODEL_PICK,
    K_REASONS,
    OTHER_MODEL,
    dataset_changed,
    field_type,
    gpu_count,
    mark_edited,
    on_key,
    read_values,
    reset,
    save_widgets,
    set_field,
    use_demo,
    use_quick,
    wkey,
)
from engine.config import GROUPS, RunConfig, field_groups, monitors_for
from engine.errors import LoupeError
from engine.models.factory import CURATED

K_PREVIEW_SEED = "train.preview_seed"
TITLES = {
    "data": "Data",
    "model": "Model",
    "imbalance": "Imbalance",
    "augment": "Augmentation",
    "optim": "Optimisation",
    "stopping": "Stopping",
    "compute": "Compute",
}
ICONS = {
    "data": ":material/dataset:",
    "model": ":material/neurology:",
    "imbalance": ":material/balance:",
    "augment": ":material/auto_fix_high:",
    "optim": ":material/tune:",
    "stopping": ":material/timer:",
    "compute": ":material/memory:",
}
OPEN = ("data", "model", "imbalance", "augment")  # groups expanded at first
LABELS = {
    "image_size": "Image size (px)",
    "val_fraction": "Validation share",
    "test_fraction": "Test share",
    "train_limit": "Training images (0: all)",
    "positive_class": "Positive class index",
    "weights_file": "Weights file",
    "allow_scratch": "Allow scratch",
    "lr": "Learning rate",
    "warmup_epochs": "Warm-up epochs",
    "step_epochs": "Step: epochs per decay",
    "step_gamma": "Step: decay factor",
    "grad_clip": "Gradient clipping",
    "batch_size": "Batch size",
    "time_budget_s": "Time budget (s)",
    "kfold": "K-fold folds",
    "channels_last": "channels_last",
    "hflip": "Horizontal flip",
    "rotation": "Rotation (max °)",
    "crop_scale": "Random crop",
    "color_jitter": "Colour jitter",
    "grayscale_p": "Grayscale",
    "translate": "Translation",
    "tta_hflip": "Test-time flip",
    "focal_gamma": "Focal gamma",
    "class_weights": "Class weights",
    "name": "Run name",
    "compile": "torch.compile",
    "nproc": "DDP processes",
    "sync_bn": "Sync batch norm",
    "max_memory_gb": "Memory budget (GB, 0: auto)",
    "pseudo_label": "Pseudo-label confidence (0: off)",
    "finetune_epochs": "Then fine-tune (epochs)",
    "ema_decay": "EMA decay (0: off)",
}
STEPS = {
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "momentum": 0.01,
    "warmup_epochs": 0.5,
    "time_budget_s": 10.0,
    "grad_clip": 0.5,
    "focal_gamma": 0.5,
    "rotation": 1.0,
    "train_limit": 100,
    "batch_size": 16,
    "pseudo_label": 0.05,
    "translate": 0.03125,  # 1 px at 32 px
    "ema_decay": 0.001,
}
# Fields that only matter for some other choices: shown disabled otherwise (their values are kept).
RELEVANT = {
    "momentum": lambda v: v.get("optimizer") == "sgd",
    "nesterov": lambda v: v.get("optimizer") == "sgd",
    "step_epochs": lambda v: v.get("scheduler") == "step",
    "step_gamma": lambda v: v.get("scheduler") == "step",
    "warmup_epochs": lambda v: v.get("scheduler") in ("cosine", "step"),
    "focal_gamma": lambda v: v.get("loss") == "focal",
    "class_weights": lambda v: v.get("imbalance") == "weighted_loss",
    "sync_bn": lambda v: v.get("nproc", 1) > 1,
    "finetune_epochs": lambda v: v.get("strategy") == "linear_probe",
}
PREVIEW_IMAGES, PREVIEW_VARIANTS, PREVIEW_PX = 4, 4, 52


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def control(name: str) -> str:
    """Where a config field is set on the Train page, for other pages' advice: '**K-fold folds** (under
    Stopping)'. A page names its own control, not the command line's flag or the config's field name."""
    return f"**{label(name)}** (under {TITLES[FIELDS[name].metadata['group']]})"


# --- drawing -------------------------------------------------------------------------------------


def toolbar(stats: dict | None) -> None:
    """The quick recipe for this dataset, the Fashion-MNIST demo, reset, and what the defaults were chosen from."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Quick recipe for this dataset",
            icon=":material/bolt:",
            key="train.preset",
            on_click=use_quick,
            args=(stats,),
            disabled=stats is None,
            help=quick_help(),
        )
        st.button(
            "Fashion-MNIST demo", icon=":material/checkroom:", key="train.demo", on_click=use_demo, help=demo_help()
        )
        st.button(
            "Reset to suggestions",
            icon=":material/restart_alt:",
            key="train.reset",
            on_click=reset,
            type="tertiary",
            help="Forget your changes: defaults plus what suits the active dataset.",
        )
    reasons = st.session_state.get(K_REASONS) or []
    if reasons:
        with st.expander(
            f"Prefilled for this dataset: {len(reasons)} choice{'s' if len(reasons) != 1 else ''} and why",
            icon=":material/lightbulb:",
            key="train.why",
        ):
            st.markdown("\n".join(f"- {r}" for r in reasons))


def quick_help() -> str:
    return (
        "A small, fast recipe for the dataset selected above (`train --preset quick --dataset D`): small images "
        "train the compact CNN from scratch at their own size for 3 epochs within 2 minutes; larger photos train "
        "a linear head on frozen ImageNet features. Big training splits are limited. The dataset stays."
    )


def demo_help() -> str:
    from engine.train.recipes import PRESETS

    p = PRESETS[DEMO]
    budget = f"; a time budget ends it within {p['time_budget_s']:g} s" if p.get("time_budget_s") else ""
    return (
        f"Switches the dataset to {p.get('dataset')}: {p.get('model')} at {p.get('image_size')} px, "
        f"{p.get('epochs')} epochs, a useful model in about a minute on a laptop CPU{budget} "
        f"(`train --preset {DEMO}`). Sets only these fields: " + ", ".join(f"`{k}`" for k in p)
    )


def _help(f: Field) -> str:
    meta = f.metadata
    lo, hi = meta["lo"], meta["hi"]
    bounds = ""
    if lo is not None and hi is not None:
        bounds = f" ({'>' if meta['lo_open'] else '≥'} {lo:g}, ≤ {hi:g})"
    elif lo is not None:
        bounds = f" ({'>' if meta['lo_open'] else '≥'} {lo:g})"
    return f"`{f.name}`: {meta['help']}{bounds}"


def _number(f: Field, disabled: bool) -> None:
    kind, meta = field_type(f.name), f.metadata
    lo = kind(meta["lo"]) if meta["lo"] is not None else None
    hi = kind(meta["hi"]) if meta["hi"] is not None else None
    step = kind(STEPS.get(f.name, 1 if kind is int else 0.05))
    st.number_input(
        label(f.name),
        min_value=lo,
        max_value=hi,
        step=step,
        format=None if kind is int else "%g",
        key=wkey(f.name),
        help=_help(f),
        disabled=disabled,
        on_change=mark_edited,
        args=(f.name,),
    )


def task_of(values: dict, stats: dict | None) -> str | None:
    """The task the form's run will train: the Task field, else the active dataset's."""
    task = values.get("task")
    return task if task and task != "auto" else (stats or {}).get("task")


LOSS_NAMES = {
    "multilabel": {"ce": "bce: binary cross-entropy per label", "focal": "focal (binary, per label)"},
    "single": {"ce": "ce: cross-entropy", "focal": "focal"},
}
SUBSET = {"val_accuracy": "val_subset_accuracy (exact match)"}


def choice_name(name: str, task: str | None):
    """How a field's choices read for this task: the loss named for what it is (binary cross-entropy for
    multi-label), exact-match accuracy called subset accuracy."""
    if name == "loss":
        names = LOSS_NAMES["multilabel" if task == "multilabel" else "single"]
        return lambda v: names.get(v, v)
    if name == "monitor" and task == "multilabel":
        return lambda v: SUBSET.get(v, v)
    return str


def _choices(f: Field, task: str | None = None) -> tuple:
    if f.name == "monitor":  # only what this task's validation records carry (no HTER for multi-label)
        options = monitors_for(task)
        if st.session_state.get(wkey("monitor")) not in options:
            st.session_state[wkey("monitor")] = "auto"
        return options
    if f.name == "device":  # the devices this machine has, whatever the field allows
        current = st.session_state.get(wkey("device"), "auto")
        options = ["auto", "cpu", *(f"cuda:{i}" for i in range(gpu_count()))]
        return tuple(options + ([current] if current not in options else []))
    return f.metadata["choices"]


def field_widget(f: Field, values: dict, stats: dict | None) -> None:
    """One widget for one field, chosen by its type and metadata."""
    name, kind = f.name, field_type(f.name)
    disabled = not RELEVANT[name](values) if name in RELEVANT else False
    if name == "positive_class":
        task = values.get("task") if values.get("task") != "auto" else (stats or {}).get("task")
        disabled = task != "binary"
    common = {"key": wkey(name), "help": _help(f), "on_change": mark_edited, "args": (name,), "disabled": disabled}
    if name == "model":
        model_widget(f)
    elif kind is bool:
        st.checkbox(label(name), **common)
    elif choices := _choices(f, task_of(values, stats)):
        st.selectbox(label(name), choices, format_func=choice_name(name, task_of(values, stats)), **common)
    elif kind in (int, float):
        _number(f, disabled)
    elif kind is list:
        st.text_input(label(name), placeholder="e.g. 1, 4.5 (empty: inverse class frequency)", **common)
    else:
        placeholder = {"name": "default: model and dataset", "weights_file": "/path/to/weights.safetensors"}.get(name)
        st.text_input(label(name), placeholder=placeholder, **common)


def model_widget(f: Field) -> None:
    st.selectbox(
        label("model"), [*CURATED, OTHER_MODEL], key=K_MODEL_PICK, help=_help(f), on_change=mark_edited, args=("model",)
    )
    if st.session_state.get(K_MODEL_PICK) == OTHER_MODEL:
        st.text_input(
            "timm model name",
            key=K_MODEL_OTHER,
            placeholder="e.g. regnety_002 or resnet18.a1_in1k",
            on_change=mark_edited,
            args=("model",),
        )


def dataset_widget(f: Field, spec: str, stats: dict | None, error: LoupeError | None) -> None:
    from engine.data.sources.archive import list_datasets
    from engine.data.sources.builtin import BUILTINS

    options = [f"builtin:{n}" for n in BUILTINS] + [str(p) for p in list_datasets()]
    if spec not in options:
        options.append(spec)
    st.selectbox(
        "Dataset",
        options,
        key=wkey("dataset"),
        accept_new_options=True,
        on_change=dataset_changed,
        help=_help(f) + ". Changing it here changes the active dataset, and refills the fields you have not set.",
    )
    if error is not None:
        st.error(str(error))
    elif stats is not None:
        w = (stats.get("images", {}).get("width") or {}).get("mean")
        what = "labels" if stats["task"] == "multilabel" else "classes"
        st.caption(
            f"{stats['num_images']:,} images · {len(stats['classes'])} {what} · {stats['task']}"
            + (f" · ~{w:.0f} px wide" if w else "")
        )


def _grid(items: list[Field], values: dict, stats: dict | None, ncols: int = 3) -> None:
    """Inputs in a grid, then the checkboxes in one row (mixed in, they would not line up)."""
    boxes = [f for f in items if field_type(f.name) is bool]
    inputs = [f for f in items if f not in boxes]
    cols = st.columns(ncols)
    for i, f in enumerate(inputs):
        with cols[i % ncols]:
            field_widget(f, values, stats)
    if boxes:
        with st.container(horizontal=True, gap="medium"):
            for f in boxes:
                field_widget(f, values, stats)


def imbalance_note(stats: dict | None, values: dict) -> None:
    if stats is None:
        return
    from engine.train.imbalance import recommend

    mode, reason = recommend(stats)
    chosen = values.get("imbalance")
    text = f"Suggested: **{mode}**. {reason}"
    if chosen != mode:
        text += f" (You chose **{chosen}**.)"
    st.info(text, icon=":material/balance:")


def augment_section(group_fields: list[Field], spec: str, values: dict) -> None:
    ops, rest = (
        [f for f in group_fields if f.name in AUG_ON or field_type(f.name) is bool],
        [f for f in group_fields if not (f.name in AUG_ON or field_type(f.name) is bool)],
    )
    left, right = st.columns([2, 3], gap="medium")
    with left:
        for f in ops:
            if field_type(f.name) is bool:
                st.toggle(label(f.name), key=wkey(f.name), help=_help(f), on_change=mark_edited, args=(f.name,))
                continue
            on = st.toggle(label(f.name), key=on_key(f.name), help=_help(f), on_change=mark_edited, args=(f.name,))
            meta = f.metadata
            st.slider(
                f"{label(f.name)}: strength",
                min_value=float(meta["lo"]),
                max_value=float(meta["hi"]),
                step=float(STEPS.get(f.name, 0.05)),
                format="%.4f" if f.name == "translate" else None,  # 0.0625 (2 px at 32 px) would read 0.06
                key=wkey(f.name),
                disabled=not on,
                label_visibility="collapsed",
                on_change=mark_edited,
                args=(f.name,),
            )
        _grid(rest, values, None, ncols=1)
    with right:
        augment_preview(spec, values)


def augment_preview(spec: str, values: dict) -> None:
    """A few training images and random augmentations of each, from the engine's own batch augmenter.

    Only for a dataset the user chose: on a first visit the form starts from the default dataset, and decoding
    its 70,000 images for a preview nobody asked for would hold the page up (the sidebar says none is chosen)."""
    from engine.train.augment import is_identity, preview, resized

    aug = {f.name: values[f.name] for f in field_groups()["augment"]}
    cfg = RunConfig(**aug)
    if state.chosen_dataset() is None:  # a first visit: the form starts from the default, which nobody chose
        st.caption(
            f"No preview yet: the form starts from `{spec}`, and no dataset is decoded before you choose one "
            "(in the Dataset field above, or on the Dataset page)."
        )
        st.button(
            f"Choose {spec} and preview",
            key="train.preview_choose",
            icon=":material/visibility:",
            type="tertiary",
            on_click=state.set_active_dataset,
            args=(spec,),
        )
        return
    try:
        ds = load_dataset(spec)
    except LoupeError:
        st.caption("No preview: the dataset cannot be opened (see above).")
        return
    if is_identity(cfg, ds.channels):
        st.caption(
            "All augmentations are off: the model sees the training images as they are. Switch an op on to preview it."
        )
        return
    seed = st.session_state.get(K_PREVIEW_SEED, 0)
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown("**Preview**")
        if st.button("Other images", icon=":material/shuffle:", key="train.preview_shuffle", type="tertiary"):
            seed = st.session_state[K_PREVIEW_SEED] = seed + 1
    pool = ds.splits.get("train", np.flatnonzero(ds.scan.ok))
    idx = np.sort(np.random.default_rng(seed).choice(pool, size=min(PREVIEW_IMAGES, len(pool)), replace=False))
    size = training_size(values, ds.image_size)
    originals = resized(np.asarray(ds.images[idx]), size)
    variants = preview(originals, cfg, n_variants=PREVIEW_VARIANTS, seed=seed)
    for original, row in zip(originals, variants):
        st.image([for_display(original, PREVIEW_PX)] + [for_display(v, PREVIEW_PX) for v in row], width=PREVIEW_PX)
    st.caption(
        f"Left: a training image; then {PREVIEW_VARIANTS} random draws of the ops switched on, at the working "
        f"resolution ({size} px). Training draws new ones for every batch."
    )


def training_size(values: dict, data_size: int) -> int:
    """The side the form's run trains at: the image size field, else the model's pretrained size, else
    the data's own (`data_size`, the size the dataset is open at), as `engine.train.setup.image_size_for`."""
    from engine.train.setup import image_size_for

    try:
        return (
            image_size_for(
                RunConfig(model=values.get("model") or "small_cnn", image_size=int(values.get("image_size") or 0))
            )
            or data_size
        )
    except LoupeError:
        return data_size


def _use_all_gpus(n: int) -> None:
    set_field("nproc", n)
    mark_edited("nproc")


def gpus_line() -> None:
    """What this machine has, and DDP on all of its GPUs in one click (torchrun, one process per GPU)."""
    n = gpu_count()
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"This machine: {compute_device()}; {n} GPU{'s' if n != 1 else ''} visible.")
        if n > 1:
            st.button(
                f"Use all {n} GPUs (DDP)",
                key="train.all_gpus",
                on_click=_use_all_gpus,
                args=(n,),
                icon=":material/hub:",
                help="Sets DDP processes to the number of GPUs: one process per GPU, nccl.",
            )
    if n <= 1:
        st.caption("DDP processes above 1 run torchrun on this machine: one per GPU, or gloo processes on the CPU.")


def render(spec: str, stats: dict | None, error: LoupeError | None) -> None:
    """Every field, one expander per group with the group's one-line explanation."""
    toolbar(stats)
    groups = field_groups()
    for group, group_fields in groups.items():
        values = read_values()
        with st.expander(
            TITLES.get(group, group.capitalize()),
            expanded=group in OPEN,
            icon=ICONS.get(group),
            key=f"train.group.{group}",
        ):
            st.caption(GROUPS[group])
            if group == "data":
                dataset_widget(FIELDS["dataset"], spec, stats, error)
                _grid([f for f in group_fields if f.name != "dataset"], values, stats)
            elif group == "augment":
                augment_section(group_fields, spec, values)
            else:
                if group == "imbalance":
                    imbalance_note(stats, values)
                if group == "compute":
                    gpus_line()
                _grid(group_fields, values, stats)
                if group == "optim":
                    lr_finder.section()
    save_widgets()

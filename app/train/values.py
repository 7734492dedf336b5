"""The Train form's values: which widget keys hold each `RunConfig` field, how values go in and out
of them, and how the form is prefilled (defaults, dataset-aware suggestions, the quick recipe, the demo).

- Values are prefilled from `RunConfig`'s defaults plus `recipes.suggest` for the active dataset; a
  field the user changed (or the preset set) is never overwritten by a suggestion.
- Widget state is mirrored into `train.saved`, so switching to another page and back, or a Start
  that fails validation, loses nothing the user entered.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from typing import TYPE_CHECKING, Any

import streamlit as st

from app.common import state
from engine.config import ConfigError, RunConfig
from engine.data.roots import check_allowed, check_spec
from engine.errors import LoupeError
from engine.models.factory import CURATED

if TYPE_CHECKING:
    from engine.train.timing import Throughput

FIELDS: dict[str, Field] = {f.name: f for f in fields(RunConfig)}
K_SAVED, K_EDITED, K_SYNCED, K_REASONS = "train.saved", "train.edited", "train.synced", "train.reasons"
K_MODEL_PICK, K_MODEL_OTHER = "train.model_pick", "train.model_other"
K_PLAN_PENDING, K_REPLANNED = "train.plan.pending", "train.plan.replanned"  # epochs waiting for the model's timing
OTHER_MODEL = "other timm model…"
DEMO = "demo"  # the Fashion-MNIST demo preset (the quick recipe follows the active dataset)
AUG_ON = {
    "rotation": 15.0,
    "crop_scale": 0.6,
    "color_jitter": 0.3,
    "grayscale_p": 0.2,
    "translate": 0.0625,
}  # strength when switched on


def wkey(name: str) -> str:
    return f"train.f.{name}"


def on_key(name: str) -> str:
    return f"train.on.{name}"


def default(name: str) -> Any:
    f = FIELDS[name]
    return f.default if f.default is not MISSING else f.default_factory()


def field_type(name: str) -> type:
    return type(default(name))


# --- widget state <-> field values ---------------------------------------------------------------------


def _widget_keys(name: str) -> list[str]:
    if name == "model":
        return [K_MODEL_PICK, K_MODEL_OTHER]
    return [on_key(name), wkey(name)] if name in AUG_ON else [wkey(name)]


def _all_widget_keys() -> list[str]:
    return [k for name in FIELDS for k in _widget_keys(name)]


def set_field(name: str, value: Any) -> None:
    """Show `value` in the field's widget(s); only before they are drawn in this run, or in a callback."""
    ss = st.session_state
    kind = field_type(name)
    if name == "model":
        pick = value if value in CURATED else OTHER_MODEL
        updates = {K_MODEL_PICK: pick, K_MODEL_OTHER: "" if pick != OTHER_MODEL else str(value)}
    elif name in AUG_ON:
        on = value != default(name)
        strength = float(value) if on else ss.get(wkey(name), AUG_ON[name])
        updates = {on_key(name): on, wkey(name): strength}
    elif kind is list:
        updates = {wkey(name): ", ".join(f"{float(w):g}" for w in value or [])}
    elif kind in (int, float) and not isinstance(value, bool):
        updates = {wkey(name): kind(value)}
    else:
        updates = {wkey(name): value}
    ss.update(updates)
    ss.setdefault(K_SAVED, {}).update(updates)


def _parse_weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.replace(";", ",").split(",") if w.strip()]
    except ValueError:
        raise ConfigError(
            f"Field 'class_weights' must be numbers separated by commas, one per class; got {text!r}."
        ) from None


def read_field(name: str) -> Any:
    """The field's value as the widgets show it now."""
    ss = st.session_state
    if name == "model":
        pick = ss.get(K_MODEL_PICK)
        return (ss.get(K_MODEL_OTHER) or "").strip() if pick == OTHER_MODEL else pick
    if name in AUG_ON:
        return float(ss[wkey(name)]) if ss.get(on_key(name)) else default(name)
    if field_type(name) is list:
        return _parse_weights(ss.get(wkey(name), ""))
    value = ss.get(wkey(name), default(name))
    return value.strip() if isinstance(value, str) else value


def read_values(strict: bool = False) -> dict[str, Any]:
    """Every field's current value; with `strict`, unparsable input raises `ConfigError`."""
    out = {}
    for name in FIELDS:
        try:
            out[name] = read_field(name)
        except ConfigError:
            if strict:
                raise
            out[name] = default(name)
    return out


def build_config() -> RunConfig:
    """The validated config from the form; `ConfigError` (or `ModelError`) names the field that is wrong."""
    values = read_values(strict=True)
    if not values["model"]:
        raise ConfigError("Field 'model' is empty: choose a model or type a timm architecture name.")
    cfg = RunConfig(**values).validate()
    if cfg.weights_file:
        check_allowed(cfg.weights_file)  # a typed server path, like the dataset's
    from engine.train.setup import image_size_for

    # the one config -> image size decision the job makes too: checks the model's name, then its size
    # (e.g. resnet18 at 16 px), so a bad size is refused here, not in the job
    image_size_for(cfg)
    return cfg


def mark_edited(name: str) -> None:
    edited = st.session_state.setdefault(K_EDITED, set())
    edited.add(name)
    if name == "time_budget_s" and "epochs" not in edited:
        st.session_state[K_SYNCED] = None  # the suggested epochs were planned to the budget: plan them again


# --- prefilling: defaults, dataset-aware suggestions, the preset ------------------------------------


@st.cache_resource(show_spinner=False)
def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


@st.cache_data(show_spinner="Reading the dataset's statistics…", max_entries=16)
def _quick_stats(spec: str) -> dict:
    from engine.data import quick_stats

    return quick_stats(spec)


def dataset_stats(spec: str) -> tuple[dict | None, LoupeError | None]:
    """Header-only statistics of `spec`, or the error that explains why it cannot be read."""
    try:
        check_spec(spec)  # a typed or ?dataset= path: only inside the allowed data roots (engine/data/roots.py)
        return _quick_stats(spec), None
    except LoupeError as e:
        return None, e


def _reset_untouched(keep: set[str]) -> None:
    for name in FIELDS:
        if name not in keep:
            set_field(name, default(name))


def sync(spec: str, stats: dict | None) -> None:
    """Before drawing: restore widget state lost on a page switch, and when the active dataset changed,
    refill every field the user has not set with the defaults and suggestions for the new dataset."""
    ss = st.session_state
    if K_SAVED not in ss:
        _reset_untouched(set())
    saved = ss[K_SAVED]
    for key in _all_widget_keys():
        if key not in ss and key in saved:
            ss[key] = saved[key]
    if ss.get(K_SYNCED) == spec:
        return
    ss[K_SYNCED] = spec
    edited = ss.setdefault(K_EDITED, set())
    _reset_untouched(edited | {"dataset"})
    set_field("dataset", spec)
    reasons: list[str] = []
    if stats is not None:
        chosen, reasons = suggest_for(stats, edited)
        for name, value in chosen.items():
            set_field(name, value)
    ss[K_REASONS] = reasons


def suggest_for(stats: dict, given: set[str]) -> tuple[dict, list[str]]:
    """Suggestions for the fields the user has not set; the ones they set (their values) steer the rest, as
    in the CLI: a chosen pretrained model keeps its weights and gets a size and strategy that suit it."""
    from engine.train.recipes import suggest

    values = read_values()
    st.session_state.pop(K_PLAN_PENDING, None)
    return suggest(
        stats,
        given=set(given),
        gpu=gpu_count() > 0,
        values={k: values[k] for k in given if k in values},
        measure=_cached_speed,
    )


def _cached_speed(cfg: RunConfig, stats: dict) -> Throughput | None:
    """The epochs are planned to the time budget from the chosen model's timed probe: its cached figures,
    or None while it has not been timed (the form is not held up for it): the estimate above Start then
    times it in the background and asks for the plan again (`replan_if_pending`)."""
    from engine.train.timing import cached_throughput, planned_shape

    size, channels = planned_shape(cfg, stats)
    multilabel = (cfg.task if cfg.task != "auto" else stats.get("task")) == "multilabel"
    tp = cached_throughput(cfg, size, channels, multilabel)
    if tp is None:
        st.session_state[K_PLAN_PENDING] = True
    return tp


def replan_if_pending(ident: str) -> None:
    """Once the model is timed: plan the suggested epochs again if they were waiting for it (once per
    configuration `ident`, so a plan that still finds no figures cannot loop)."""
    ss = st.session_state
    if not ss.get(K_PLAN_PENDING) or "epochs" in ss.get(K_EDITED, set()) or ss.get(K_REPLANNED) == ident:
        return
    ss[K_REPLANNED] = ident
    ss[K_SYNCED] = None
    st.rerun()


def use_quick(stats: dict | None) -> None:
    """The quick recipe for the active dataset (`engine.train.recipes.quick_recipe`); the dataset stays."""
    from engine.train.recipes import quick_recipe

    if stats is None:
        return
    values, reasons = quick_recipe(stats, gpu=gpu_count() > 0)
    _reset_untouched({"dataset"})
    for name, value in values.items():
        set_field(name, value)
    st.session_state[K_EDITED] = set(values)
    st.session_state[K_SYNCED] = state.active_dataset()  # like `train --preset quick`: the recipe, not the suggestions
    st.session_state[K_REASONS] = reasons


def use_demo() -> None:
    """The Fashion-MNIST demo (`train --preset demo`): switches the active dataset to Fashion-MNIST."""
    from engine.train.recipes import apply_preset

    values = apply_preset(DEMO)
    _reset_untouched(set())
    for name, value in values.items():
        set_field(name, value)
    st.session_state[K_EDITED] = set(values)
    spec = values["dataset"]
    st.session_state[K_SYNCED] = spec  # like `train --preset demo`: the preset, not the suggestions
    st.session_state[K_REASONS] = [
        f"the '{DEMO}' preset: a useful model on Fashion-MNIST in about a minute on a laptop CPU"
    ]
    state.set_active_dataset(spec)


def reset() -> None:
    """Back to the defaults and the suggestions for the active dataset."""
    st.session_state[K_EDITED] = set()
    st.session_state[K_SYNCED] = None
    _reset_untouched(set())


def dataset_changed() -> None:
    value = st.session_state.get(wkey("dataset"))
    if isinstance(value, str) and value.strip():
        state.set_active_dataset(value.strip())


def save_widgets() -> None:
    """Mirror the widgets into `train.saved` (widget state is dropped when another page is shown)."""
    ss = st.session_state
    ss.setdefault(K_SAVED, {}).update({k: ss[k] for k in _all_widget_keys() if k in ss})

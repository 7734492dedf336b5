"""Explain page (`/explanations`): a run's model on one image -> prediction, attribution maps side by side (with deletion-curve
faithfulness and time), an adversarial attack on that image, and an epsilon sweep over validation images.

The run lives in `?run=`, a dataset image in `?image=<dataset index>` (so other pages can link to one image).
The engine does the work (`engine.predict.run_model`, `engine.explain.attributions`, `engine.explain.attacks`); this
page reads widgets, calls it and draws. Helpers in `app/explain/`: `load` (cached loaders), `methods` (attributions),
`attack` (adversarial and robustness panels), `charts`.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app.common import run_picker
from app.common.images import for_display
from app.common.loaders import runs_with_weights
from app.common.sidebar import draw_frame
from app.explain import attack as expl_attack
from app.explain import charts, load, methods
from engine.errors import LoupeError
from engine.metrics.display import threshold
from engine.runs.folder import Run

K_SOURCE, K_INDEX, K_UPLOADER = "expl.source", "expl.index", "expl.uploader"
K_URL_SEEN = "expl._url_image"  # the ?image= value already applied (so a widget change is not overridden)
K_SPLIT, K_CLASS = "expl.browse_split", "expl.browse_class"
K_BROWSE_OPEN = "expl._browse_open"  # whether "Browse by class" starts open: decided once per session
SOURCES = {"dataset": "From the dataset", "upload": "Upload an image"}
BROWSE = 12
TOP_K = 5
NONE = "(none)"  # a multi-label image with no label decided (or none true)


# --- image -----------------------------------------------------------------------------------------------


def _sync_url_image(n: int) -> None:
    """Apply `?image=` once per new value: it selects that dataset image."""
    raw = st.query_params.get(load.IMAGE_PARAM)
    if raw is None or raw == st.session_state.get(K_URL_SEEN):
        return
    st.session_state[K_URL_SEEN] = raw
    try:
        idx = int(str(raw).strip())
    except ValueError:
        st.warning(f"`?image={raw}` is not a dataset index (a whole number).", icon=":material/warning:")
        return
    if not 0 <= idx < n:
        st.warning(f"`?image={idx}` is outside the dataset (0–{n - 1}).", icon=":material/warning:")
        return
    st.session_state[K_INDEX] = idx
    st.session_state[K_SOURCE] = "dataset"


def _choose(idx: int) -> None:
    st.session_state[K_INDEX] = int(idx)


def browse(ds, classes: list[str]) -> None:
    """Thumbnails of one class in one split; a click selects the image."""
    splits = [s for s in ("test", "val", "train") if len(ds.splits.get(s, [])) > 0]
    c1, c2 = st.columns(2)
    split = c1.selectbox("Split", splits, key=K_SPLIT)
    cls = c2.selectbox(
        "Class", [-1, *range(len(classes))], key=K_CLASS, format_func=lambda i: "all classes" if i == -1 else classes[i]
    )
    pool = np.asarray(ds.splits[split])
    labels = np.asarray(ds.labels)
    if cls != -1:
        pool = pool[(labels[pool] == cls) if labels.ndim == 1 else (labels[pool, cls] > 0)]
    shown = pool[:BROWSE]
    st.caption(f"{len(pool):,} images; the first {len(shown)} shown. Choose one below, or type any dataset index.")
    cols = st.columns(max(1, min(len(shown), 6)))
    for j, idx in enumerate(shown):
        col = cols[j % len(cols)]
        col.image(for_display(ds.thumbnail(int(idx)), 64), width=64)
        col.button(f"#{int(idx)}", key=f"expl.pick.{int(idx)}", on_click=_choose, args=(int(idx),))


def pick_image(run: Run, rm, classes: list[str]) -> load.Picked | None:
    """The image to explain (dataset or upload); keeps `?image=` in step with a dataset choice."""
    ds = load.dataset_of(run, int(rm.image_size))
    if ds is not None:
        _sync_url_image(len(ds))
    if st.session_state.get(K_SOURCE) not in SOURCES:
        st.session_state[K_SOURCE] = "dataset" if ds is not None else "upload"
    source = st.radio("Image", list(SOURCES), format_func=SOURCES.get, key=K_SOURCE, horizontal=True)
    if source == "upload":
        st.query_params.pop(load.IMAGE_PARAM, None)
        up = st.file_uploader(
            "An image file", type=["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"], key=K_UPLOADER
        )
        if up is None:
            st.caption("Upload an image: it is resized and converted the way the run's images were.")
            return None
        try:
            return load.from_upload(up.getvalue(), up.name, rm)
        except (LoupeError, OSError, ValueError) as e:
            st.error(f"`{up.name}` cannot be used: {e}", icon=":material/error:")
            return None
    if ds is None:
        return None
    # Open on a first visit without ?image=, closed when a link chose the image. Decided once: the page writes
    # ?image= itself, and an `expanded` that changed with it made the expander fold up under the user's hand
    # (the browser re-creates an expander whose arguments change).
    st.session_state.setdefault(K_BROWSE_OPEN, load.IMAGE_PARAM not in st.query_params)
    with st.expander("Browse by class", expanded=bool(st.session_state[K_BROWSE_OPEN])):
        browse(ds, classes)
    if st.session_state.get(K_INDEX) is None or not 0 <= st.session_state[K_INDEX] < len(ds):
        first = ds.splits.get("test", ds.splits.get("val"))
        st.session_state[K_INDEX] = int(first[0]) if first is not None and len(first) else 0
    idx = int(
        st.number_input(
            "Dataset index",
            0,
            len(ds) - 1,
            key=K_INDEX,
            step=1,
            help=f"Link to this image with `?{load.IMAGE_PARAM}=<index>` (the Evaluate page's "
            "galleries show dataset indices).",
        )
    )
    st.query_params[load.IMAGE_PARAM] = str(idx)
    st.session_state[K_URL_SEEN] = str(idx)
    return load.from_dataset(ds, idx, rm)


# --- the page ----------------------------------------------------------------------------------------------


def prediction(run: Run, rm, picked, classes: list[str]) -> tuple[np.ndarray, int, list[int] | None]:
    """The image, the run's decision for it (a binary run's saved threshold, a multi-label run's per-label
    thresholds, as Evaluate and Predict decide) and the top confidences; returns (probabilities, the class to
    explain first, the accepted labels of a multi-label run or None)."""
    probs = expl_attack.probs_of(rm, picked.x)
    if rm.task == "multilabel":
        return multilabel_prediction(run, rm, picked, classes, probs)
    left, right = st.columns([1, 2], vertical_alignment="center")
    rule = load.decision_rule(run, rm)
    top = load.decided(probs, rm.task, rule)
    cap = f"{picked.name}" + (f" · true: **{classes[picked.label]}**" if picked.label is not None else "")
    left.image(for_display(picked.pixels, 160), caption=picked.name, width=160)
    left.markdown(cap)
    verdict = ("· correct" if picked.label == top else "· wrong") if picked.label is not None else ""
    with left.container(border=True, key="expl.predicted"):  # not st.metric: it cuts a long class name off
        st.caption("Predicted")
        st.markdown(f"### {classes[top]}")
        st.markdown(f":gray-badge[{probs[top]:.1%} {verdict}]".strip())
    if rule[0] is not None:
        whose = (
            "the run's saved threshold"
            if load.threshold_saved(run)
            else "training's default threshold (Evaluate saves a tuned one)"
        )
        left.caption(f"Decided at {whose}: {classes[rule[1]]} when P({classes[rule[1]]}) ≥ {threshold(rule[0])}.")
    what = "confidences"
    right.plotly_chart(
        charts.top_k_bars(probs, classes, min(TOP_K, len(classes)), f"Top {min(TOP_K, len(classes))} {what}"),
        key="expl.chart.topk",
    )
    return probs, top, None


def names_of(indices: list[int], classes: list[str]) -> str:
    return ", ".join(classes[i] for i in indices) or NONE


def multilabel_prediction(
    run: Run, rm, picked, classes: list[str], probs: np.ndarray
) -> tuple[np.ndarray, int, list[int]]:
    """A multi-label image: the decided set (each label at or above its threshold), the image's true labels
    (dataset images), what was missed and what is extra, and every label's bar with its threshold."""
    ths = load.label_thresholds(run, rm)
    accepted = load.accepted_labels(probs, ths)
    left, right = st.columns([1, 2], vertical_alignment="center")
    left.image(for_display(picked.pixels, 160), caption=picked.name, width=160)
    truth = picked.truth
    with left.container(border=True, key="expl.predicted"):
        st.caption("Decided labels")
        st.markdown(f"### {names_of(accepted, classes)}")
        if truth is not None:
            missed = [i for i in truth if i not in accepted]
            extra = [i for i in accepted if i not in truth]
            verdict = "correct" if not missed and not extra else "wrong"
            st.markdown(f":gray-badge[{verdict}]")
    if truth is not None:
        left.markdown(f"True labels: **{names_of(truth, classes)}**")
        if missed or extra:
            left.caption(f"Missed: {names_of(missed, classes)} · extra: {names_of(extra, classes)}")
    else:
        left.caption("True labels: unknown (an uploaded image)")
    whose = "the run's saved thresholds" if load.threshold_saved(run) else "training's default thresholds"
    left.caption(f"Each label is accepted when its probability ≥ its threshold ({whose}).")
    rows = [
        {"class": c, "prob": float(p), "threshold": float(t), "accepted": i in accepted}
        for i, (c, p, t) in enumerate(zip(classes, probs, ths))
    ]
    k = min(max(TOP_K, len(accepted)), len(classes))
    right.plotly_chart(
        charts.label_bars(rows, k, "Label probabilities (independent) and thresholds"), key="expl.chart.topk"
    )
    first = accepted[0] if accepted else int(np.argmax(probs))
    return probs, first, accepted


def main() -> None:
    st.title("Explain")
    runs = run_picker.require_runs(
        runs_with_weights(),
        "No trained run to explain yet. Train one on the **Train** "
        "page: once it has saved weights, pick an image here to see what the model looks at "
        "and how easily it is fooled.",
    )
    run = run_picker.pick_run(runs, fallback=runs[0], needs="saved weights", key="expl")
    try:
        rm = load.run_model(run)
    except (LoupeError, OSError, ValueError, RuntimeError) as e:
        st.error(f"The model of `{run.id}` cannot be loaded: {e}", icon=":material/error:")
        return
    classes = list(rm.classes)
    picked = pick_image(run, rm, classes)
    if picked is None:
        return
    _, decided, accepted = prediction(run, rm, picked, classes)
    scope = load.scope(run, picked)  # widgets whose options depend on the image are keyed by it
    tabs = st.tabs(["Attributions", "Adversarial", "Robustness"])
    with tabs[0]:
        opts = methods.panel(run, rm, picked, classes, decided, scope=scope, accepted=accepted)
    with tabs[1]:
        expl_attack.adversarial_panel(run, rm, picked, classes, opts, scope=scope)
    with tabs[2]:
        expl_attack.robustness_panel(run, rm, classes)


draw_frame()  # the page config and the sidebar every page shares
main()

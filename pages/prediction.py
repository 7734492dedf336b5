"""Predict page (`/prediction`): a model (a trained run, or the built-in ImageNet model, which works before any training) on
uploaded images or a camera picture -> per image the top prediction, the top-k confidences, the decision, the
unsure flag (`engine.predict.unsure`: close to changing its decision), the time and an optional Grad-CAM overlay; for many images a table with a CSV download; a run can
be exported to ONNX / TorchScript.

The engine does the work (`engine.predict.predictor.Predictor`, `engine.explain.attributions`, `engine.predict.export`);
this page reads widgets, calls it and draws. Helpers in `app/predict/`: `load` (cached model and predictions), `view`
(drawing).
"""

from __future__ import annotations

import streamlit as st

from app.common import run_picker, state
from app.common.loaders import runs_with_weights
from app.common.sidebar import draw_frame, show_run
from app.predict import load, view
from engine.errors import LoupeError
from engine.metrics.display import finite, format_metric, label
from engine.predict.unsure import DEFAULT_MARGIN, RULE
from engine.runs.folder import Run, run_row

K_MODEL, K_UPLOADER, K_CAMERA, K_USE_CAMERA = "pred.model", "pred.uploader", "pred.camera", "pred.use_camera"
K_TOP_K, K_UNSURE, K_GRADCAM = "pred.top_k", "pred.unsure", "pred.gradcam"
K_LABELS, K_LABELS_OWN = "pred.labels", "pred.labels_own"  # the built-in model's label subset, a user's list
OWN_LIST = "own"
K_SEEN_RUN = "pred._active_run"  # the active run last seen (a run chosen on another page is followed)
TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
MAX_CARDS = 24  # more images than this: the table has them all, cards are drawn for the first ones


# --- model ------------------------------------------------------------------------------------------------


def _picked() -> None:
    ref = st.session_state.get(K_MODEL)
    if ref and not str(ref).startswith("builtin:"):
        state.set_active_run(ref)


def pick_model(runs: dict[str, Run]) -> str:
    """The model to predict with: the active run (or the newest) when there are runs, else the built-in one."""
    builtins = load.builtin_models()
    options = [*runs, *builtins]
    active = state.active_run()
    followed = active in runs and active != st.session_state.get(K_SEEN_RUN)  # another page chose a run
    st.session_state[K_SEEN_RUN] = active
    if followed or st.session_state.get(K_MODEL) not in options:
        st.session_state[K_MODEL] = active if active in runs else (next(iter(runs)) if runs else builtins[0])
    # Labels that never change while a run trains (no state, no best metric: those are in the caption below):
    # the browser sends the label it shows back as the value, and a label that changed in between no longer
    # names an option, so the choice silently fell back to the first run.
    labels = {
        **{r: run_picker.run_label(run) for r, run in runs.items()},
        **{b: f"{b} · built-in, pretrained (no training needed)" for b in builtins},
    }
    ref = st.selectbox(
        "Model",
        options,
        key=K_MODEL,
        format_func=lambda r: labels.get(r, r),
        on_change=_picked,
        help="Your runs with saved weights (newest first), and the built-in ImageNet classifier, which "
        "works before any training.",
    )
    if not runs:
        st.caption(
            "No trained run yet: predicting with the built-in ImageNet model. Train one on the **Train** page "
            "to predict your own classes."
        )
    return ref


def pick_labels() -> str:
    """The built-in model's label subset (`engine.predict.labels`): all 1000 classes, a named subset, or the
    user's own comma list of ImageNet class names; returns the spec ('' for all)."""
    from engine.predict.labels import ALL, NAMED

    titles = {
        ALL: "All 1,000 ImageNet classes",
        **{k: f"{title[0].upper()}{title[1:]} ({len(idx)} classes)" for k, (title, idx) in NAMED.items()},
        OWN_LIST: "Your own list of ImageNet classes…",
    }
    choice = st.selectbox(
        "Answer among",
        list(titles),
        key=K_LABELS,
        format_func=lambda k: titles.get(k, k),
        help="The built-in model knows 1,000 ImageNet classes, so a clear dog photo spreads its probability over "
        "similar breeds and unrelated things. When you know the photo shows a pet, answer among the dog and cat "
        "classes only: the probabilities are renormalised over the chosen classes (their order does not change).",
    )
    if choice != OWN_LIST:
        return "" if choice == ALL else str(choice)
    own = st.text_input(
        "ImageNet class names, separated by commas",
        key=K_LABELS_OWN,
        placeholder="beagle, golden retriever, tabby",
        help="Names as the built-in model shows them (any case). Unknown names are listed in an error.",
    )
    if not own.strip():
        st.caption("Type some class names; until then the model answers among all 1,000 classes.")
    return own.strip()


def model_caption(pred, run: Run | None = None) -> str:
    """What the model is: name, task, classes, input size, temperature; for a run also its state and best
    validation metric (written the one way, `engine.metrics.display`)."""
    classes = list(getattr(pred, "classes", []) or [])
    bits = [f"`{getattr(pred, 'name', '?')}`", str(getattr(pred, "task", "?")), f"{len(classes):,} classes"]
    if run is not None:
        try:
            row = run_row(run)
        except (OSError, ValueError, KeyError):
            row = {}
        if row.get("state"):
            bits.append(str(row["state"]))
        monitor = str(row.get("monitor") or "")
        if monitor and finite(row.get("best")):
            bits.append(f"best {label(monitor)} {format_metric(monitor, row['best'])}")
    size = getattr(pred, "image_size", None)
    if size:
        bits.append(f"input {size} px")
    temp = getattr(pred, "temperature", None)
    if isinstance(temp, (int, float)) and abs(temp - 1.0) > 1e-6:
        bits.append(f"temperature {temp:.2f}")
    return " · ".join(bits)


# --- settings and inputs ------------------------------------------------------------------------------------


def settings(pred, n_classes: int) -> dict:
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    top_k = 1
    if n_classes > 1:
        top_k = c1.slider(
            "Top-k",
            1,
            min(10, n_classes),
            min(5, n_classes),
            key=K_TOP_K,
            help="How many of the most likely classes the bar chart shows.",
        )
    if K_UNSURE not in st.session_state:
        st.session_state[K_UNSURE] = DEFAULT_MARGIN
    task = str(getattr(pred, "task", "multiclass"))
    unsure = c2.slider(
        f"Unsure margin (default {DEFAULT_MARGIN:g})",
        0.0,
        1.0,
        step=0.01,
        key=K_UNSURE,
        format="%.2f",
        help=unsure_help(task),
    )
    gradcam = c3.toggle(
        "Grad-CAM overlay",
        key=K_GRADCAM,
        help="Where the model looked for its top class (Grad-CAM, as on the Explain page).",
    )
    return {"top_k": int(top_k), "unsure_margin": float(unsure), "gradcam": bool(gradcam)}


def unsure_help(task: str) -> str:
    """The slider's help: the rule for this model's task first, then the others (`engine.predict.unsure`)."""
    order = [task, *(t for t in RULE if t != task)]
    names = {"binary": "Binary", "multiclass": "Multi-class", "multilabel": "Multi-label"}
    lines = [f"- **{names[t]}**{' (this model)' if t == task else ''}: {RULE[t]}." for t in order if t in names]
    return (
        f"A prediction is flagged *unsure* (look at it yourself) when it is close to going the other way, by "
        f"less than this margin on the probability scale. Default {DEFAULT_MARGIN:g}.\n\n"
        + "\n".join(lines)
        + "\n\nThe decision threshold is the run's saved one (Evaluate), else 0.5."
    )


def inputs() -> list[tuple[str, bytes]]:
    files = st.file_uploader(
        "Images",
        type=TYPES,
        accept_multiple_files=True,
        key=K_UPLOADER,
        help="JPEG, PNG, WebP, BMP or GIF (its first frame); one or many.",
    )
    photo = None
    if st.toggle("Take a picture with the camera", key=K_USE_CAMERA):
        photo = st.camera_input("Camera", key=K_CAMERA)
    return load.uploads(files, photo)


# --- the page -------------------------------------------------------------------------------------------------


def main() -> None:
    st.title("Predict")
    runs = {r.id: r for r in runs_with_weights()}
    ref = pick_model(runs)
    run = runs.get(ref)
    show_run(run)  # the sidebar names the model's run and its dataset (the built-in model: as they were)
    labels = pick_labels() if run is None else ""
    if labels:
        from engine.predict.labels import LabelSubsetError, resolve_labels

        try:
            resolve_labels(labels, files=False)
        except LabelSubsetError as e:
            st.error(str(e), icon=":material/error:")
            inputs()  # drawn still, so a typo in the list does not drop the uploaded images
            return
    try:
        pred = load.predictor(ref, runs, labels)
    except (LoupeError, OSError, ValueError, RuntimeError) as e:
        st.error(f"The model `{ref}` cannot be loaded: {e}", icon=":material/error:")
        return
    st.caption(model_caption(pred, run))
    ood = getattr(pred, "ood", None)
    if ood is not None:
        from engine.predict.ood import describe

        st.caption(describe(ood)[0].upper() + describe(ood)[1:] + ".")
    if run is not None:
        view.export_panel(run)
    classes = list(getattr(pred, "classes", []) or [])
    opts = settings(pred, len(classes))
    items = inputs()
    if not items:
        st.info("Upload one or more images (or take a picture) to see what the model predicts.", icon=":material/info:")
        return
    key = (*load.model_key(ref, runs), labels)
    with st.spinner(f"Predicting {len(items)} image{'s' if len(items) > 1 else ''}…"):
        results = load.predict(pred, key, items, opts["top_k"], opts["unsure_margin"])
    for r in results:
        if not r.get("ok"):
            st.error(f"`{r.get('file')}` cannot be read: {r.get('error') or 'not an image'}", icon=":material/error:")
    if len(items) >= 2:
        view.results_table(results, pred)
    cam = opts["gradcam"]
    if cam:
        try:
            load.run_model_of(pred)
        except load.NoGradCam as e:
            st.caption(str(e))
            cam = False
    data_of = dict(items)
    good = [(i, r) for i, r in enumerate(results) if r.get("ok")]
    if len(good) > MAX_CARDS:
        st.caption(f"Showing the first {MAX_CARDS} of {len(good)} images; the table above has them all.")
    task = str(getattr(pred, "task", "multiclass"))
    for i, r in good[:MAX_CARDS]:
        data = data_of.get(r["file"], b"")
        target = view.gradcam_target(r)[0]
        overlay = None
        if cam:

            def overlay(d=data, n=r["file"], t=target):
                return load.gradcam_overlay(pred, key, n, d, t)

        view.result_card(i, r, data, task, opts["unsure_margin"], overlay)


draw_frame()  # the page config and the sidebar every page shares
main()

"""Dataset page, the home page (`/`, drawn by streamlit_app.py; also `/dataset`): choose a dataset, then see its
shape, some samples and the problems found in it.

A first visit (no `?dataset=`, no earlier choice) opens nothing: it offers the built-ins with a header-only
summary, and decoding starts when the user picks one. While a dataset opens, its progress takes the place of
the previous dataset's figures, so two datasets' numbers are never on screen at once."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from app.common import state
from app.common.images import THUMB_PX, for_display
from app.common.loaders import (
    builtin_summaries,
    dataset_ready,
    forget_dataset,
    load_dataset,
    load_quality,
    load_stats,
)
from app.common.sidebar import draw_frame
from app.dataset import charts, problems, quality, queue
from app.evaluate.gallery import breakable
from engine.data import Dataset
from engine.data.roots import check_spec
from engine.data.sources.archive import data_dir, list_datasets, save_upload
from engine.data.sources.builtin import BUILTINS
from engine.errors import LoupeError
from engine.metrics.display import MISSING, number, percent
from engine.train.imbalance import recommend, suggested_class_weights

BUILTIN, PATH, UPLOAD, EARLIER = "Built-in", "Server path", "Upload .zip", "Earlier uploads"
SOURCES = (BUILTIN, PATH, UPLOAD, EARLIER)
PER_CLASS = 8  # sample thumbnails per class
MAX_GRID_CLASSES = 20  # above this, the user picks which classes to show
MAX_TABLE_ROWS = 20  # up to this many rows a table is drawn whole (text wraps); above, a scrolling grid

# widget keys, all under "dataset." so other pages' keys never collide
K_SOURCE, K_BUILTIN, K_PATH, K_UPLOAD, K_EARLIER = (
    "dataset.source",
    "dataset.builtin",
    "dataset.path",
    "dataset.upload",
    "dataset.earlier",
)
K_SYNCED, K_SAVED_UPLOAD, K_UPLOAD_ERROR = "dataset.synced", "dataset.saved_upload", "dataset.upload_error"
K_SEED = "dataset.seed"


# --- choosing the dataset ----------------------------------------------------------------------------


def _sync_widgets(spec: str | None, uploads: list[str]) -> None:
    """Make the source widgets show the active spec (none on a first visit: the built-ins are offered).

    When the spec changes (URL, state file, another widget) every widget is reset to it. Otherwise a
    value is only restored where Streamlit dropped it: a widget that was not drawn in the last run (its
    source was not the selected one) loses its state.
    """
    name = spec.removeprefix("builtin:") if spec and spec.startswith("builtin:") else None
    values = {
        K_BUILTIN: name if name in BUILTINS else None,
        K_EARLIER: spec if spec in uploads else None,
        K_PATH: "" if name is not None or spec is None else spec,
    }
    changed = st.session_state.get(K_SYNCED) != spec
    st.session_state[K_SYNCED] = spec
    for key, value in values.items():
        if changed or key not in st.session_state:
            st.session_state[key] = value
    kind = st.session_state.get(K_SOURCE)
    if spec is None:
        if kind is None:
            st.session_state[K_SOURCE] = BUILTIN
    elif name is not None and (changed or kind is None):
        st.session_state[K_SOURCE] = BUILTIN
    elif name is None and (kind is None or (changed and kind == BUILTIN)):
        st.session_state[K_SOURCE] = EARLIER if spec in uploads else PATH


def _pick(key: str, prefix: str = "") -> None:
    value = st.session_state.get(key)
    if isinstance(value, str) and value.strip():
        state.set_active_dataset(prefix + value.strip())


def _upload_widget() -> None:
    up = st.file_uploader(
        "Upload a dataset as a .zip",
        type=["zip"],
        key=K_UPLOAD,
        help="Class folders, images with a label*.txt, or a CSV of filename,labels; unpacked once and kept.",
    )
    if up is None:
        return
    failed = st.session_state.get(K_UPLOAD_ERROR)
    if failed and failed[0] == up.file_id:
        st.error(failed[1])
        return
    if st.session_state.get(K_SAVED_UPLOAD) == up.file_id:
        return
    try:
        with st.spinner(f"Saving and unpacking {up.name}…"):
            root = save_upload(up.name, up)
    except LoupeError as e:
        st.session_state[K_UPLOAD_ERROR] = (up.file_id, str(e))
        st.error(str(e))
        return
    st.session_state[K_SAVED_UPLOAD] = up.file_id
    state.set_active_dataset(str(root))
    st.rerun()


def choose_source(spec: str | None) -> None:
    uploads = [str(p) for p in list_datasets()]
    _sync_widgets(spec, uploads)
    kind = st.segmented_control("Source", SOURCES, key=K_SOURCE, required=True)
    if kind == BUILTIN:
        st.selectbox(
            "Built-in dataset",
            list(BUILTINS),
            key=K_BUILTIN,
            placeholder="Choose a built-in dataset",
            format_func=lambda n: f"{n} — {BUILTINS[n]}",
            on_change=_pick,
            args=(K_BUILTIN, "builtin:"),
        )
    elif kind == PATH:
        st.text_input(
            "Path on the server (press Enter to open)",
            key=K_PATH,
            on_change=_pick,
            args=(K_PATH,),
            placeholder="/data/cats-vs-dogs, /data/labels.csv, /data/faces.zip or /data/arrays.npz",
            help="A folder of class folders (optionally under train/ val/ test/), images with a label*.txt, "
            "a .csv of filename,labels, a .npz of images and labels, or a .zip holding one of these.",
        )
    elif kind == UPLOAD:
        _upload_widget()
    elif uploads:
        base = data_dir()
        st.selectbox(
            "Earlier upload",
            uploads,
            key=K_EARLIER,
            placeholder="Choose an earlier upload",
            format_func=lambda p: os.path.relpath(p, base),
            on_change=_pick,
            args=(K_EARLIER,),
        )
    else:
        st.info(f"No uploads yet: upload a .zip and it is kept in {data_dir()} for next time.")


# --- before anything is chosen ---------------------------------------------------------------------


def first_visit() -> None:
    """No dataset chosen yet: the built-ins with what their labels and array shapes say (no decoding)."""
    st.info(
        "Choose a dataset above: a built-in, a folder on the server, or a .zip of your own. Nothing is "
        "opened or decoded until you choose.",
        icon=":material/touch_app:",
    )
    st.subheader("Built-in datasets")
    rows = []
    for s in builtin_summaries():
        if "error" in s:
            rows.append(
                {
                    "dataset": s["name"],
                    "what it is": BUILTINS[s["name"]],
                    "images": MISSING,
                    "classes": MISSING,
                    "task": MISSING,
                    "image size": MISSING,
                    "minority share": MISSING,
                }
            )
            continue
        sizes = (s.get("images") or {}).get("sizes") or []
        rows.append(
            {
                "dataset": s["name"],
                "what it is": BUILTINS[s["name"]],
                "images": f"{s['num_images']:,}",
                "classes": f"{len(s['classes']):,}",
                "task": s["task"],
                "image size": f"{sizes[0][0]}×{sizes[0][1]} px" if len(sizes) == 1 else f"{len(sizes):,} sizes",
                "minority share": percent(s.get("minority_share")),
            }
        )
    st.table(pd.DataFrame(rows).set_index("dataset"))
    st.caption(
        "From the labels and array shapes alone. Choosing one decodes it once (cached on disk) and computes "
        "its full statistics, duplicates included."
    )


# --- opening it ------------------------------------------------------------------------------------


def show_header(spec: str) -> None:
    """Which dataset is active, and the Re-scan button for file datasets."""
    left, right = st.columns([6, 1], vertical_alignment="center")
    left.caption(f"Active dataset: `{spec}`")
    rescan = "Forget the cached copy and read the files again"
    if spec.startswith("builtin:"):
        right.empty()  # in the button's place, so another dataset's Re-scan does not linger while this one opens
    elif right.button("Re-scan", help=rescan):
        forget_dataset(spec)


def stop_with(slot, error: LoupeError) -> None:
    slot.error(str(error))
    st.stop()


def open_now(spec: str) -> None:
    """Open `spec` (decode, then statistics) with its progress in ONE element where the dataset's figures go,
    then rerun to draw them.

    Why an element there, not a container: Streamlit keeps a rerun's old elements on screen (faded) until the
    run replaces them, and a container that replaces a container keeps its children; an element in its place
    drops the previous dataset's figures at once, so only the new one's progress is on screen."""
    slot = st.empty()
    bar = slot.progress(0.0, text=f"Opening {spec}…")
    try:
        check_spec(spec)  # typed, URL and remembered paths alike: only inside the allowed data roots
        ds = load_dataset(spec, bar=bar)
        load_stats(spec, ds.fingerprint, ds.image_size, ds, bar=bar)
        load_quality(spec, ds, bar=bar)
    except LoupeError as e:
        stop_with(slot, e)
    st.rerun()


def open_active(spec: str) -> tuple[Dataset, dict]:
    """The opened dataset and its statistics (ready: `open_now` waited); on a `LoupeError` the message is
    shown and the page stops."""
    try:
        check_spec(spec)
        ds = load_dataset(spec)
        stats = load_stats(spec, ds.fingerprint, ds.image_size, ds)
    except LoupeError as e:
        stop_with(st.empty(), e)
    state.remember_dataset(spec)
    return ds, stats


# --- what it looks like ----------------------------------------------------------------------------


def show_summary(stats: dict) -> None:
    st.subheader(stats["name"])
    st.caption(
        f"{stats['kind']} · working copy {stats['image_size']}×{stats['image_size']} px, "
        f"{stats['channels']} channel{'s' if stats['channels'] != 1 else ''}"
    )
    unusable = stats["num_files"] - stats["num_images"]
    ratio, share = stats.get("imbalance_ratio"), stats.get("minority_share")
    multilabel = stats["task"] == "multilabel"
    minority = stats.get("minority_class")
    cols = st.columns([1, 0.8, 1.3, 1.1, 1.1])  # "multiclass" needs the room
    cols[0].metric(
        "Images",
        f"{stats['num_images']:,}",
        border=True,
        help=", ".join(
            part
            for part in (
                f"{stats['num_files']:,} items, {unusable:,} unusable" if unusable else "",
                f"{stats.get('unlabelled', 0):,} unlabelled, left out" if stats.get("unlabelled") else "",
            )
            if part
        )
        or None,
    )
    cols[1].metric("Labels" if multilabel else "Classes", f"{len(stats['classes']):,}", border=True)
    cols[2].metric("Task", stats["task"], border=True)
    cols[3].metric(
        "Imbalance ratio",
        f"{ratio:.1f} : 1" if ratio else MISSING,
        border=True,
        help="Images in the largest class divided by images in the smallest"
        + ("." if ratio else " (n/a: a class has no usable images)."),
    )
    what = f"the rarest {'label' if multilabel else 'class'}" + (f", '{minority}'" if minority else "")
    cols[4].metric("Minority share", percent(share), border=True, help=f"Share of the images in {what}.")
    for note in stats.get("notes", []):
        st.info(note)


def show_charts(stats: dict) -> None:
    st.subheader("Classes")
    left, right = st.columns(2)
    left.plotly_chart(charts.class_distribution(stats), key="dataset.chart.classes")
    with right:
        chart = st.container()  # the toggle sits under the chart, which needs its value first
        share = st.toggle("Share of each split instead of counts", key="dataset.split_share")
        chart.plotly_chart(charts.split_bars(stats, share=share), key="dataset.chart.splits")
    show_class_weights(stats)
    if stats.get("hierarchy"):
        show_hierarchy(stats)
    if stats.get("multilabel"):
        show_multilabel(stats)
    st.subheader("Image sizes")
    left, right = st.columns(2)
    left.plotly_chart(charts.size_scatter(stats), key="dataset.chart.sizes")
    right.plotly_chart(charts.aspect_histogram(stats), key="dataset.chart.aspect")
    st.caption(size_summary(stats.get("images", {})))


def show_hierarchy(stats: dict) -> None:
    """Two-level labels: the coarse classes with their fine members and counts (a treemap and its table)."""
    coarse = stats["hierarchy"]["coarse"]
    st.subheader("Coarse classes")
    st.caption(
        f"{len(stats['classes'])} fine classes in {len(coarse)} coarse classes. Models train on the fine classes; "
        "Evaluate reports both levels (a coarse class's probability is the sum of its fine classes')."
    )
    left, right = st.columns([3, 2], gap="large")
    left.plotly_chart(charts.hierarchy_treemap(stats), key="dataset.chart.hierarchy")
    rows = [
        {
            "coarse class": breakable(c["name"]),
            "images": f"{c['images']:,}",
            "fine classes (images)": ", ".join(f"{breakable(f)} ({n:,})" for f, n in c["members"].items()),
        }
        for c in coarse
    ]
    right.table(pd.DataFrame(rows), hide_index=True)


def _span(d: dict | None, unit: str = " px") -> str:
    if not d or d.get("min") is None:
        return MISSING
    if d["min"] == d["max"]:
        return f"{d['min']:g}{unit}"
    return f"{d['min']:g}–{d['max']:g}{unit} (mean {d['mean']:.3g})"


def show_class_weights(stats: dict) -> None:
    """The class weights training would apply with a weighted loss (the engine's own function, on the
    train split's counts), with why, and the imbalance handling the Train page will suggest."""
    weights = suggested_class_weights(stats)
    if len(weights) < 2:
        return
    multilabel = stats["task"] == "multilabel"
    train = (stats.get("splits") or {}).get("train") or stats
    counts = train.get("class_counts") or {}
    st.markdown("**Suggested class weights**" if not multilabel else "**Suggested label weights (pos_weight)**")
    table, note = st.columns([2, 3])
    rows = [
        {"label" if multilabel else "class": c, "training images": f"{counts.get(c, 0):,}", "weight": number(w, 2)}
        for c, w in weights.items()
    ]
    df = pd.DataFrame(rows)
    if len(df) <= MAX_TABLE_ROWS:
        table.table(df.set_index(df.columns[0]))
    else:
        table.dataframe(df, hide_index=True)
    n = train.get("num_images") or 0
    if multilabel:
        why = (
            f"Why: with Imbalance = weighted_loss, each label's positives are weighted by images without it / "
            f"images with it, over the train split's {n:,} images, so a rare label's few positives count as "
            "much as its many negatives."
        )
    else:
        why = (
            f"Why: with Imbalance = weighted_loss, training multiplies each image's loss by its class's weight, "
            f"train images / (classes × the class's train images) over the train split's {n:,} images, so "
            "every class counts as much in total (a balanced dataset gets 1.00 everywhere; a class without "
            "training images gets 0)."
        )
    mode, reason = recommend(stats)
    note.caption(f"{why}  \n\nThe Train page suggests **{mode}** here: {reason}")


def size_summary(images: dict) -> str:
    modes = ", ".join(f"{m} {n:,}" for m, n in (images.get("modes") or {}).items())
    formats = ", ".join(f"{f} {n:,}" for f, n in (images.get("formats") or {}).items())
    return (
        f"Width {_span(images.get('width'))} · height {_span(images.get('height'))} · "
        f"aspect {_span(images.get('aspect'), '')} · colour modes: {modes or MISSING} · "
        f"formats: {formats or MISSING}"
    )


def show_multilabel(stats: dict) -> None:
    ml = stats["multilabel"]
    st.subheader("Labels")
    cols = st.columns(4)
    card = ml.get("label_cardinality")
    cols[0].metric("Labels per image (mean)", number(card, 2), border=True)
    cols[1].metric("Images without labels", f"{ml.get('no_label_images', 0):,}", border=True)
    left, right = st.columns(2)
    left.plotly_chart(charts.cooccurrence_heatmap(stats), key="dataset.chart.cooccurrence")
    right.plotly_chart(charts.label_sets(stats), key="dataset.chart.label_sets")


@st.fragment
def show_samples(ds: Dataset) -> None:
    """A few images per class; "Shuffle samples" draws others (only this part reruns)."""
    st.subheader("Samples")
    with st.container(horizontal=True, vertical_alignment="center"):
        if st.button("Shuffle samples", icon=":material/shuffle:", key="dataset.shuffle"):
            st.session_state[K_SEED] = st.session_state.get(K_SEED, 0) + 1
        st.caption(
            f"{PER_CLASS} random images per {'label' if ds.task == 'multilabel' else 'class'} "
            f"(seed {st.session_state.get(K_SEED, 0)})"
        )
    classes = list(ds.classes)
    if len(classes) > MAX_GRID_CLASSES:
        classes = st.multiselect("Classes to show", ds.classes, default=ds.classes[:12], key="dataset.grid_classes")
    picks = ds.sample(PER_CLASS, seed=st.session_state.get(K_SEED, 0))
    multilabel = ds.task == "multilabel"
    for name in classes:
        idx = picks.get(name, [])
        label, images = st.columns([1, 7])
        label.markdown(f"**{name}**")
        if len(idx) == 0:
            images.caption("no usable images")
            continue
        captions = [", ".join(ds.label_names(int(i))) for i in idx] if multilabel else None
        images.image([for_display(ds.thumbnail(int(i))) for i in idx], caption=captions, width=THUMB_PX)
    if multilabel:
        unlabelled_row(ds)


NO_LABELS = "(no labels)"


def unlabelled_row(ds: Dataset) -> None:
    """The images without any label, in a sample row of their own (the "Images without labels" card counts them)."""
    idx = ds.sample_unlabelled(PER_CLASS, seed=st.session_state.get(K_SEED, 0))
    if len(idx) == 0:
        return
    label, images = st.columns([1, 7])
    label.markdown(f"**{NO_LABELS}**")
    images.image(
        [for_display(ds.thumbnail(int(i))) for i in idx],
        caption=[f"{NO_LABELS} · {ds.source.item_id(int(i))}" for i in idx],
        width=THUMB_PX,
    )


def main() -> None:
    st.title("Dataset")
    spec = state.chosen_dataset()
    choose_source(spec)
    if spec is None:  # the header's place stays empty, so the offer below sits where the progress will
        st.empty()
        with st.container():
            first_visit()
        return
    show_header(spec)
    if not dataset_ready(spec):
        open_now(spec)  # progress only, in place of the last dataset's figures; reruns when done
    with st.container():  # everything about the dataset, in the place the progress had
        ds, stats = open_active(spec)
        show_summary(stats)
        problems.show_summary(stats)
        show_charts(stats)
        show_samples(ds)
        problems.show_details(ds, stats)
        quality.show_quality(ds, load_quality(spec, ds))
        quality.show_embedding(spec, ds)
        queue.section(spec, ds)


if __name__ == "__main__":  # run by Streamlit at /dataset; streamlit_app.py imports main() to serve it at /
    draw_frame()  # the page config and the sidebar every page shares
    main()

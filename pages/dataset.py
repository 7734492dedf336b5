"""Dataset page, the home page (`/`, drawn by streamlit_app.py; also `/dataset`): choose a dataset, then see its
shape, some samples and the problems found in it."""

from __future__ import annotations

import os

import streamlit as st

from engine.data import Dataset
from engine.data.sources.archive import data_dir, list_datasets, save_upload
from engine.data.sources.builtin import BUILTINS
from engine.data.roots import check_spec
from engine.errors import LoupeError
from app.common import state
from app.common.images import THUMB_PX, for_display
from app.common.loaders import forget_dataset, load_dataset, load_stats
from app.common.sidebar import draw_frame
from app.dataset import charts
from app.dataset import problems

BUILTIN, PATH, UPLOAD, EARLIER = "Built-in", "Server path", "Upload .zip", "Earlier uploads"
SOURCES = (BUILTIN, PATH, UPLOAD, EARLIER)
PER_CLASS = 8  # sample thumbnails per class
MAX_GRID_CLASSES = 20  # above this, the user picks which classes to show

# widget keys, all under "dataset." so other pages' keys never collide
K_SOURCE, K_BUILTIN, K_PATH, K_UPLOAD, K_EARLIER = ("dataset.source", "dataset.builtin", "dataset.path",
                                                    "dataset.upload", "dataset.earlier")  # fmt: skip
K_SYNCED, K_SAVED_UPLOAD, K_UPLOAD_ERROR = "dataset.synced", "dataset.saved_upload", "dataset.upload_error"
K_SEED = "dataset.seed"


# --- choosing the dataset ----------------------------------------------------------------------------


def _sync_widgets(spec: str, uploads: list[str]) -> None:
    """Make the source widgets show the active spec.

    When the spec changes (URL, state file, another widget) every widget is reset to it. Otherwise a
    value is only restored where Streamlit dropped it: a widget that was not drawn in the last run (its
    source was not the selected one) loses its state.
    """
    name = spec.removeprefix("builtin:") if spec.startswith("builtin:") else None
    values = {
        K_BUILTIN: name if name in BUILTINS else None,
        K_EARLIER: spec if spec in uploads else None,
        K_PATH: "" if name is not None else spec,
    }
    changed = st.session_state.get(K_SYNCED) != spec
    st.session_state[K_SYNCED] = spec
    for key, value in values.items():
        if changed or key not in st.session_state:
            st.session_state[key] = value
    kind = st.session_state.get(K_SOURCE)
    if name is not None and (changed or kind is None):
        st.session_state[K_SOURCE] = BUILTIN
    elif name is None and (kind is None or (changed and kind == BUILTIN)):
        st.session_state[K_SOURCE] = EARLIER if spec in uploads else PATH


def _pick(key: str, prefix: str = "") -> None:
    value = st.session_state.get(key)
    if isinstance(value, str) and value.strip():
        state.set_active_dataset(prefix + value.strip())


def _upload_widget() -> None:
    up = st.file_uploader(
        "Upload a dataset as a .zip", type=["zip"], key=K_UPLOAD,
        help="Class folders, images with a label*.txt, or a CSV of filename,labels; unpacked once and kept.",
    )  # fmt: skip
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


def choose_source(spec: str) -> None:
    uploads = [str(p) for p in list_datasets()]
    _sync_widgets(spec, uploads)
    kind = st.segmented_control("Source", SOURCES, key=K_SOURCE, required=True)
    if kind == BUILTIN:
        st.selectbox(
            "Built-in dataset", list(BUILTINS), key=K_BUILTIN, placeholder="Choose a built-in dataset",
            format_func=lambda n: f"{n} — {BUILTINS[n]}", on_change=_pick, args=(K_BUILTIN, "builtin:"),
        )  # fmt: skip
    elif kind == PATH:
        st.text_input(
            "Path on the server (press Enter to open)", key=K_PATH, on_change=_pick, args=(K_PATH,),
            placeholder="/data/cats-vs-dogs, /data/labels.csv, /data/faces.zip or /data/arrays.npz",
            help="A folder of class folders (optionally under train/ val/ test/), images with a label*.txt, "
            "a .csv of filename,labels, a .npz of images and labels, or a .zip holding one of these.",
        )  # fmt: skip
    elif kind == UPLOAD:
        _upload_widget()
    elif uploads:
        base = data_dir()
        st.selectbox(
            "Earlier upload", uploads, key=K_EARLIER, placeholder="Choose an earlier upload",
            format_func=lambda p: os.path.relpath(p, base), on_change=_pick, args=(K_EARLIER,),
        )  # fmt: skip
    else:
        st.info(f"No uploads yet: upload a .zip and it is kept in {data_dir()} for next time.")


# --- opening it ------------------------------------------------------------------------------------


def open_active(spec: str) -> tuple[Dataset, dict]:
    """The opened dataset and its statistics; on a `LoupeError` the message is shown and the page stops."""
    left, right = st.columns([6, 1], vertical_alignment="center")
    left.caption(f"Active dataset: `{spec}`")
    rescan = "Forget the cached copy and read the files again"
    if not spec.startswith("builtin:") and right.button("Re-scan", help=rescan):
        forget_dataset(spec)
    try:
        check_spec(spec)  # typed, URL and remembered paths alike: only inside the allowed data roots
        ds = load_dataset(spec)
        stats = load_stats(spec, ds.fingerprint, ds.image_size, ds)
    except LoupeError as e:
        st.error(str(e))
        st.stop()
    state.remember_dataset(spec)
    return ds, stats


# --- what it looks like ----------------------------------------------------------------------------


def show_summary(stats: dict) -> None:
    st.subheader(stats["name"])
    st.caption(f"{stats['kind']} · working copy {stats['image_size']}×{stats['image_size']} px, "
               f"{stats['channels']} channel{'s' if stats['channels'] != 1 else ''}")  # fmt: skip
    unusable = stats["num_files"] - stats["num_images"]
    ratio, share = stats.get("imbalance_ratio"), stats.get("minority_share")
    multilabel = stats["task"] == "multilabel"
    cols = st.columns([1, 0.8, 1.3, 1.1, 1.1])  # "multiclass" needs the room
    cols[0].metric("Images", f"{stats['num_images']:,}", border=True,
                   help=f"{stats['num_files']:,} items, {unusable:,} unusable" if unusable else None)  # fmt: skip
    cols[1].metric("Labels" if multilabel else "Classes", str(len(stats["classes"])), border=True)
    cols[2].metric("Task", stats["task"], border=True)
    cols[3].metric("Imbalance ratio", f"{ratio:.1f} : 1" if ratio else "—", border=True,
                   help="Images in the largest class divided by images in the smallest.")  # fmt: skip
    cols[4].metric("Minority share", f"{share:.1%}" if share is not None else "—", border=True,
                   help=f"Share of the images in the smallest class ({stats.get('minority_class')}).")  # fmt: skip
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
    if stats.get("multilabel"):
        show_multilabel(stats)
    st.subheader("Image sizes")
    left, right = st.columns(2)
    left.plotly_chart(charts.size_scatter(stats), key="dataset.chart.sizes")
    right.plotly_chart(charts.aspect_histogram(stats), key="dataset.chart.aspect")
    st.caption(size_summary(stats.get("images", {})))


def _span(d: dict | None, unit: str = " px") -> str:
    if not d or d.get("min") is None:
        return "—"
    if d["min"] == d["max"]:
        return f"{d['min']:g}{unit}"
    return f"{d['min']:g}–{d['max']:g}{unit} (mean {d['mean']:.3g})"


def size_summary(images: dict) -> str:
    modes = ", ".join(f"{m} {n:,}" for m, n in (images.get("modes") or {}).items())
    formats = ", ".join(f"{f} {n:,}" for f, n in (images.get("formats") or {}).items())
    return (f"Width {_span(images.get('width'))} · height {_span(images.get('height'))} · "
            f"aspect {_span(images.get('aspect'), '')} · colour modes: {modes or '—'} · "
            f"formats: {formats or '—'}")  # fmt: skip


def show_multilabel(stats: dict) -> None:
    ml = stats["multilabel"]
    st.subheader("Labels")
    cols = st.columns(4)
    card = ml.get("label_cardinality")
    cols[0].metric("Labels per image (mean)", f"{card:.2f}" if card is not None else "—", border=True)
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
        st.caption(f"{PER_CLASS} random images per {'label' if ds.task == 'multilabel' else 'class'} "
                   f"(seed {st.session_state.get(K_SEED, 0)})")  # fmt: skip
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


def main() -> None:
    st.title("Dataset")
    spec = state.active_dataset()
    choose_source(spec)
    ds, stats = open_active(spec)
    show_summary(stats)
    problems.show_summary(stats)
    show_charts(stats)
    show_samples(ds)
    problems.show_details(ds, stats)


if __name__ == "__main__":  # run by Streamlit at /dataset; streamlit_app.py imports main() to serve it at /
    draw_frame()  # the page config and the sidebar every page shares
    main()

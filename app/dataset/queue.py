"""The Dataset page's label queue: the unlabelled pool ranked by a run, labelled with a click, undo included.

Why it reads the dataset's index (`resolve_source`, no decoding) rather than the opened `Dataset`: a label
changes the dataset's fingerprint, and re-decoding the whole dataset after every click would make labelling
crawl; the index is re-read on each rerun, so the counts here follow every click at once. The figures above
(statistics, charts) are of the dataset as it was opened, until Re-scan. Labels go through
`engine.data.labels_file` (`labels.loupe.csv` beside the dataset, append-only, written atomically); the
ranking is `engine.evaluate.queue`."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.common.images import THUMB_PX, for_display
from engine.data import Dataset
from engine.data.decode import decode
from engine.data.labels_file import in_force, labels_path, read_changes, set_label, undo_label
from engine.data.source import Source
from engine.data.sources.detect import resolve_source
from engine.errors import LoupeError
from engine.evaluate.queue import QueueItem, label_queue, queue_runs
from engine.metrics.display import number, percent
from engine.runs.folder import Run

SHOWN = 6  # queue items shown at once: label them and the next ones move up
MAX_BUTTONS = 12  # classes offered as one button each; above, a select box and a Save button
K_RUN, K_MESSAGE = "dataset.queue.run", "dataset.queue.message"


@dataclass
class QueueView:
    """What the section draws from: the resolved source and the changes in force."""

    source: Source
    labelled: int  # images labelled (or confirmed) in Loupe, changes in force


def _view(spec: str) -> QueueView:
    source = resolve_source(spec)
    path = labels_path(source)
    live = in_force(read_changes(path)) if path is not None else {}
    return QueueView(source, len(live))


def _label(spec: str, image: str, label: str | list[str]) -> None:
    """Button callback: record the label; the message says what happened (or why not)."""
    try:
        change = set_label(resolve_source(spec), image, label)
        st.session_state[K_MESSAGE] = ("success", f"Labelled {change.image} as {change.label or '(none)'}.")
    except LoupeError as e:
        st.session_state[K_MESSAGE] = ("error", str(e))


def _undo(spec: str) -> None:
    try:
        change = undo_label(resolve_source(spec))
        st.session_state[K_MESSAGE] = ("success", f"Undid the label of {change.image} ({change.label or '(none)'}).")
    except LoupeError as e:
        st.session_state[K_MESSAGE] = ("error", str(e))


def _thumb(source: Source, image: str) -> None:
    try:
        arr, _ = decode(source.root / image, size=THUMB_PX) if source.root is not None else (None, None)
    except LoupeError:
        arr = None
    if arr is None:
        st.caption("(unreadable)")
    else:
        st.image(for_display(arr), width=THUMB_PX)


def _caption(item: QueueItem) -> str:
    suggested = ", ".join(item.suggested) or "(none)"
    if item.kind == "mislabelled":
        given = ", ".join(item.given or []) or "(none)"
        return (
            f"**Likely mislabelled** · given **{given}**, the model says **{suggested}** "
            f"({percent(item.confidence)}) · `{item.id}`"
        )
    return f"Suggested **{suggested}** ({percent(item.confidence)}, margin {number(item.margin)}) · `{item.id}`"


def _controls(spec: str, source: Source, item: QueueItem) -> None:
    key = f"dataset.queue.{item.id}"
    if source.multilabel:
        chosen = st.multiselect(
            "Labels", source.classes, default=[s for s in item.suggested if s in source.classes], key=f"{key}.labels"
        )
        st.button("Save labels", key=f"{key}.save", on_click=_label, args=(spec, item.id, chosen), type="primary")
        return
    if item.kind == "mislabelled" and item.given:
        st.button(
            f"Confirm {item.given[0]}", key=f"{key}.confirm", on_click=_label, args=(spec, item.id, item.given[0])
        )
    if len(source.classes) <= MAX_BUTTONS:
        with st.container(horizontal=True):
            for j, c in enumerate(source.classes):
                st.button(
                    c,
                    key=f"{key}.{j}",
                    on_click=_label,
                    args=(spec, item.id, c),
                    type="primary" if c in item.suggested else "secondary",
                )
        return
    choice = st.selectbox("Label", source.classes, key=f"{key}.choice")
    st.button("Save", key=f"{key}.save", on_click=_label, args=(spec, item.id, choice), type="primary")


@st.cache_data(max_entries=32, show_spinner=False)
def _queue(run_path: str, spec: str, key: tuple) -> list[QueueItem]:
    """`label_queue` once per run and state of the labels file (`key`): reruns that change nothing reuse it."""
    return label_queue(Run(run_path), resolve_source(spec), n=SHOWN)


def section(spec: str, ds: Dataset) -> None:
    """The label queue, under the dataset's figures; nothing for built-ins and datasets without a pool or labels
    (decided from the opened dataset first, so those never re-read their index on a rerun)."""
    path = labels_path(ds.source)
    if spec.startswith("builtin:") or (not ds.source.pool_files and (path is None or not path.is_file())):
        return
    try:
        view = _view(spec)
    except LoupeError as e:
        st.error(str(e))
        return
    source = view.source
    if not source.pool_files and not view.labelled and not source.unlabelled:
        return
    st.subheader("Label queue")
    left, mid, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    left.metric("Unlabelled pool", f"{len(source.pool_files):,}", border=True)
    mid.metric("Labelled in Loupe", f"{view.labelled:,}", border=True)
    right.button(
        "Undo last label",
        key="dataset.queue.undo",
        on_click=_undo,
        args=(spec,),
        disabled=not view.labelled,
        icon=":material/undo:",
    )
    message = st.session_state.pop(K_MESSAGE, None)
    if message:
        (st.success if message[0] == "success" else st.error)(message[1])
    path = labels_path(source)
    st.caption(
        f"Labels you give are kept in `{path}` (every change logged, so any can be undone); the dataset's own files "
        "are never changed. Images labelled from the pool always train. The figures above follow on Re-scan."
    )
    if source.pool_files and source.root is None:
        return
    runs = queue_runs(source.spec)
    if not runs:
        st.caption(
            "Train a run on this dataset to rank the pool: the queue lists the images it is least sure of first."
        )
        return
    ids = [r.id for r in runs]
    if st.session_state.get(K_RUN) not in ids:
        st.session_state[K_RUN] = ids[0]
    run_id = st.selectbox("Ranked by run", ids, key=K_RUN, help="The newest completed run on this dataset by default.")
    try:
        stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path is not None and path.is_file() else None
        items = _queue(str(runs[ids.index(run_id)].path), spec, (stamp, source.fingerprint))
    except LoupeError as e:
        st.error(str(e))
        return
    if not items:
        st.caption("The queue is empty: every pool image is labelled and no likely mislabelled image is left.")
        return
    st.caption(
        "Most useful first: pool images the run is least sure of (smallest margin between its top two answers), "
        "taken in turn from each predicted class; then images cleanlab finds likely mislabelled (confirm or relabel)."
    )
    for item in items:
        with st.container(border=True, horizontal=True, vertical_alignment="center"):
            _thumb(source, item.id)
            with st.container():
                st.markdown(f"{item.rank}. {_caption(item)}")
                _controls(spec, source, item)

"""Streamlit helpers shared by the pages: the sidebar, the compute device and cached data loaders.

Datasets are opened once per process (`st.cache_resource`, keyed by spec: the decoded images are a
shared read-only memory map) and their statistics computed once per content (`st.cache_data`, keyed
by spec, fingerprint and working size), so reruns and other sessions get them instantly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import streamlit as st

from engine.data import Dataset, dataset_stats, open_dataset
from pages import state

Progress = Callable[[int, int, str], None]
THUMB_PX = 96  # thumbnails are shown this wide


@st.cache_resource(show_spinner=False)
def compute_device() -> str:
    """The device training will use, in words (GPU name, or CPU cores); torch is asked once per process."""
    from engine.device import describe_device

    return describe_device()


def render_sidebar() -> None:
    """Active dataset, active run and compute device, on every page."""
    spec, run = state.active_dataset(), state.active_run()
    with st.sidebar:
        st.markdown("### :material/center_focus_strong: Loupe")
        st.markdown(
            f"**Dataset**  \n`{spec}`  \n"
            f"**Run**  \n{f'`{run}`' if run else 'none yet'}  \n"
            f"**Device**  \n{compute_device()}"
        )


def _progress_bar(bar) -> Progress:
    """A progress callback for the engine that redraws `bar` at most ~100 times per stage."""
    last: list[tuple[str, int]] = []

    def report(done: int, total: int, stage: str) -> None:
        frac = min(1.0, done / total) if total else 1.0
        step = (stage, int(frac * 100))
        if last and last[-1] == step:
            return
        last[:] = [step]
        bar.progress(frac, text=f"{stage.capitalize()}: {done:,} of {total:,}")

    return report


# The progress bar is created inside the cached function on purpose: Streamlit replays elements a
# cached function drew, and can only do so for blocks created inside it.
@st.cache_resource(show_spinner=False, max_entries=8)
def load_dataset(spec: str) -> Dataset:
    """`open_dataset(spec)` once per process, with a progress bar while it decodes."""
    bar = st.progress(0.0, text=f"Opening {spec}")
    try:
        return open_dataset(spec, progress=_progress_bar(bar))
    finally:
        bar.empty()


@st.cache_data(show_spinner="Computing statistics (duplicates included)…", max_entries=32)
def load_stats(spec: str, fingerprint: str, image_size: int, _ds: Dataset) -> dict:
    """`dataset_stats` once per dataset content and working size (`_ds` is not hashed)."""
    return dataset_stats(_ds)


def for_display(img: np.ndarray, px: int = THUMB_PX) -> np.ndarray:
    """(H, W[, C]) uint8 ready for st.image: a single channel squeezed, tiny images (8x8 digits, 28x28
    Fashion-MNIST) enlarged by pixel repetition so the browser does not blur them."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    factor = px // max(img.shape[:2])
    if factor > 1:
        img = img.repeat(factor, axis=0).repeat(factor, axis=1)
    return img


def forget_dataset(spec: str) -> None:
    """Drop the cached dataset and statistics for `spec`, so the next load re-scans the files."""
    load_dataset.clear(spec)
    load_stats.clear()


def no_runs_yet(message: str) -> None:
    """The friendly stop for pages that need a trained run: what to do, and a link to do it."""
    st.info(message, icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")

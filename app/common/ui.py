"""Streamlit helpers shared by the pages: the sidebar, the compute device and cached data loaders.

Datasets are opened once per process (keyed by spec: the decoded images are a shared read-only
memory map) and their statistics computed once per content (keyed by spec, fingerprint and working
size), each in a background task (`app/common/scans.py`), so reruns, other sessions and reloaded pages get
them, or the progress of the work under way, instantly.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from engine.data import Dataset, dataset_stats, open_dataset
from app.common import scans
from app.common import state

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


def load_dataset(spec: str) -> Dataset:
    """`open_dataset(spec)` once per server process, in a background task that outlives page reloads."""
    return scans.result(("open", spec), lambda progress: open_dataset(spec, progress=progress), f"Opening {spec}")


def load_stats(spec: str, fingerprint: str, image_size: int, ds: Dataset) -> dict:
    """`dataset_stats` once per dataset content and working size, in a background task too."""
    return scans.result(("stats", spec, fingerprint, image_size), lambda progress: dataset_stats(ds),
                        "Computing statistics (duplicates included)")


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
    """Drop the kept dataset and statistics for `spec`, so the next load re-scans the files."""
    scans.forget(lambda key: key[1] == spec)


def no_runs_yet(message: str) -> None:
    """The friendly stop for pages that need a trained run: what to do, and a link to do it."""
    st.info(message, icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")

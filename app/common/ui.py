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


# The navigation, drawn by every page (the pages/-folder menu Streamlit would draw is hidden in
# .streamlit/config.toml): (page script, label, icon). A page's URL is its file name; the Dataset
# page is the entry point's (`/`).
NAV = [
    ("streamlit_app.py", "Dataset", ":material/dataset:"),
    ("pages/training.py", "Train", ":material/model_training:"),
    ("pages/evaluation.py", "Evaluate", ":material/analytics:"),
    ("pages/explanations.py", "Explain", ":material/visibility:"),
    ("pages/prediction.py", "Predict", ":material/online_prediction:"),
]


def draw_frame() -> None:
    """What every page script draws first: the page config and the sidebar."""
    st.set_page_config(page_title="Loupe", page_icon="🔎", layout="wide")
    render_sidebar()


def render_sidebar() -> None:
    """The pages, then the active dataset, active run and compute device."""
    spec, run = state.active_dataset(), state.active_run()
    with st.sidebar:
        # the links carry the active dataset and run, which the next page would write into its URL
        # anyway: one browser history entry per page, as with the pages/-folder menu
        params = {state.DATASET_PARAM: spec, **({state.RUN_PARAM: run} if run else {})}
        for page, label, icon in NAV:
            st.page_link(page, label=label, icon=icon, query_params=params)
        st.divider()
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
    st.page_link("pages/training.py", label="Go to Train", icon=":material/model_training:")

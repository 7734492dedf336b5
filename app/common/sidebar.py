"""The frame every page draws first: the page config and the sidebar (the app's navigation, then the active
dataset, the active run and the compute device).

Routing is Streamlit's pages/-folder navigation (ARCHITECTURE.md): `streamlit_app.py` is
`/` and shows the Dataset page, every script in `pages/` is served under its file name. Streamlit's own
menu for that folder is hidden (`client.showSidebarNavigation = false` in `.streamlit/config.toml`), and
NAV below draws the menu instead, with the pages' titles and icons. To add a page: its script in `pages/`,
`draw_frame()` before its `main()`, and one line in NAV.
"""

from __future__ import annotations

import streamlit as st

from app.common import state

# (page script, title, icon), in menu order. A page's URL is its script's file name (`/training`); the
# Dataset page is the entry point, `/`.
NAV = [
    ("streamlit_app.py", "Dataset", ":material/dataset:"),
    ("pages/training.py", "Train", ":material/model_training:"),
    ("pages/evaluation.py", "Evaluate", ":material/analytics:"),
    ("pages/explanations.py", "Explain", ":material/visibility:"),
    ("pages/prediction.py", "Predict", ":material/online_prediction:"),
]


@st.cache_resource(show_spinner=False)
def compute_device() -> str:
    """The device training will use, in words (GPU name, or CPU cores); torch is asked once per process."""
    from engine.device import describe_device

    return describe_device()


def draw_frame() -> None:
    """What every page script draws before its own content: the page config and the sidebar."""
    st.set_page_config(page_title="Loupe", page_icon="🔎", layout="wide")
    render_sidebar()


def render_sidebar() -> None:
    """The pages, then the active dataset, active run and compute device."""
    spec, run = state.chosen_dataset(), state.active_run()
    with st.sidebar:
        # the links carry the chosen dataset and run, which the next page would write into its URL
        # anyway: one browser history entry per page switch, not two (never the default: not a choice)
        params = {**({state.DATASET_PARAM: spec} if spec else {}), **({state.RUN_PARAM: run} if run else {})}
        for page, title, icon in NAV:
            st.page_link(page, label=title, icon=icon, query_params=params)
        st.divider()
        st.markdown("### :material/center_focus_strong: Loupe")
        st.markdown(
            f"**Dataset**  \n{f'`{spec}`' if spec else 'none chosen yet'}  \n"
            f"**Run**  \n{f'`{run}`' if run else 'none yet'}  \n"
            f"**Device**  \n{compute_device()}"
        )

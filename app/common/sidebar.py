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
from engine.runs.folder import Run

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


K_CONTEXT = "loupe.sidebar.context"  # this script run's placeholder for the Dataset / Run / Device lines


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
        st.session_state[K_CONTEXT] = st.empty()
    _draw_context(f"`{spec}`" if spec else "none chosen yet", f"`{run}`" if run else "none yet")


def show_run(run: Run | None) -> None:
    """On a page about one run (Evaluate, Explain, Predict), once the page has chosen it: the sidebar names that
    run and the dataset it was trained on, the data the page shows. Drawn first (before the page chose), the
    lines named the dataset chosen on the Dataset page and the run active elsewhere (or none), which the page
    may not show: a run trained on another dataset, or the run a page falls back to. `None` (the built-in model
    on Predict) keeps the lines as they are."""
    if run is None:
        return
    spec = (run.config().get("config") or {}).get("dataset")
    chosen = state.chosen_dataset()
    dataset = f"`{spec}` (the run's)" if spec else "n/a (the run's config names none)"
    if chosen and chosen != spec:
        dataset += f"  \nThe Dataset and Train pages use `{chosen}`."
    shown = f"`{run.id}`"
    active = state.active_run()
    if active and active != run.id:  # the page shows another run than the one the Train page follows
        shown += f" (shown here)  \nThe Train page follows `{active}`."
    _draw_context(dataset, shown)


def _draw_context(dataset: str, run: str) -> None:
    """The Dataset / Run / Device lines into this script run's placeholder (`dataset` and `run` in words)."""
    box = st.session_state.get(K_CONTEXT)
    if box is None:
        return
    box.markdown(f"**Dataset**  \n{dataset}  \n**Run**  \n{run}  \n**Device**  \n{compute_device()}")

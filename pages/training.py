"""Train page (`/training`): the live panel of the run being followed, a form with every option (prefilled for
the active dataset, with the time the run will take on this device) -> a background training job; below,
a sweep of many runs (an Optuna study over the form's config); every run for comparison and clean-up.

The run folder is the truth: the job writes it, the live panel and the table only read it, so a
reload or another browser reattaches to whatever is training.
"""

from __future__ import annotations

import streamlit as st

from app.common import state
from app.common.sidebar import draw_frame
from app.train import estimate as train_estimate
from app.train import form as train_form
from app.train import live as train_live
from app.train import runs_table, values
from app.train import sweep as train_sweep
from engine.errors import LoupeError
from engine.runs.folder import list_runs
from engine.train import jobs

K_FLASH = "train.flash"


def start(stats_error: LoupeError | None) -> None:
    """Validate the form and launch the job; a bad value is shown as one sentence, the form kept as is."""
    try:
        if stats_error is not None:
            raise stats_error
        cfg = values.build_config()
        run = jobs.start(cfg)
    except LoupeError as e:
        st.error(str(e), icon=":material/error:")
        return
    state.set_active_run(run.id)
    st.session_state[K_FLASH] = f"Started {run.id}"
    st.rerun()


def start_bar(stats: dict | None, stats_error: LoupeError | None) -> None:
    """The time estimate on this device, then Start (and how many runs already wait for the device)."""
    busy = [r.id for r in list_runs() if r.status()["display_state"] in train_live.ACTIVE]
    train_estimate.section(values.read_values(), stats, busy=bool(busy))
    with st.container(horizontal=True, vertical_alignment="center"):
        clicked = st.button("Start training", type="primary", icon=":material/play_arrow:", key="train.start")
        if busy:
            st.caption(
                f"{len(busy)} run{'s are' if len(busy) > 1 else ' is'} training already; a new one waits "
                "in the queue until the device is free."
            )
    if clicked:
        start(stats_error)


def main() -> None:
    st.title("Train")
    if flash := st.session_state.pop(K_FLASH, None):
        st.toast(flash, icon=":material/play_arrow:")
    spec = state.active_dataset()
    stats, stats_error = values.dataset_stats(spec)
    values.sync(spec, stats)
    # the run being followed first, across the page (its cards in a row, its curves side by side), then the form
    st.subheader("Live")
    train_live.panel(state.active_run())
    st.subheader("New run")
    train_form.render(spec, stats, stats_error)
    start_bar(stats, stats_error)
    st.divider()
    train_sweep.section(values.build_config, stats, stats_error)  # many runs of the form's config, searched
    st.divider()
    runs_table.render()


draw_frame()  # the page config and the sidebar every page shares
main()

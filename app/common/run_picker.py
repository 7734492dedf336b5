"""Choosing the run a page shows, the same way on every page, and a run's name and label in pickers and tables.

The active run lives in the URL and the session (`app/common/state.py`). A page that shows one run lists the
runs it can use (those with stored predictions for Evaluate, with saved weights for Explain); the picker
shows the active run when it is among them, else the page's fallback, which then becomes the active run,
unless the active run exists but is not usable yet (still training, say): the Train page follows that one,
so it stays active.
"""

from __future__ import annotations

import streamlit as st

from app.common import state
from app.common.sidebar import show_run
from engine.runs.folder import Run, runs_dir


def run_name(run: Run) -> str:
    """The name given in the run's config, else its id."""
    return (run.config().get("config") or {}).get("name") or run.id


def short_dataset(spec: str) -> str:
    """'builtin:fashion-mnist' -> 'fashion-mnist', '/data/faces/' -> 'faces': a dataset in a picker or a table
    cell (the full spec is in the live panel, the sidebar and the run's config)."""
    return spec.split(":", 1)[1] if spec.startswith("builtin:") else spec.rstrip("/").rsplit("/", 1)[-1] or spec


def run_label(run: Run) -> str:
    """`name · model · dataset` (the dataset's short name), leaving out what the name already says: a generated
    id (`20261130-220155-small_cnn-faces-02bd`) holds both, so it stands alone and fits its select box whole."""
    cfg = run.config().get("config") or {}
    name = run_name(run)
    extra = [
        p for p in (cfg.get("model") or "?", short_dataset(cfg.get("dataset") or "?")) if p == "?" or p not in name
    ]
    return " · ".join([name, *extra])


def require_runs(runs: list[Run], message: str) -> list[Run]:
    """`runs`, or, when there are none, the friendly stop: `message` (what to do) and a link to the Train page,
    and the end of this script run."""
    if not runs:
        st.info(message, icon=":material/info:")
        st.page_link("pages/training.py", label="Go to Train", icon=":material/model_training:")
        st.stop()
    return runs


def _picked(key: str) -> None:
    state.set_active_run(st.session_state.get(key))


def _exists(run_id: str) -> bool:
    """Whether a run folder by that id exists (it may not be usable by the page yet)."""
    return (runs_dir() / run_id / "config.json").exists()


def pick_run(runs: list[Run], *, fallback: Run, needs: str, key: str) -> Run:
    """The run to show, chosen in a "Run" select box: the active run when it is in `runs`, else `fallback`.

    `runs` are the runs the page can use, newest first; `needs` says in words what they have ("stored
    predictions"); `key` prefixes the widget key (the page's prefix, e.g. "eval").
    """
    by_id = {r.id: r for r in runs}
    active = state.active_run()
    chosen = by_id.get(active) or fallback
    if chosen.id != active:
        if active and _exists(active):
            st.caption(
                f"The active run `{active}` has no {needs} yet (still training, or stopped before its end); "
                f"showing `{run_name(chosen)}` instead."
            )
        else:
            state.set_active_run(chosen.id)
    ids = list(by_id)
    widget = f"{key}.run.{chosen.id}"  # a new widget when the active run changes elsewhere, showing it
    st.selectbox(
        "Run",
        ids,
        index=ids.index(chosen.id),
        key=widget,
        on_change=_picked,
        args=(widget,),
        format_func=lambda i: run_label(by_id[i]),
        help=f"Runs with {needs}, newest first.",
    )
    show_run(chosen)  # the sidebar names the run shown and its dataset
    return chosen

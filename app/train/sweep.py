"""The Train page's Sweep section: a search-space editor over the form's config -> a background
`python -m engine sweep` job; below it the followed sweep's progress (bar and ETA), its trials table, the
best trial with a link to Evaluate, and Optuna's plotly figures.

The editor's rows are the CLI's `--param NAME=KIND:VALUES` lines, parsed by the same function
(`engine.sweep.space.parse_param`), so the page and the shell accept and refuse the same spaces with the
same sentence. The study on disk (RUNS/sweeps.db and RUNS/.sweeps/NAME/) is the truth: the panel re-reads
it every few seconds while the sweep runs, so a reload or another browser reattaches to it.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pandas as pd
import streamlit as st

from app.common import charts
from app.train.live import fmt_duration
from engine.config import RunConfig
from engine.errors import LoupeError
from engine.metrics.display import MISSING, format_metric, is_rate, label
from engine.sweep import report
from engine.sweep.space import KINDS, SWEEPABLE, parse_space
from engine.sweep.study import (
    PRUNERS,
    SweepSettings,
    check_name,
    default_storage,
    list_sweeps,
    new_study_name,
    open_storage,
    read_progress,
    request_stop,
    start_background,
    study_names,
)

K_SPACE, K_TRIALS, K_BUDGET = "train.sweep.space", "train.sweep.trials", "train.sweep.budget_min"
K_PRUNER, K_GRID, K_NAME, K_PICK = "train.sweep.pruner", "train.sweep.grid", "train.sweep.name", "train.sweep.pick"
K_FLASH, K_SEEN = "train.sweep.flash", "train.sweep.seen"
POLL_S = 2.0
DEFAULT_SPACE = pd.DataFrame(
    {
        "Parameter": ["lr", "batch_size"],
        "Kind": ["loguniform", "choice"],
        "Values": ["1e-4:1e-2", "32,64,128"],
    }
)
PRUNER_TEXT = {
    "median": "median: end a trial after an epoch whose figure is worse than the median of earlier trials there",
    "halving": "successive halving: keep the best third at each rung of epochs",
    "none": "none: every trial trains all its epochs",
}


def space_texts(table: pd.DataFrame) -> list[str]:
    """The editor's rows as `--param` lines (rows without a parameter are skipped)."""
    out = []
    for _, row in table.iterrows():
        name, kind, values = row.get("Parameter"), row.get("Kind"), row.get("Values")
        if isinstance(name, str) and name.strip():
            out.append(f"{name.strip()}={(kind or 'choice').strip()}:{(values or '').strip()}")
    return out


def objective_caption(base: RunConfig | None, task: str | None) -> str:
    """'Objective: maximise val balanced accuracy (the form's monitor)'."""
    from engine.train.records import LOWER_IS_BETTER, monitor_name

    if base is None or not task:
        return "Objective: the form's monitor, once the dataset can be read."
    try:
        monitor = monitor_name(base, task)
    except LoupeError as e:
        return str(e)
    way = "minimise" if monitor in LOWER_IS_BETTER else "maximise"
    return f"Objective: {way} {label(monitor)}, the form's monitor (Stopping → monitor), at each trial's best epoch."


def editor(base_of: Any, stats: dict | None, stats_error: LoupeError | None) -> None:
    """The new-sweep form: space, budget, pruner; Start launches the background job."""
    st.caption(
        "Each row is one searched field (any training option): **choice** takes values separated by commas, "
        "**uniform** and **loguniform** take LOW:HIGH. Every other option comes from the form above."
    )
    table = st.data_editor(
        DEFAULT_SPACE,
        num_rows="dynamic",
        hide_index=True,
        key=K_SPACE,
        width="stretch",
        column_config={
            "Parameter": st.column_config.SelectboxColumn("Parameter", options=list(SWEEPABLE), required=True),
            "Kind": st.column_config.SelectboxColumn("Kind", options=list(KINDS), required=True),
            "Values": st.column_config.TextColumn("Values", help="choice: 32,64,128 · uniform/loguniform: 1e-4:1e-2"),
        },
    )
    c1, c2, c3 = st.columns(3)
    trials = c1.number_input("Trials", min_value=1, max_value=1000, value=12, step=1, key=K_TRIALS)
    budget = c2.number_input(
        "Time budget (minutes, 0: none)",
        min_value=0.0,
        max_value=10_000.0,
        value=0.0,
        step=5.0,
        format="%g",
        key=K_BUDGET,
    )
    pruner = c3.selectbox("Pruner", PRUNERS, key=K_PRUNER, format_func=lambda p: PRUNER_TEXT[p].split(":")[0])
    st.caption(PRUNER_TEXT[pruner])
    grid = st.toggle("Grid: try every combination of the choice values (instead of TPE)", key=K_GRID)
    st.text_input("Study name (optional; an existing one continues)", key=K_NAME, placeholder="sweep-DATE-DATASET")
    base = None
    try:
        base = base_of()
    except LoupeError:
        pass
    st.caption(objective_caption(base, (stats or {}).get("task")))
    if st.button("Start sweep", icon=":material/tune:", key="train.sweep.start"):
        try:
            if stats_error is not None:
                raise stats_error
            base = base_of()
            settings = SweepSettings(
                base=base,
                params=parse_space(space_texts(table), base, grid),
                trials=int(trials),
                time_budget_s=float(budget) * 60,
                grid=bool(grid),
                pruner=pruner,
            ).validate()
            name = check_name(st.session_state.get(K_NAME) or new_study_name(base))
            start_background(settings, name)
        except LoupeError as e:
            st.error(str(e), icon=":material/error:")
            return
        st.session_state[K_PICK] = name
        st.session_state[K_FLASH] = f"Started sweep {name}"
        st.rerun()


def section(base_of: Any, stats: dict | None, stats_error: LoupeError | None) -> None:
    """The whole Sweep section; `base_of()` returns the form's validated config (every trial's base)."""
    st.subheader("Sweep")
    if flash := st.session_state.pop(K_FLASH, None):
        st.toast(flash, icon=":material/tune:")
    sweeps = list_sweeps()
    with st.expander("New sweep: search training options with Optuna", expanded=not sweeps, icon=":material/tune:"):
        editor(base_of, stats, stats_error)
    if not sweeps:
        st.caption("No sweeps yet. A sweep's trials are runs: they appear in the runs table too.")
        return
    if st.session_state.get(K_PICK) not in sweeps:
        st.session_state[K_PICK] = sweeps[0]
    name = st.selectbox("Sweep", sweeps, key=K_PICK)
    prog = read_progress(name) or {}
    every = POLL_S if prog.get("state") == "running" else None
    st.fragment(run_every=every)(follow)(name)


def progress_text(prog: dict, now: float | None = None) -> str:
    """'3 / 12 trials · about 4 min left · best val balanced accuracy 91.20% (trial 2)'."""
    from engine.sweep.study import SweepProgress

    now = now or time.time()
    known = {k: v for k, v in prog.items() if k in SweepProgress.__dataclass_fields__}
    p = SweepProgress(**known)
    parts = [f"{p.done} / {p.target} trials"]
    if p.state == "running":
        eta = p.eta_seconds(now)
        parts.append(f"about {fmt_duration(eta)} left" if eta is not None else "time left: after the first trial")
        if p.trial is not None:
            parts.append(f"trial {p.trial}: epoch {p.epoch} / {p.epochs}")
    if p.best is not None:
        parts.append(f"best {label(p.monitor)} {format_metric(p.monitor, p.best)} (trial {p.best_trial})")
    return " · ".join(parts)


def load_study(name: str) -> Any | None:
    """The study from the runs folder's database (None when it is not there, e.g. a sweep on another storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(default_storage(), heartbeat=False)
    if name not in study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def follow(name: str) -> None:
    """Progress, stop, trials table, best trial and figures of sweep `name` (re-run every POLL_S while it runs)."""
    prog = read_progress(name) or {}
    state = prog.get("state", MISSING)
    seen = st.session_state.get(K_SEEN)
    st.session_state[K_SEEN] = (name, state)
    if seen == (name, "running") and state != "running":  # it just ended: the runs table and the rest redraw
        st.rerun(scope="app")
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**{name}** · {state}")
        if state == "running" and st.button("Stop sweep", icon=":material/stop:", key="train.sweep.stop"):
            request_stop(name)
            st.toast("Asked the sweep to stop at the next batch; its trial is tried again when it continues.")
    target = prog.get("target") or 0
    if target:
        st.progress(min(1.0, (prog.get("done") or 0) / target), text=progress_text(prog))
    if prog.get("error") and state == "failed":
        st.error(f"The sweep failed: {prog['error']}", icon=":material/error:")
    try:
        study = load_study(name)
    except LoupeError as e:
        st.error(str(e), icon=":material/error:")
        return
    if study is None:
        st.caption("Its study is not in this runs folder's sweeps.db yet (it appears once the job has opened it).")
        return
    header, cells = report.table_cells(study)
    if not cells:
        st.caption("No trials yet: the first one is being set up.")
        return
    st.dataframe(pd.DataFrame(cells, columns=header), hide_index=True, key="train.sweep.table")
    best = report.best_trial(study)
    if best is not None:
        monitor = study.user_attrs.get("monitor", "value")
        value = report.objective_text(monitor, best.value, best.user_attrs.get("std"))
        run_id = best.user_attrs.get("run")
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"Best: trial {best.number}, {label(monitor)} **{value}**")
            if run_id:
                st.page_link(
                    "pages/evaluation.py",
                    label="Evaluate the best trial",
                    icon=":material/analytics:",
                    query_params={"run": run_id},
                )
        with st.expander("Best config as YAML (for `python -m engine train --config`)"):
            st.code(report.best_yaml(study), language="yaml")
    figures(study)


def figures(study: Any) -> None:
    """Optuna's plotly figures, each in its tab; one that cannot be drawn yet says why instead."""
    import optuna.visualization as vis

    monitor = study.user_attrs.get("monitor", "value")
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    params = {p for t in completed for p in t.params}
    tabs = st.tabs(["Optimisation history", "Parallel coordinates", "Parameter importances", "Slices"])
    plots = [
        ("history", vis.plot_optimization_history, "Optimisation history", 1, 1),
        ("parallel", vis.plot_parallel_coordinate, "Parallel coordinates", 1, 1),
        ("importance", vis.plot_param_importances, "Parameter importances", 2, 2),
        ("slice", vis.plot_slice, "Slices", 1, 1),
    ]
    for tab, (key, plot, title, min_trials, min_params) in zip(tabs, plots, strict=True):
        with tab:
            if len(completed) < min_trials or len(params) < min_params:
                st.caption(
                    f"{title} need{'s' if title.endswith('history') else ''} at least {min_trials} completed "
                    f"trial{'s' if min_trials > 1 else ''} and {min_params} searched "
                    f"field{'s' if min_params > 1 else ''}; "
                    f"this sweep has {len(completed)} and {len(params)}."
                )
                continue
            try:
                with warnings.catch_warnings():  # e.g. "importances will be equal" for a 2-trial study
                    warnings.simplefilter("ignore")
                    fig = plot(study)
            except Exception as e:  # Optuna refuses some studies (e.g. one value for every trial): say so
                st.caption(f"{title} cannot be drawn for this study yet ({type(e).__name__}: {e}).")
                continue
            if key in ("history", "slice"):  # the objective by its name, a rate as a percentage
                fig.update_yaxes(title_text=label(monitor), tickformat=".0%" if is_rate(monitor) else None)
            st.plotly_chart(charts.layout(fig, title, height=380), key=f"train.sweep.fig.{key}")

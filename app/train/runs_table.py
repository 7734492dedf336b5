"""The runs table on the Train page: every run with its state and best metric, curves of several runs
overlaid for comparison, choosing the active run, and deleting one (after a confirmation)."""

from __future__ import annotations

import time
from datetime import datetime

import pandas as pd
import streamlit as st

from app.common import state
from app.common.run_picker import short_dataset
from app.train import charts
from app.train.live import ACTIVE, best_so_far, elapsed_seconds, fmt_duration, monitor_of, parse_time
from engine.errors import LoupeError
from engine.metrics.display import MISSING, format_metric
from engine.runs.folder import Run, delete_run, list_runs, run_row, runs_dir

K_PICK, K_COMPARE, K_METRIC = "train.runs.pick", "train.runs.compare", "train.runs.metric"
K_CONFIRM, K_COMPARE_TOUCHED = "train.runs.confirm_delete", "train.runs.compare_touched"
SHOWN = ("Run", "Dataset", "Model", "State", "Epochs", "Best (epoch)", "Duration", "Started")
# Pixel widths that fit the shown columns side by side in the page's 940 px at a 1400 px window, so no
# column is cut off or pushed out of view (the longest state, "completed (time budget)", fits its column).
WIDTHS = {
    "Run": 242,
    "Dataset": 93,
    "Model": 100,
    "State": 155,
    "Epochs": 50,
    "Best (epoch)": 135,
    "Duration": 60,
    "Started": 95,
}
COMPARE_DEFAULT = 4  # the newest runs with curves, compared when the user has not chosen


def collect() -> list[dict]:
    """One dict per run: `run_row` plus the run, its records and a best metric (and its epoch) that are never
    missing when the run has one (taken from the summary, else from the records)."""
    now = time.time()
    out = []
    for run in list_runs():
        row = run_row(run)
        cfg = run.config().get("config", {})
        records = run.metrics()
        summary = run.summary() or {}
        monitor = row.get("monitor") or monitor_of(cfg, records, summary, run.config().get("task"))
        best, best_epoch = row.get("best"), row.get("best_epoch")
        if best is None:
            best = (summary.get("best") or {}).get(monitor.removeprefix("val_"))
        if best is None:
            best, best_epoch = best_so_far(records, monitor)
        status = run.status()
        seconds = elapsed_seconds(status, summary or None, now)
        out.append(
            {
                **row,
                "task": run.config().get("task"),
                "run": run,
                "records": records,
                "monitor": monitor,
                "best": best,
                "best_epoch": best_epoch,
                "seconds": seconds,
            }
        )
    return out


def started_text(iso: str | None, now: float | None = None) -> str:
    """When a run started, short and in this machine's time zone (the run folder stores UTC):
    'Nov 30 20:47' this year, '2025-11-30' before; n/a when it never started."""
    when = parse_time(iso)
    if when is None:
        return MISSING
    dt = datetime.fromtimestamp(when)
    return (
        dt.strftime("%b %d %H:%M")
        if dt.year == datetime.fromtimestamp(now or time.time()).year
        else dt.strftime("%Y-%m-%d")
    )


def best_text(row: dict) -> str:
    """'bal. acc. 90.00% (2)': the monitored metric at the best epoch so far, or n/a."""
    if row["best"] is None:
        return MISSING
    epoch = f" ({row['best_epoch']})" if row.get("best_epoch") else ""
    return f"{charts.short_label(row['monitor'], row.get('task'))} {format_metric(row['monitor'], row['best'])}{epoch}"


def table(rows: list[dict]) -> pd.DataFrame:
    """The table as shown: every cell text a person reads (metrics in the app's one format, n/a when missing).
    `Best metric`, `Best` and `Best epoch` are kept apart as data; the table shows them as `Best (epoch)`."""
    return pd.DataFrame(
        {
            "Run": [r["name"] for r in rows],
            "Dataset": [short_dataset(r["dataset"]) if r["dataset"] else MISSING for r in rows],
            "Model": [r["model"] or MISSING for r in rows],
            "State": [r["state"] for r in rows],
            "Epochs": [f"{r['epoch'] or 0} / {r['epochs']}" if r.get("epochs") else MISSING for r in rows],
            "Best (epoch)": [best_text(r) for r in rows],
            "Best metric": [
                charts.short_label(r["monitor"], r.get("task")) if r["best"] is not None else MISSING for r in rows
            ],
            "Best": [format_metric(r["monitor"], r["best"]) for r in rows],
            "Best epoch": [str(r["best_epoch"]) if r.get("best_epoch") else MISSING for r in rows],
            "Duration": [fmt_duration(r["seconds"]) for r in rows],
            "Started": [started_text(r.get("started_at")) for r in rows],
            "Dataset spec": [r["dataset"] or MISSING for r in rows],
            "Id": [r["id"] for r in rows],
        }
    )


def render() -> None:
    st.subheader("Runs")
    rows = collect()
    if not rows:
        st.caption(f"No runs yet in {runs_dir()}. Runs you start appear here, with their curves for comparison.")
        return
    helps = {
        "State": "queued, running, completed, stopped, failed, or failed (crashed): the job ended without "
        "recording why",
        "Epochs": "Epochs done / planned (fewer when stopped early)",
        "Best (epoch)": "The monitored validation metric at the best epoch so far, and that epoch",
        "Duration": "Wall time the training processes spent on the run (not the time it sat stopped)",
        "Started": "When the run first started (this machine's time)",
        "Dataset": "The dataset (built-in name or folder name; the full spec is in the live panel)",
    }
    st.dataframe(
        table(rows),
        hide_index=True,
        key="train.runs.table",
        column_order=SHOWN,
        column_config={
            name: st.column_config.TextColumn(name, width=w, help=helps.get(name)) for name, w in WIDTHS.items()
        },
    )
    by_id = {r["id"]: r for r in rows}
    manage(by_id)
    compare(by_id)


def _pick_changed(key: str) -> None:
    value = st.session_state.get(key)
    if value is None or (runs_dir() / str(value) / "config.json").exists():
        state.set_active_run(value)
    st.session_state.pop(K_CONFIRM, None)


def manage(by_id: dict[str, dict]) -> None:
    """Choose the active run (shown in the live panel) and delete runs, asking first."""
    active = state.active_run()
    ids = list(by_id)
    key = f"{K_PICK}.{active}"  # a new widget whenever the active run changes (Start, URL, delete), showing it
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    pick = left.selectbox(
        "Run",
        ids,
        index=ids.index(active) if active in by_id else None,
        key=key,
        on_change=_pick_changed,
        args=(key,),
        placeholder="Choose a run to follow or delete",
        format_func=lambda i: shown_name(by_id, i),
        help="The chosen run is the active one: the live panel shows it and the other pages use it.",
    )
    running = pick is not None and by_id[pick]["state"] in ACTIVE
    if right.button(
        "Delete…",
        icon=":material/delete:",
        key="train.runs.delete",
        disabled=pick is None or running,
        help="Stop the run first" if running else "Removes the run folder, after a confirmation",
    ):
        st.session_state[K_CONFIRM] = pick
    target = st.session_state.get(K_CONFIRM)
    if target and target in by_id:
        confirm_delete(by_id[target])


def confirm_delete(row: dict) -> None:
    run: Run = row["run"]
    with st.container(border=True):
        st.warning(
            f"Delete the run **{row['name']}**? Its folder `{run.path}` (weights, metrics, predictions) "
            "is removed for good.",
            icon=":material/warning:",
        )
        with st.container(horizontal=True):
            yes = st.button(
                "Yes, delete it", type="primary", key="train.runs.delete_yes", icon=":material/delete_forever:"
            )
            no = st.button("Cancel", key="train.runs.delete_no")
    if no:
        st.session_state.pop(K_CONFIRM, None)
        st.rerun()
    if yes:
        try:
            delete_run(run)
        except LoupeError as e:
            st.error(str(e))
            return
        st.session_state.pop(K_CONFIRM, None)
        if state.active_run() == run.id:
            state.set_active_run(None)
        st.toast(f"Deleted {row['name']}", icon=":material/delete:")
        st.rerun()


def _touched() -> None:
    st.session_state[K_COMPARE_TOUCHED] = True


def compare(by_id: dict[str, dict]) -> None:
    """Curves of several runs overlaid: validation loss and a chosen metric."""
    with_curves = [i for i, r in by_id.items() if charts.val_records(r["records"])]
    if not with_curves:
        return
    st.markdown("##### Compare runs")
    chosen = st.session_state.get(K_COMPARE) if st.session_state.get(K_COMPARE_TOUCHED) else None
    # until the user picks, the newest runs (so a run that just finished joins in); then their choice
    st.session_state[K_COMPARE] = (
        [i for i in chosen if i in with_curves] if chosen is not None else with_curves[:COMPARE_DEFAULT]
    )
    keys: list[str] = []
    for i in with_curves:
        keys += [
            k for k in charts.metric_keys(by_id[i]["records"]) if k not in keys and k not in ("loss", "train_loss")
        ]
    left, right = st.columns([3, 1])
    picked = left.multiselect(
        "Runs to compare",
        with_curves,
        key=K_COMPARE,
        on_change=_touched,
        format_func=lambda i: shown_name(by_id, i),
        placeholder="Choose runs",
    )
    tasks = sorted({str(by_id[i].get("task") or "unknown") for i in picked})
    if len(tasks) > 1:
        st.warning(
            f"These runs are of different tasks ({', '.join(tasks)}): a metric means something else for each "
            "(accuracy is subset accuracy for multi-label), so their curves are not comparable. Compare runs of "
            "one task.",
            icon=":material/compare_arrows:",
        )
    default = default_metric(tasks[0] if len(tasks) == 1 else None, keys)
    if st.session_state.get(K_METRIC) not in keys:
        st.session_state[K_METRIC] = default
    metric = right.selectbox("Metric", keys, key=K_METRIC, format_func=charts.label)
    series = {shown_name(by_id, i): by_id[i]["records"] for i in picked}
    a, b = st.columns(2)
    a.plotly_chart(charts.compare_curves(series, "loss"), key="train.runs.compare_loss")
    if metric:
        b.plotly_chart(charts.compare_curves(series, metric), key="train.runs.compare_metric")


# the metric runs of a task are compared on first: the one that task's evaluation leads with
COMPARE_METRIC = {"binary": "hter", "multiclass": "balanced_accuracy", "multilabel": "macro_f1"}


def default_metric(task: str | None, keys: list[str]) -> str | None:
    """The task's comparison metric when the runs record it; for mixed or unknown tasks the validation loss
    (every run has one); else the first metric there is."""
    for key in (COMPARE_METRIC.get(task or ""), "loss"):
        if key in keys:
            return key
    return keys[0] if keys else None


def shown_name(by_id: dict[str, dict], run_id: str) -> str:
    """The run's name, with its id when another run has the same name. It must not change while the run
    trains (no state in it): the browser sends the shown text of a selectbox back as its value."""
    name = by_id[run_id]["name"]
    twins = sum(r["name"] == name for r in by_id.values())
    return name if twins == 1 else f"{name} · {run_id}"

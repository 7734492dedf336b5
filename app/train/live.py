"""The live panel: the active run's progress, throughput, curves and best so far, with Stop and Resume.

It is a fragment that re-reads the run folder every `POLL_S` seconds while the run is queued or
running (`st.fragment(run_every=...)`), so a reload, a second browser or a closed tab all reattach
to the same job: the folder is the truth, nothing lives in the session but an ETA rate estimate.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from app.train import charts
from engine.errors import LoupeError
from engine.metrics.display import MISSING, finite, format_metric
from engine.runs.folder import Run, runs_dir, state_label
from engine.train import jobs

POLL_S = 1.5
ACTIVE = ("queued", "running")
K_SEEN, K_RATE = "train.live.seen", "train.live.rate"
BADGE = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "stopped": "orange",
    "failed": "red",
    "failed (crashed)": "red",
}
LOG_LINES = 30


# --- numbers (no Streamlit) ---------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def monitor_of(cfg: dict, records: list[dict], summary: dict | None, task: str | None = None) -> str:
    """The metric that picks the best epoch: the summary's, the config's, or the trainer's 'auto' choice.

    `task` is the task training resolved (config.json's top level, written before the first epoch): with it the
    'auto' choice is named right from the start, not changed once the first validation record shows micro F1."""
    if summary and summary.get("monitor"):
        return summary["monitor"]
    if cfg.get("monitor") not in (None, "auto"):
        return cfg["monitor"]
    multilabel = task == "multilabel" or cfg.get("task") == "multilabel" or any("micro_f1" in r for r in records)
    return "val_macro_f1" if multilabel else "val_balanced_accuracy"


def best_so_far(records: list[dict], monitor: str) -> tuple[float | None, int | None]:
    """(value, epoch) of the best validation record for `monitor` ('val_loss' reads the `loss` key)."""
    rec = charts.best_record(records, monitor)
    key = monitor.removeprefix("val_")
    return (rec[key], rec["epoch"]) if rec else (None, None)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def steps_per_second(status: dict, records: list[dict], now: float, seen: tuple[float, int] | None) -> float | None:
    """Training speed in steps/s, counting only the work of the process that trains now.

    The trainer writes where it started (`segment_start`, `segment_step`: after a resume, the step it
    resumed at) and a `heartbeat` time with each step count, so the rate is the steps since then over the
    time since then (validation included, as the ETA needs). Steps a stopped run had done before do not
    count: dividing them by the time since the resume made the speed and ETA look ten times better.
    Runs written without those fields fall back to `seen`, (time, step) when this session first saw the
    run running, as long as it is still the same segment (the step has not gone below it)."""
    step = status.get("step") or 0
    t0, s0, beat = _number(status.get("segment_start")), status.get("segment_step"), _number(status.get("heartbeat"))
    if t0 is not None and isinstance(s0, int):
        if step > s0 and beat is not None and beat - t0 >= 1.0:
            return (step - s0) / (beat - t0)
        return None  # this segment has not trained long enough to tell
    if seen is not None and step > seen[1] and now - seen[0] >= 2.0:
        return (step - seen[1]) / (now - seen[0])
    return None


def eta_seconds(status: dict, rate: float | None, budget_s: float = 0.0, now: float | None = None) -> float | None:
    """Seconds left: the remaining steps at `rate`, capped by the end of a time budget. The trainer writes
    that end (`deadline`; the budget counts training time, so a resumed run's moves on by the time it was
    stopped); for runs written without it, the budget counted from `started_at` is a rough bound."""
    total, step = status.get("total_steps"), status.get("step") or 0
    if not total or not rate or rate <= 0:
        return None
    now = now or time.time()
    eta = max(0.0, (total - step) / rate)
    deadline = _number(status.get("deadline"))
    started = parse_time(status.get("started_at"))
    if deadline is not None:
        eta = min(eta, max(0.0, deadline - now))
    elif budget_s and started and "segment_start" not in status:
        eta = min(eta, max(0.0, budget_s - (now - started)))
    return eta


def speed_of(status: dict, rate: float | None, batch_size: int) -> float | None:
    """Training images/s now: what the trainer measured since it (re)started (steps only, no validation),
    else steps/s times the batch size."""
    measured = _number(status.get("img_per_s"))
    if measured:
        return measured
    return rate * batch_size if rate and batch_size else None


def progress_of(status: dict) -> float:
    total, epochs = status.get("total_steps"), status.get("epochs")
    if status.get("state") == "completed":
        return 1.0
    if total:
        return min(1.0, (status.get("step") or 0) / total)
    if epochs:
        return min(1.0, (status.get("epoch") or 0) / epochs)
    return 0.0


def progress_text(status: dict, eta: float | None, summary: dict | None = None) -> str:
    shown = status["display_state"]
    epoch, epochs = status.get("epoch") or 0, status.get("epochs")
    step, total = status.get("step") or 0, status.get("total_steps")
    # while an epoch is under way (running, or stopped/failed in it) status.json holds its 0-based index
    under_way = shown == "running" or (shown != "completed" and step < (total or 0))
    current = epoch + 1 if under_way else epoch
    shown_epoch = min(current, epochs or current)
    where = f"epoch {shown_epoch} of {epochs}" if epochs else f"epoch {current}"
    if total:
        where += " · " + steps_text(step, total, epochs, shown_epoch)
    if shown == "queued":
        return "Queued: starting (loading the data, building the model) or waiting for the device"
    if shown == "running":
        if not total:
            return "Running: preparing the first epoch"
        return f"Running: {where}" + (f" · ETA {fmt_duration(eta)}" if eta is not None else " · ETA after a few steps")
    if shown == "completed":
        why = {
            "patience": " · stopped early: no improvement",
            "time": " · the time budget ended it",
            "pruned": " · pruned by its sweep",
        }.get((summary or {}).get("stopped_early") or "", "")
        return f"Completed: {epoch} epoch{'s' if epoch != 1 else ''}, {step:,} steps{why}"
    return f"{shown.capitalize()} in {where}"


def steps_text(step: int, total: int, epochs: int | None, epoch: int) -> str:
    """'step 9 of 11 in this epoch · 9 of 33 in all': the step counted within the epoch beside the epoch's
    count, and the run's total beside its total, each said which (never a per-epoch figure of a total)."""
    whole = f"{step:,} of {total:,} steps in all"
    if not epochs or total % epochs or epoch < 1:
        return whole
    per_epoch = total // epochs
    within = min(per_epoch, max(0, step - (epoch - 1) * per_epoch))
    return f"step {within:,} of {per_epoch:,} in this epoch · {whole}"


def log_tail(path: Path, lines: int = LOG_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- drawing -----------------------------------------------------------------------------------


def panel(run_id: str | None) -> None:
    """The active run's live panel; polls while the run is queued or running."""
    if not run_id:
        st.info(
            "No run selected. Start one with the form, or pick one in the runs table below.",
            icon=":material/monitoring:",
        )
        return
    run = Run(runs_dir() / run_id)
    if not run.exists():
        st.info(f"The selected run `{run_id}` is not in {runs_dir()}. Start a run or pick another below.")
        return
    shown = run.status()["display_state"]
    st.session_state[K_SEEN] = (run_id, shown)
    every = POLL_S if shown in ACTIVE else None
    st.fragment(run_every=every)(_live)(run_id)


def _live(run_id: str) -> None:
    run = Run(runs_dir() / run_id)
    status = run.status()
    shown = status["display_state"]
    seen = st.session_state.get(K_SEEN)
    if seen and seen[0] == run_id and seen[1] != shown:
        st.session_state[K_SEEN] = (run_id, shown)
        st.rerun()  # started or ended while we watched: redraw the page (table, buttons), stop polling if done
    cfg = run.config().get("config", {})
    records = run.metrics()
    summary = run.summary() if shown == "completed" else None
    now = time.time()
    rates = st.session_state.setdefault(K_RATE, {})
    mark = rates.get(run_id)
    if shown != "running" or mark is None or (status.get("step") or 0) < mark[1]:
        mark = rates[run_id] = (now, status.get("step") or 0)
    rate = steps_per_second(status, records, now, mark) if shown == "running" else None

    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**{cfg.get('name') or run.id}**")
            st.badge(state_label(status), color=BADGE.get(shown, "gray"))
        started = parse_time(status.get("started_at"))
        st.caption(
            " · ".join(
                x
                for x in (
                    cfg.get("dataset"),
                    cfg.get("model"),
                    status.get("device"),
                    f"started {datetime.fromtimestamp(started):%Y-%m-%d %H:%M}" if started else None,
                )
                if x
            )
        )
        eta = eta_seconds(status, rate, float(cfg.get("time_budget_s") or 0), now)
        st.progress(progress_of(status), text=progress_text(status, eta, summary))
        task = run.config().get("task")
        monitor = monitor_of(cfg, records, summary, task)
        speed = speed_of(status, rate, int(cfg.get("batch_size") or 0)) if shown == "running" else None
        _numbers(status, records, summary, monitor, now, speed, task)
        _buttons(run, status)
        if status.get("state") == "failed" or status.get("crashed"):
            st.error(
                status.get("error")
                or "The training process ended without reporting why (killed, or out of memory?); see its log below."
            )
        quiet = {"displayModeBar": False}
        left, right = st.columns(2, gap="medium")  # the curves side by side, across the page
        left.plotly_chart(
            charts.loss_curves(records, status.get("epochs"), charts.train_loss_note(cfg, task)),
            key="train.live.loss",
            config=quiet,
        )
        right.plotly_chart(
            charts.metric_curves(records, monitor, status.get("epochs"), task), key="train.live.metrics", config=quiet
        )
        with st.expander("Training log (last lines)", icon=":material/terminal:"):
            st.code(log_tail(run.path / "train.log") or "(empty)", language=None)


def elapsed_seconds(status: dict, summary: dict | None, now: float) -> float | None:
    """Wall time the run's processes have spent on it: the summary's once done; else the time of the
    processes before this one (`wall_before`, written at a stop) plus this one's since it began
    (`active_since`), so the time a run sat stopped is not counted. Runs written without those fields:
    the time since `started_at`."""
    if summary and summary.get("wall_seconds") is not None:
        return float(summary["wall_seconds"])
    before, since = _number(status.get("wall_before")), _number(status.get("active_since"))
    shown = status["display_state"]
    if before is not None or since is not None:
        return (before or 0.0) + (max(0.0, now - since) if since is not None and shown in ACTIVE else 0.0)
    started = parse_time(status.get("started_at"))
    if started is None:
        return None
    return (now if shown in ACTIVE else parse_time(status.get("updated_at")) or now) - started


def _numbers(
    status: dict,
    records: list[dict],
    summary: dict | None,
    monitor: str,
    now: float,
    live_speed: float | None,
    task: str | None = None,
) -> None:
    """Four cards in a row: throughput, best so far, loss (or the test score once done), time. Metrics are
    written the one way the app writes them (`engine.metrics.display`)."""
    shown = status["display_state"]
    value, epoch = best_so_far(records, monitor)
    if summary and summary.get("best_epoch"):
        epoch = summary["best_epoch"]
        value = (summary.get("best") or {}).get(monitor.removeprefix("val_"), value)
    recs = charts.val_records(records)
    last = recs[-1] if recs else {}
    speed = summary.get("train_img_per_s") if summary else live_speed or last.get("img_per_s")
    key = monitor.removeprefix("val_")
    spark = {"chart_type": "line", "border": True, "delta_color": "off", "delta_arrow": "off"}
    cards = st.columns(4)
    cards[0].metric(
        "Images/s",
        f"{speed:,.0f}" if finite(speed) else MISSING,
        chart_data=[r.get("img_per_s") or 0 for r in recs] or None,
        help="Training images per second: measured by the trainer since it (re)started while it runs, "
        "over the whole run once done (validation not counted); the line: per epoch.",
        **spark,
    )
    cards[1].metric(
        f"Best {charts.short_label(key, task)}",
        format_metric(key, value),
        delta=f"epoch {epoch}" if epoch else None,
        chart_data=[r[key] for r in recs if isinstance(r.get(key), (int, float))] or None,
        help=f"The monitored metric (`{monitor}`) on validation at the best epoch; that epoch's weights are kept.",
        **spark,
    )
    test = ((summary or {}).get("final") or {}).get("test") or {}
    if test:
        tkey = key if key in test else "accuracy"
        cards[2].metric(
            f"Test {charts.short_label(tkey, task)}",
            format_metric(tkey, test.get(tkey)),
            border=True,
            help="On the test split, with the best epoch's weights.",
        )
    else:
        running = shown == "running" and status.get("batch_loss") is not None
        loss = status.get("batch_loss") if running else last.get("loss")
        cards[2].metric(
            "Batch loss" if running else "Val loss",
            format_metric("loss", loss),
            chart_data=[r["loss"] for r in recs if isinstance(r.get("loss"), (int, float))] or None,
            help="Training loss of the latest batch (the line: validation loss per epoch)." if running else None,
            **{**spark, "delta_color": "normal"},
        )
    cards[3].metric(
        "Elapsed" if shown in ACTIVE else "Duration",
        fmt_duration(elapsed_seconds(status, summary, now)),
        border=True,
        help="Wall time the training processes spent on this run, data loading included; "
        "time the run sat stopped is not counted.",
    )


def _buttons(run: Run, status: dict) -> None:
    shown = status["display_state"]
    with st.container(horizontal=True):
        if shown in ACTIVE:
            stopping = run.stop_requested()
            if st.button(
                "Stopping…" if stopping else "Stop",
                icon=":material/stop_circle:",
                key="train.live.stop",
                disabled=stopping,
                help="Stop at the next batch; the last state is saved so the run can resume.",
            ):
                try:
                    jobs.stop(run)
                except LoupeError as e:
                    st.error(str(e))
                else:
                    st.toast("Stopping at the next batch…", icon=":material/stop_circle:")
        if jobs.can_resume(run):
            if st.button(
                "Resume",
                icon=":material/play_circle:",
                key="train.live.resume",
                type="primary",
                help="Continue from the last saved state, in the background.",
            ):
                try:
                    jobs.resume(run)
                except LoupeError as e:
                    st.error(str(e))
                else:
                    st.rerun()  # polling starts again with the full page

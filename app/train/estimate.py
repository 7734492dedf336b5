"""The Train page's time estimate, above Start: time per epoch and for the whole run on this device.

The speed comes from `engine.train.timing`: a short timed probe of the chosen model at the chosen size,
batch, precision and memory format, cached per configuration (or a finished run's own speeds). The
probe is `python -m engine estimate` in a child process, watched by a background task
(`app/common/scans.py`), so the form stays usable while it runs and a reload attaches to it; while a run trains on the device, the page does not probe on its own (the probe
would slow the run and read low) and offers a button instead.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from app.common import scans
from app.train.values import replan_if_pending
from engine.config import RunConfig
from engine.errors import LoupeError
from engine.train.jobs import REPO_ROOT, engine_command, engine_env
from engine.train.timing import Estimate, Throughput, cached_throughput, duration, estimate_run, planned_shape

POLL_S = 1.0
PROBE_TIMEOUT_S = 600  # a probe that has not finished by then (a swapping machine) gives no estimate
K_ASKED, K_REFRESH, K_FAILED = "train.estimate.asked", "train.estimate.refresh", "train.estimate.failed"


def _config(values: dict) -> RunConfig | None:
    try:
        return RunConfig(**values).validate()
    except (LoupeError, TypeError, ValueError):
        return None


def section(values: dict, stats: dict | None, busy: bool) -> None:
    """The estimate for the form's `values` on the data described by `stats`; `busy`: a run is training."""
    cfg = _config(values)
    if stats is None or cfg is None:
        return
    try:
        size, channels = planned_shape(cfg, stats)
    except LoupeError:
        return  # the form shows the problem when Start is pressed
    multilabel = (cfg.task if cfg.task != "auto" else stats.get("task")) == "multilabel"
    ident = json.dumps(
        [
            cfg.model,
            size,
            channels,
            cfg.batch_size,
            cfg.strategy,
            cfg.head,
            cfg.device,
            cfg.precision,
            cfg.channels_last,
            multilabel,
        ]
    )
    refresh = st.session_state.get(K_REFRESH) == ident
    tp = None if refresh else cached_throughput(cfg, size, channels, multilabel)
    failed = st.session_state.setdefault(K_FAILED, {})
    with st.container(key="train-estimate"):
        if tp is None and ident in failed and not refresh:  # not probed again on every rerun; the user may retry
            with st.container(horizontal=True, vertical_alignment="center"):
                st.caption(f":material/timer: No time estimate: {failed[ident]}")
                if st.button("Try again", key="train.estimate.retry", type="tertiary"):
                    _measure_again(ident)
            return
        if tp is None:
            if busy and st.session_state.get(K_ASKED) != ident and not refresh:
                with st.container(horizontal=True, vertical_alignment="center"):
                    st.caption(
                        ":material/timer: Time estimate: a run is training on this device, and timing the "
                        "model now would slow it and read low."
                    )
                    if st.button("Time it anyway", key="train.estimate.ask", type="tertiary"):
                        st.session_state[K_ASKED] = ident
                        st.rerun()
                return
            key = ("timing", ident, st.session_state.get("train.estimate.round", 0))

            def work(progress: scans.Progress) -> Throughput:
                return probe_in_subprocess(cfg, refresh)

            task = scans.start(key, work)
            if not task.finished.is_set():
                st.fragment(run_every=POLL_S)(_waiting)(key, work, f"{cfg.model} at {size} px")
                return
            if task.error is not None:
                scans.forget(lambda k: k == key)
                st.session_state.pop(K_REFRESH, None)
                failed[ident] = str(task.error)
                st.caption(f":material/timer: No time estimate: {task.error}")
                return
            st.session_state.pop(K_REFRESH, None)
            tp = task.result
        replan_if_pending(ident)  # suggested epochs that waited for this timing are planned now
        show(estimate_run(cfg, stats, tp), tp, ident)


def probe_in_subprocess(cfg: RunConfig, refresh: bool = False) -> Throughput:
    """`python -m engine estimate` for `cfg`: the probe runs in its own process, so it neither changes this
    server's torch threads nor holds the server's GIL, and a server that exits mid-probe leaves no torch
    thread behind (the child finishes, caches its figures and exits)."""
    with tempfile.TemporaryDirectory(prefix="loupe-estimate-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg.to_dict()))
        args = ["estimate", "--config", str(config), "--json"] + (["--refresh"] if refresh else [])
        out = subprocess.run(
            engine_command(args),
            cwd=REPO_ROOT,
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        raise LoupeError(lines[-1] if lines else f"the timing probe exited with status {out.returncode}")
    return Throughput(**json.loads(out.stdout)["throughput"])


def _waiting(key: tuple, work: Callable[[scans.Progress], Throughput], what: str) -> None:
    """Shown while the probe runs; the page redraws once it has finished."""
    task = scans.start(key, work)  # attaches to the running task
    if task.finished.is_set():
        st.rerun()
    st.caption(f":material/timer: Timing {what} on this device (a few training steps)…")


def show(est: Estimate, tp: Throughput, ident: str) -> None:
    """The estimate in one line, the speeds it comes from, and a warning for a long CPU run."""
    where = "this CPU" if est.on_cpu else "this GPU"
    if est.linear_probe:
        line = f"**about {duration(est.total_seconds)}** in total on {where}: features computed once, then the head"
    else:
        line = (
            f"**about {duration(est.seconds_per_epoch)} per epoch**, **{duration(est.total_seconds)} in total** "
            f"on {where}"
        )
        if est.folds > 1:
            line += f" ({est.folds} folds)"
        if est.capped_by_budget:
            line += f"; {est.budget_note()}"
    st.markdown(f":material/timer: Estimated time: {line}.")
    plan = f"{est.train_images:,} training images and {est.val_images:,} validation images per epoch"
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"{plan}; {tp.describe()} on {tp.device}.")
        if st.button(
            "Measure again",
            key="train.estimate.again",
            type="tertiary",
            icon=":material/refresh:",
            help="Time the model again (the machine's load may have changed).",
        ):
            _measure_again(ident)
    if est.too_long_for_cpu:
        st.warning(
            f"This run would take about {duration(est.total_seconds)} on this CPU. For a first look, try "
            "the quick recipe for this dataset, a training-image limit, a smaller image size or model, or "
            "a time budget (Stopping).",
            icon=":material/hourglass_top:",
        )


def _measure_again(ident: str) -> None:
    """Probe this configuration again, ignoring its cached figures (and a failure shown before)."""
    st.session_state.get(K_FAILED, {}).pop(ident, None)
    st.session_state[K_REFRESH] = ident
    st.session_state["train.estimate.round"] = st.session_state.get("train.estimate.round", 0) + 1
    st.rerun()

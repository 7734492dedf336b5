"""The Evaluate page's comparison of runs on the same data: one row per run, the metrics that matter for
the task, every column visible at the app's default width (1400 px).

Why a fixed set of columns per task with set widths: a table that grows a column per metric pushes the
right-hand ones (HTER among them) out of sight behind a horizontal scroll. Rates are stored in percent
(numbers, so sorting a column sorts the values) and shown with two decimals, as `engine.metrics.display`
writes them everywhere else.
"""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from app.common import run_picker
from app.evaluate import binary as eval_binary
from app.evaluate import load
from engine.errors import LoupeError
from engine.metrics import display
from engine.runs.folder import Run

K_COMPARE = "eval.compare"
COMPARE_DEFAULT = 6
THIS_RUN = "● "  # marks the row of the run shown above the tabs

# (key in the evaluation, column header), per task, most telling first
COLUMNS = {
    "binary": [
        ("hter", "HTER"),
        ("eer", "EER"),
        ("balanced_accuracy", "Bal. acc."),
        ("accuracy", "Accuracy"),
        ("roc_auc", "ROC AUC"),
        ("pr_auc", "PR AUC"),
        ("log_loss", "Log loss"),
        ("ece", "ECE"),
    ],
    "multiclass": [
        ("accuracy", "Accuracy"),
        ("balanced_accuracy", "Bal. acc."),
        ("macro_f1", "Macro F1"),
        ("top3_accuracy", "Top-3 acc."),
        ("roc_auc", "ROC AUC"),
        ("pr_auc", "PR AUC"),
        ("log_loss", "Log loss"),
        ("ece", "ECE"),
    ],
    "multilabel": [
        ("subset_accuracy", "Subset acc."),
        ("micro_f1", "Micro F1"),
        ("macro_f1", "Macro F1"),
        ("hamming_loss", "Hamming"),
        ("roc_auc", "ROC AUC"),
        ("pr_auc", "PR AUC"),
        ("log_loss", "Log loss"),
        ("ece", "ECE"),
    ],
}
RUN_PX, THRESHOLD_PX, METRIC_PX = 180, 140, 72
TABLE_BUDGET_PX = 940  # the main column's width at a 1400 px window with the sidebar open

_RUN_ID = re.compile(r"^(\d{8})-(\d{4})\d{2}-(.+)-([0-9a-f]{4})$")


def short_name(run: Run, dataset: str | None) -> str:
    """A run's name short enough for a table cell: a generated id loses the dataset (every row shares it)
    and the seconds ("20261130-200540-small_cnn-fashion-binary-ae6d" -> "11-30 20:05 small_cnn ae6d")."""
    name = run_picker.run_name(run)
    m = _RUN_ID.match(name)
    if not m:
        return name
    day, hhmm, middle, tag = m.groups()
    slug = (dataset or "").split(":")[-1].rstrip("/").rsplit("/", 1)[-1]
    if slug and middle.endswith("-" + slug):
        middle = middle[: -len(slug) - 1]
    return f"{day[4:6]}-{day[6:]} {hhmm[:2]}:{hhmm[2:]} {middle} {tag}"


def threshold_text(res: dict, saved: bool) -> str:
    """Where a row's threshold came from, with its value: "0.4746 · val, min HTER", "0.3700 · saved, by hand"."""
    task = res.get("task")
    chosen = res.get("threshold_config") or {}
    rule = {"manual": "by hand"}.get(
        chosen.get("rule"), eval_binary.RULE_NAMES.get(chosen.get("rule"), chosen.get("rule") or "")
    )
    where = "saved" if saved else str(res.get("tuned_on") or "given")
    where += f", {rule}" if rule else ""
    if task == "binary":
        return f"{display.threshold(res.get('threshold'))} · {where}"
    return f"per label · {where}"


def row_of(res: dict, task: str) -> dict:
    """The metric values of one run's evaluation, by column header (rates in percent; None when missing)."""
    values = {}
    for key, header in COLUMNS[task]:
        if key == "ece":
            v = (res.get("calibration") or {}).get("ece")
        elif key == "top3_accuracy":
            v = (res.get("top_k") or {}).get("3")
        else:
            v = res.get(key)
        scale = 100.0 if display.is_rate(key) else 1.0
        values[header] = float(v) * scale if display.finite(v) else None
    return values


def column_config(task: str) -> dict:
    """Widths that fit the table in `TABLE_BUDGET_PX`, percentages for rates and 4 decimals for scores."""
    config = {"Run": st.column_config.TextColumn("Run", width=RUN_PX, help="● marks the run shown above")}
    if task != "multiclass":
        config["Threshold"] = st.column_config.TextColumn(
            "Threshold", width=THRESHOLD_PX, help="The threshold each run is evaluated at, and where it came from"
        )
    for key, header in COLUMNS[task]:
        fmt = "%.2f%%" if display.is_rate(key) else "%.4f"
        config[header] = st.column_config.NumberColumn(header, width=METRIC_PX, format=fmt, help=display.label(key))
    return config


def task_of(run: Run) -> str | None:
    """The run's task as training resolved it (config.json), None when it does not say."""
    task = run.config().get("task")
    return task if isinstance(task, str) else None


def section(run: Run, runs: list[Run], split: str, task: str) -> None:
    spec = load.dataset_spec(run)
    same_data = [r for r in runs if load.dataset_spec(r) == spec and split in load.splits_of(r)]
    # one task per table: a binary run's HTER beside a multi-class run's accuracy compares nothing
    peers = [r for r in same_data if task_of(r) in (task, None)]
    others = [r for r in same_data if r not in peers]
    if others:
        st.warning(
            f"Left out {len(others):,} run{'s' * (len(others) != 1)} on the same data with another task ("
            + ", ".join(sorted({str(task_of(r)) for r in others}))
            + f"): their metrics are not comparable with this **{task}** run's.",
            icon=":material/compare_arrows:",
        )
    by_id = {r.id: r for r in peers}
    key = f"{K_COMPARE}.{spec}.{split}"
    if key not in st.session_state:
        st.session_state[key] = [r.id for r in peers[:COMPARE_DEFAULT]]
    st.session_state[key] = [i for i in st.session_state[key] if i in by_id] or [run.id]
    how = {
        "binary": "each at its own threshold: the one saved with the run, else the one tuned on val (the run above "
        "shows the threshold on its slider, which may differ)",
        "multilabel": "each at its own per-label thresholds: the ones saved with the run, else the ones tuned on val",
    }.get(task, "the most probable class as the prediction")
    st.caption(
        f"Runs on `{spec}` scored on **{split}**, {how}. {THIS_RUN.strip()} marks the run shown above. "
        "Click a column header to sort."
    )
    picked = st.multiselect("Runs", list(by_id), key=key, format_func=lambda i: run_picker.run_label(by_id[i]))
    rows = []
    for rid in picked:
        r = by_id[rid]
        try:
            res = load.evaluation(r, split, load.tune_split_for(load.splits_of(r)), bootstrap=0)
        except LoupeError as e:
            st.caption(f"{run_picker.run_name(r)}: {e}")
            continue
        row = {"Run": (THIS_RUN if r.id == run.id else "") + short_name(r, spec)}
        if task != "multiclass":
            row["Threshold"] = threshold_text(res, load.has_saved_thresholds(r))
        row.update(row_of(res, task))
        rows.append(row)
    if not rows:
        return
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="eval.compare_table",
        column_config=column_config(task),
        placeholder=display.MISSING,
    )

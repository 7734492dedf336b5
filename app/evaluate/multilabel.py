"""Multi-label thresholds: one per label, editable in a table that shows each label's precision, recall,
F1 and support at its threshold (recomputed from the stored scores); 'tune all on val'; save.

The thresholds in this table are the ones in force for the whole page (the cards above the tabs follow
them); where they came from (tuned on val, saved with the run, edited by hand) is kept beside them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.evaluate import load
from engine import evaluate as ev
from engine.errors import LoupeError
from engine.metrics import display
from engine.runs.folder import Run


def k_thresholds(run: Run) -> str:
    return f"eval.ml_thresholds.{run.id}"


def k_version(run: Run) -> str:
    return f"eval.ml_version.{run.id}"


def k_source(run: Run) -> str:
    return f"eval.ml_source.{run.id}"


def initial(run: Run, res: dict, n: int) -> list[float]:
    saved = load.saved_thresholds(run).get("multilabel")
    if isinstance(saved, (list, tuple)) and len(saved) == n:
        st.session_state[k_source(run)] = "saved"
        return [float(v) for v in saved]
    tuned = res.get("thresholds")
    st.session_state[k_source(run)] = "tuned" if res.get("tuned_on") else "default"
    if isinstance(tuned, dict) and len(tuned) == n:
        return [float(v) for v in tuned.values()]
    if isinstance(tuned, (list, tuple)) and len(tuned) == n:
        return [float(v) for v in tuned]
    st.session_state[k_source(run)] = "default"
    return [0.5] * n


def in_force(run: Run, res: dict, n: int, tune_split: str | None) -> tuple[list[float], str]:
    """The per-label thresholds every number on the page is counted at, and where they came from."""
    key = k_thresholds(run)
    if key not in st.session_state:
        st.session_state[key] = initial(run, res, n)
    source = st.session_state.get(k_source(run), "hand")
    words = {
        "saved": "saved with the run",
        "tuned": f"tuned on **{tune_split}** for the best F1 of each label",
        "hand": "edited by hand on the Thresholds tab",
        "default": "the default 0.5 for every label",
    }
    return [float(v) for v in st.session_state[key]], words.get(source, words["hand"])


def per_label(probs: np.ndarray, labels: np.ndarray, thresholds: list[float]) -> dict[str, np.ndarray]:
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs) >= np.asarray(thresholds)[None, :]
    tp = (p & y).sum(0).astype(float)
    fp = (p & ~y).sum(0).astype(float)
    fn = (~p & y).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": y.sum(0)}


def _apply_edits(run: Run, editor_key: str) -> None:
    edits = (st.session_state.get(editor_key) or {}).get("edited_rows", {})
    ts = list(st.session_state[k_thresholds(run)])
    for row, change in edits.items():
        if "threshold" in change and change["threshold"] is not None:
            ts[int(row)] = float(min(1.0, max(0.0, change["threshold"])))
    st.session_state[k_thresholds(run)] = ts
    st.session_state[k_source(run)] = "hand"
    st.session_state[k_version(run)] = st.session_state.get(k_version(run), 0) + 1


def panel(run: Run, pred, res: dict, split: str, tune_split: str | None) -> None:
    st.subheader("Per-label thresholds")
    st.caption(
        f"One threshold per label; a label is predicted when its score ≥ its threshold. Scores on **{split}**; "
        f"'Tune all' picks, per label, the threshold with the best F1 on **{tune_split or split}**."
    )
    classes = list(pred.classes)
    key = k_thresholds(run)
    if key not in st.session_state:
        st.session_state[key] = initial(run, res, len(classes))
    ts = st.session_state[key]
    stats = per_label(pred.probs, pred.labels, ts)
    # rates in percent, written with two decimals like every rate on the page (engine.metrics.display)
    frame = pd.DataFrame(
        {
            "label": classes,
            "threshold": ts,
            "precision": stats["precision"] * 100,
            "recall": stats["recall"] * 100,
            "F1": stats["f1"] * 100,
            "support": stats["support"].astype(int),
        }
    )
    editor_key = f"eval.ml_editor.{run.id}.{st.session_state.get(k_version(run), 0)}"
    st.data_editor(
        frame,
        key=editor_key,
        hide_index=True,
        disabled=["label", "precision", "recall", "F1", "support"],
        on_change=_apply_edits,
        args=(run, editor_key),
        column_config={
            "threshold": st.column_config.NumberColumn(
                "threshold",
                min_value=0.0,
                max_value=1.0,
                step=0.01,
                format="%.4f",
                help="Edit to move this label's threshold",
            ),
            "precision": st.column_config.NumberColumn(format="%.2f%%"),
            "recall": st.column_config.NumberColumn(format="%.2f%%"),
            "F1": st.column_config.NumberColumn(format="%.2f%%"),
        },
    )
    micro = _micro_f1(pred.probs, pred.labels, ts)
    st.caption(
        f"At these thresholds on {split}: micro F1 {display.percent(micro)} · "
        f"macro F1 {display.percent(float(np.mean(stats['f1'])))}. The cards above the tabs follow these thresholds."
    )
    with st.container(horizontal=True):
        if st.button(
            "Tune all on val" if tune_split == "val" else f"Tune all on {tune_split}",
            key="eval.ml_tune",
            icon=":material/tune:",
            disabled=tune_split is None,
        ):
            try:
                tuned = load.tuned(run, "f1", tune_split)
            except (LoupeError, ValueError, KeyError) as e:
                st.error(f"Could not tune: {e}")
            else:
                st.session_state[key] = [float(v) for v in tuned.get("multilabel", ts)]
                st.session_state[k_source(run)] = "tuned"
                st.session_state[k_version(run)] = st.session_state.get(k_version(run), 0) + 1
                st.rerun()
        if st.button("Save thresholds to run", type="primary", icon=":material/save:", key="eval.ml_save"):
            try:
                ev.save_thresholds(run, {"multilabel": [float(v) for v in ts], "tuned_on": tune_split or split})
            except (LoupeError, OSError, ValueError) as e:
                st.error(f"Could not save the thresholds: {e}")
            else:
                st.session_state[k_source(run)] = "saved"
                st.toast(f"Saved {len(ts)} thresholds to {run.id}", icon=":material/save:")


def _micro_f1(probs, labels, ts) -> float:
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs) >= np.asarray(ts)[None, :]
    tp, fp, fn = (p & y).sum(), (p & ~y).sum(), (~p & y).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0

"""Multi-label thresholds: one per label, editable in a table that shows each label's precision, recall,
F1 and support at its threshold (recomputed from the stored scores); 'tune all on val'; save.

The thresholds in this table are the ones in force for the whole page (the cards above the tabs follow
them); where they came from (tuned on val, saved with the run, edited by hand) is kept beside them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.evaluate import load
from engine import evaluate as ev
from engine.errors import LoupeError
from engine.metrics import display
from engine.runs.folder import Run

STEP = 0.0001  # thresholds are typed, kept and shown to 4 decimals, as `engine.metrics.display.threshold` writes them


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
    """The per-label thresholds every number on the page is counted at, and where they came from (with
    "edited, not saved" when they are not the ones saved with the run, which Predict and export use)."""
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
    ts = [float(v) for v in st.session_state[key]]
    where = words.get(source, words["hand"])
    if unsaved(run, ts):
        where += " (**edited, not saved**)" if source == "hand" else " (**not saved**)"
    return ts, where


def saved(run: Run) -> list[float] | None:
    """The per-label thresholds saved with the run (thresholds.json), or None."""
    values = load.saved_thresholds(run).get("multilabel")
    return [float(v) for v in values] if isinstance(values, (list, tuple)) else None


def unsaved(run: Run, ts: list[float]) -> bool:
    """Whether the thresholds in force differ from the saved ones (or none are saved): what the page shows
    is then not what Predict, export and the CLI decide with."""
    kept = saved(run)
    return kept is None or len(kept) != len(ts) or any(abs(a - b) > 1e-12 for a, b in zip(kept, ts))


def _apply_edits(run: Run, editor_key: str) -> None:
    """The table's edits into the thresholds in force, as typed: the cell keeps 4 decimals (`STEP`; at 0.01 the
    browser's number editor rounded a typed 0.5894 to 0.59, and showed every threshold rounded so)."""
    edits = (st.session_state.get(editor_key) or {}).get("edited_rows", {})
    ts = list(st.session_state[k_thresholds(run)])
    for row, change in edits.items():
        value = change.get("threshold")
        if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:  # the column's bounds; NaN fails them too
            ts[int(row)] = float(value)
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
    ts = [float(v) for v in st.session_state[key]]
    # the report the cards and the Labels chart read (one count of the decisions at these thresholds)
    rep = load.report_at(run, split, {"multilabel": ts})
    rows = rep["per_label"]
    # rates in percent, written with two decimals like every rate on the page (engine.metrics.display)
    frame = pd.DataFrame(
        {
            "label": classes,
            "threshold": ts,
            "precision": [r["precision"] * 100 for r in rows],
            "recall": [r["recall"] * 100 for r in rows],
            "F1": [r["f1"] * 100 for r in rows],
            "support": [int(r["support"]) for r in rows],
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
                step=STEP,
                format="%.4f",
                help="Type a number between 0 and 1 to move this label's threshold (4 decimals kept; every view on "
                "the page follows)",
            ),
            "precision": st.column_config.NumberColumn(format="%.2f%%"),
            "recall": st.column_config.NumberColumn(format="%.2f%%"),
            "F1": st.column_config.NumberColumn(format="%.2f%%"),
        },
    )
    st.caption(
        f"At these thresholds on {split}: micro F1 {display.format_metric('micro_f1', rep.get('micro_f1'))} · "
        f"macro F1 {display.format_metric('macro_f1', rep.get('macro_f1'))}. The cards above the tabs and the "
        "Labels tab follow these thresholds."
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
        clicked = st.button("Save thresholds to run", type="primary", icon=":material/save:", key="eval.ml_save")
    state_line(run, ts)
    if clicked:
        data = save_data(run, ts, tune_split)
        try:
            ev.save_thresholds(run, data)
        except (LoupeError, OSError, ValueError) as e:
            st.error(f"Could not save the thresholds: {e}")
        else:
            st.session_state[k_source(run)] = "saved"
            st.toast(f"Saved {len(ts)} thresholds to {run.id}", icon=":material/save:")
            st.rerun()


def state_line(run: Run, ts: list[float]) -> None:
    """Whether the thresholds in force are the saved ones: an explicit "edited, not saved" otherwise."""
    if unsaved(run, ts):
        kept = saved(run)
        what = "the saved thresholds" if kept is not None else "0.5 for every label (nothing is saved yet)"
        st.warning(
            f"**{'Edited, not saved' if st.session_state.get(k_source(run)) == 'hand' else 'Not saved'}.** Every figure on this page is counted at the thresholds above; Predict, export "
            f"and the CLI still decide with {what} until you save.",
            icon=":material/edit_note:",
        )
    else:
        st.caption("Saved with the run: Predict, export and the CLI decide with these thresholds.")


def save_data(run: Run, ts: list[float], tune_split: str | None) -> dict:
    """thresholds.json for the thresholds in force: tuned on `tune_split` by the best-F1 rule when they are the
    tuned ones, "manual" when edited by hand; an earlier saved temperature is kept."""
    source = st.session_state.get(k_source(run), "hand")
    previous = load.saved_thresholds(run)
    if source == "tuned":
        rule, where = "f1", tune_split
    elif source == "saved" and not unsaved(run, ts):
        rule, where = previous.get("rule", "manual"), previous.get("tuned_on", "manual")
    else:
        rule, where = "manual", "manual"
    data = {"multilabel": [float(v) for v in ts], "rule": rule, "tuned_on": where}
    if previous.get("temperature") is not None:
        data["temperature"] = previous["temperature"]
    return data

"""The binary threshold panel: a slider with FAR / FRR / HTER / F1 recomputed live from the stored
scores, FAR-FRR-HTER, DET and ROC curves with the operating point, buttons that move the threshold to
the one tuned on val by a rule, and saving the threshold to the run (thresholds.json).

The slider's value is the threshold in force for the whole page: the metric cards above the tabs, the
confusion matrix and the galleries all decide at it. Where it came from (a rule tuned on val, the
thresholds saved with the run, or a hand on the slider) is kept beside it, so the page can say so.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app.evaluate import charts as eval_charts
from app.evaluate import load
from engine import evaluate as ev
from engine.errors import LoupeError
from engine.metrics import decide, display
from engine.runs.folder import Run

# rule names as `engine.evaluate.thresholds.tune_thresholds` knows them, and the button for each
RULES = {"min_hter": "Use min-HTER threshold", "f1": "Use F1-optimal", "eer": "Use EER"}
RULE_NAMES = {"min_hter": "min HTER", "f1": "best F1", "eer": "EER", "manual": "chosen by hand"}
STEP = 0.001
# where the threshold in force came from
TUNED, SAVED, HAND, DEFAULT = "tuned", "saved", "hand", "default"


def k_threshold(run: Run) -> str:
    return f"eval.threshold.{run.id}"


def k_rule(run: Run) -> str:
    return f"eval.threshold_rule.{run.id}"


def k_source(run: Run) -> str:
    return f"eval.threshold_source.{run.id}"


def tuned_threshold(run: Run, rule: str, tune_split: str) -> float | None:
    try:
        t = load.tuned(run, rule, tune_split)
    except (LoupeError, ValueError, KeyError) as e:
        st.session_state[f"eval.tune_error.{run.id}"] = str(e)
        return None
    value = t.get("binary", t.get("threshold")) if isinstance(t, dict) else t
    return float(value) if value is not None else None


def initial_threshold(run: Run, res: dict) -> tuple[float, str, str]:
    """(threshold, rule, source): the saved threshold when the run has one, else the one evaluate_run tuned,
    else 0.5."""
    saved = load.saved_thresholds(run)
    if saved.get("binary") is not None:
        return float(saved["binary"]), saved.get("rule") or "manual", SAVED
    if res.get("threshold") is not None:
        return float(res["threshold"]), res.get("rule") or "min_hter", TUNED if res.get("tuned_on") else DEFAULT
    return 0.5, "manual", DEFAULT


def current_threshold(run: Run, res: dict) -> float:
    """The slider's value (set up on first use), readable before the slider is drawn."""
    key = k_threshold(run)
    if key not in st.session_state:
        t, rule, source = initial_threshold(run, res)
        st.session_state[key], st.session_state[k_rule(run)] = _clamp(t), rule
        st.session_state[k_source(run)] = source
    return float(st.session_state[key])


def in_force(run: Run, res: dict, tune_split: str | None) -> tuple[float, str]:
    """The threshold every number on the page is counted at, and a sentence saying where it came from
    ("the min-HTER rule, tuned on **val**"; "saved with the run (chosen by hand)"; "moved by hand ...")."""
    t = current_threshold(run, res)
    rule = st.session_state.get(k_rule(run), "manual")
    source = st.session_state.get(k_source(run), HAND if rule == "manual" else TUNED)
    rule_name = RULE_NAMES.get(rule, rule)
    if source == TUNED:
        return t, f"the {rule_name} rule, tuned on **{tune_split}**"
    if source == SAVED:
        saved = load.saved_thresholds(run)
        where = saved.get("tuned_on")
        how = rule_name if rule == "manual" or where in (None, "manual") else f"{rule_name}, tuned on **{where}**"
        return t, f"saved with the run ({how})" + (" (**edited, not saved**)" if unsaved(run, t) else "")
    if source == HAND:
        ref = tuned_threshold(run, "min_hter", tune_split) if tune_split else None
        tail = (
            f" (the min-HTER threshold tuned on **{tune_split}** is {display.threshold(ref)})"
            if ref is not None
            else ""
        )
        return t, "moved by hand on the Threshold tab" + tail + (" (**edited, not saved**)" if unsaved(run, t) else "")
    return t, "the default (no threshold could be tuned)"


def unsaved(run: Run, t: float) -> bool:
    """Whether the threshold in force differs from the one saved with the run (or none is saved): what the page
    shows is then not what Predict, export and the CLI decide with."""
    kept = load.saved_thresholds(run).get("binary")
    return kept is None or abs(float(kept) - float(t)) > 1e-12


def _clamp(value: float) -> float:
    """Into the slider's range (a reject-all threshold sits just above the top score, which may be 1)."""
    return min(1.0, max(0.0, float(value)))


def _use(run: Run, value: float, rule: str) -> None:
    st.session_state[k_threshold(run)] = _clamp(value)
    st.session_state[k_rule(run)] = rule
    st.session_state[k_source(run)] = TUNED


def _moved(run: Run) -> None:
    st.session_state[k_rule(run)] = "manual"
    st.session_state[k_source(run)] = HAND


def predicted(pred, threshold: float) -> np.ndarray:
    """Class decisions at `threshold`: the positive class when its score >= t."""
    return decide(pred.probs, "binary", int(pred.positive), threshold)


def live_metrics(pred, threshold: float) -> dict:
    """`metrics_at` plus the positive class's F1 (from the confusion matrix at that threshold)."""
    m = dict(ev.metrics_at(pred.labels, pred.probs, pred.task, pred.positive, threshold))
    cm = np.asarray(m.get("confusion_matrix") or [[0, 0], [0, 0]], dtype=float)
    p = int(pred.positive)
    tp, fp, fn = cm[p, p], cm[1 - p, p], cm[p, 1 - p]
    m.setdefault("f1", float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0)
    return m


def panel(run: Run, pred, res: dict, split: str, tune_split: str | None) -> None:
    st.subheader("Decision threshold")
    positive = pred.classes[int(pred.positive)]
    st.caption(
        f"Score = P({positive}); an image is accepted as **{positive}** when its score ≥ threshold. "
        f"Rates below are on the **{split}** split; the buttons use thresholds tuned on "
        f"**{tune_split or split}**."
    )
    t = current_threshold(run, res)
    tuned = {rule: tuned_threshold(run, rule, tune_split or split) for rule in RULES}
    with st.container(horizontal=True, vertical_alignment="bottom"):
        for rule, label in RULES.items():
            value = tuned[rule]
            st.button(
                f"{label}" + (" (tuned on val)" if rule == "min_hter" and tune_split == "val" else ""),
                key=f"eval.use.{rule}",
                disabled=value is None,
                on_click=_use,
                args=(run, value, rule),
                help=f"Threshold {display.threshold(value)}, chosen on {tune_split}"
                if value is not None
                else "Could not tune",
            )
    st.slider(
        "Threshold",
        0.0,
        1.0,
        step=STEP,
        format="%.4f",  # the precision thresholds are shown, saved and applied at (engine.metrics.display)
        key=k_threshold(run),
        on_change=_moved,
        args=(run,),
        help="Moves the operating point; every number and chart on the page follows it, the cards above the "
        "tabs included (counted from the stored scores).",
    )
    t = float(st.session_state[k_threshold(run)])
    m = live_metrics(pred, t)
    ref_t = tuned.get("min_hter")
    ref = live_metrics(pred, ref_t) if ref_t is not None else None
    cols = st.columns(5)
    for col, key, label, lower_better in (
        (cols[0], "far", "FAR", True),
        (cols[1], "frr", "FRR", True),
        (cols[2], "hter", "HTER", True),
        (cols[3], "f1", "F1", False),
        (cols[4], "accuracy", "Accuracy", False),
    ):
        value = m.get(key)
        delta = None
        if ref is not None and display.finite(value) and display.finite(ref.get(key)) and abs(value - ref[key]) > 1e-12:
            delta = display.format_delta(key, value - ref[key])
        col.metric(
            label,
            display.format_metric(key, value),
            delta=delta,
            delta_color="inverse" if lower_better else "normal",
            border=True,
        )
    rule = st.session_state.get(k_rule(run), "manual")
    versus = (
        f" Arrows: change from the min-HTER threshold tuned on {tune_split or split} ({display.threshold(ref_t)})."
        if ref_t is not None
        else ""
    )
    st.caption(
        f"Threshold {display.threshold(t)} ({RULE_NAMES.get(rule, rule)}). FAR = false accepts / negatives; "
        f"FRR = false rejects / positives; HTER = (FAR + FRR) / 2.{versus}"
    )
    save_row(run, pred, t, rule, tune_split)
    charts(run, pred, res, split, t, m)


def save_row(run: Run, pred, t: float, rule: str, tune_split: str | None) -> None:
    saved = load.saved_thresholds(run)
    with st.container(horizontal=True, vertical_alignment="center"):
        clicked = st.button(
            "Save threshold to run",
            type="primary",
            icon=":material/save:",
            key="eval.save_threshold",
            help="Writes thresholds.json in the run folder; predictions and the CLI use it from then on.",
        )
        if saved.get("binary") is not None and unsaved(run, t):
            st.caption(
                f"**Edited, not saved**: the page counts at {display.threshold(t)}; Predict, export and the CLI "
                f"still decide at the saved {display.threshold(saved['binary'])}."
            )
        elif saved.get("binary") is not None:
            rule_name = RULE_NAMES.get(saved.get("rule"), saved.get("rule") or RULE_NAMES["manual"])
            where = saved.get("tuned_on")
            st.caption(
                f"Saved: {display.threshold(saved['binary'])} ({rule_name}"
                + (f", tuned on {where}" if where not in (None, "manual") else "")
                + ")."
            )
        else:
            st.caption(
                f"**Not saved**: the page counts at {display.threshold(t)}; Predict, export and the CLI decide at "
                "0.5 until you save."
            )
    if clicked:
        data = {
            "binary": float(t),
            "positive_class": int(pred.positive),
            "rule": rule,
            "tuned_on": tune_split if rule != "manual" else "manual",
        }
        if saved.get("temperature") is not None:
            data["temperature"] = saved["temperature"]
        try:
            ev.save_thresholds(run, data)
        except (LoupeError, OSError, ValueError) as e:
            st.error(f"Could not save the threshold: {e}")
            return
        st.session_state[k_source(run)] = SAVED
        st.toast(f"Saved threshold {display.threshold(t)} to {run.id}", icon=":material/save:")
        st.rerun()


def charts(run: Run, pred, res: dict, split: str, t: float, m: dict) -> None:
    curves = load.curves(run, split)
    marks = {}
    if res.get("eer") is not None and res.get("eer_threshold") is not None:
        marks["eer"] = (res["eer_threshold"], res["eer"])
    if res.get("min_hter") is not None and res.get("min_hter_threshold") is not None:
        marks["min_hter"] = (res["min_hter_threshold"], res["min_hter"])
    far, frr = m.get("far"), m.get("frr")
    op = (far, frr) if far is not None and frr is not None else None
    st.plotly_chart(eval_charts.threshold_curves(curves, t, marks), key="eval.chart.threshold")
    st.caption(
        f"EER and min-HTER marked as found on {split}: they are where the {split} split would be best, "
        "not thresholds to report."
    )
    left, right = st.columns(2)
    left.plotly_chart(eval_charts.det_curve(curves, op), key="eval.chart.det")
    right.plotly_chart(
        eval_charts.roc_curve(curves, (far, 1 - frr) if op else None, res.get("auc", res.get("roc_auc"))),
        key="eval.chart.roc",
    )
    rates = [(k, v) for k, v in (("FRR at FAR", res.get("frr_at_far")), ("FAR at FRR", res.get("far_at_frr"))) if v]
    if rates:
        st.caption(
            " · ".join(f"{name} {_target(at)}: {display.percent(v)}" for name, d in rates for at, v in d.items())
            + f" (on {split})."
        )


def _target(at: object) -> str:
    """A target rate of the report's operating points ("0.01" -> "1.00%")."""
    try:
        return display.percent(float(at))
    except (TypeError, ValueError):
        return str(at)

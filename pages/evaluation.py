"""Evaluate page (`/evaluation`): a finished run's stored predictions -> metrics with confidence intervals, confusion
matrix with its images, per-class scores, threshold tuning (binary / multi-label), top losses and
likely mislabelled images, calibration, and a comparison of runs on the same data.

Nothing re-runs the model: everything reads predictions/<split>.npz through `engine.evaluate.report`, cached
per run folder and file modification times, so sliders answer instantly. The run lives in `?run=`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.common import run_picker
from app.common.sidebar import draw_frame
from app.evaluate import binary as eval_binary
from app.evaluate import charts, compare, gallery, load
from app.evaluate import multilabel as eval_multilabel
from app.train.form import control
from engine import metrics as M
from engine.errors import LoupeError
from engine.evaluate import most_confused
from engine.metrics import display
from engine.runs.folder import Run

K_NORM = "eval.cm_normalised"


# --- choosing the split ------------------------------------------------------------------------------


def pick_split(run: Run, splits: list[str]) -> str:
    key = f"eval.split.{run.id}"
    if st.session_state.get(key) not in splits:
        st.session_state[key] = "test" if "test" in splits else splits[0]
    return st.radio(
        "Reported on",
        splits,
        key=key,
        horizontal=True,
        format_func=lambda s: load.SPLIT_NAMES.get(s, s),
        help="The split whose predictions are scored. Thresholds are tuned on val.",
    )


LEVELS = {"fine": "Fine classes", "coarse": "Coarse classes"}


def pick_level(run: Run, pred) -> str:
    """Two-level runs: which level the page reports (the cards, the confusion matrix, the galleries)."""
    if pred.hierarchy is None:
        return "fine"
    return (
        st.segmented_control(
            "Level",
            list(LEVELS),
            key=f"eval.level.{run.id}",
            default="fine",
            format_func=LEVELS.get,
            help="Coarse: each coarse class's probability is the sum of its fine classes' probabilities, and the "
            "prediction is the coarse class with the largest sum (it can differ from the coarse class of the fine "
            "prediction).",
        )
        or "fine"
    )


def coarse_caption(res: dict) -> None:
    members = res.get("members") or {}
    st.caption(
        f"Coarse level: {len(members)} classes ("
        + "; ".join(f"**{c}**: {', '.join(fs)}" for c, fs in members.items())
        + "). P(coarse class) = the sum of its fine classes' P; predicted by the largest sum. "
        "The model was trained on the fine classes."
    )


# --- the top: protocol and metric cards ------------------------------------------------------------

CARDS = {
    "binary": [
        ("accuracy", "Accuracy"),
        ("balanced_accuracy", "Balanced accuracy"),
        ("macro_f1", "Macro F1"),
        ("hter", "HTER"),
        ("roc_auc", "ROC AUC"),
        ("log_loss", "Log loss"),
    ],
    "multiclass": [
        ("accuracy", "Accuracy"),
        ("balanced_accuracy", "Balanced accuracy"),
        ("macro_f1", "Macro F1"),
        ("top3_accuracy", "Top-3 accuracy"),
        ("roc_auc", "ROC AUC (one-vs-rest)"),
        ("log_loss", "Log loss"),
    ],
    "multilabel": [
        ("subset_accuracy", "Subset accuracy"),
        ("micro_f1", "Micro F1"),
        ("macro_f1", "Macro F1"),
        ("samples_f1", "Samples F1"),
        ("hamming_loss", "Hamming loss"),
        ("roc_auc", "ROC AUC (macro)"),
    ],
}
CARDS_PER_ROW = 3  # wide enough for a value and its whole "95% CI lo–hi" badge at 1400 px
# what each card means; the ones that do not depend on the threshold say so
CARD_HELP = {
    "accuracy": "Share of images whose predicted class is the true one.",
    "balanced_accuracy": "Mean of the per-class recalls: every class counts the same, however rare.",
    "macro_f1": "Mean of the per-class F1 scores.",
    "hter": "Half total error rate: (FAR + FRR) / 2.",
    "top3_accuracy": "Share of images whose true class is among the 3 most probable; no threshold involved.",
    "roc_auc": "How well the scores rank each class above the others; does not depend on the threshold.",
    "log_loss": "Mean −log P(true class): lower is better; does not depend on the threshold.",
    "subset_accuracy": "Share of images whose whole set of labels is exactly right.",
    "micro_f1": "F1 over every (image, label) decision pooled.",
    "samples_f1": "F1 per image, averaged over images.",
    "hamming_loss": "Share of (image, label) decisions that are wrong: lower is better.",
}
THRESHOLD_FREE = {"roc_auc", "log_loss", "top3_accuracy"}


def _value(res: dict, key: str):
    if key == "top3_accuracy":
        return (res.get("top_k") or {}).get("3")
    return res.get(key)


def at_threshold_in_force(run: Run, pred, res: dict, split: str, tune_split: str | None) -> tuple[dict, str]:
    """The report counted at the threshold in force (the Threshold tab's slider, which starts on the saved
    or the val-tuned threshold), and the sentence that says which threshold that is and where it came from.

    Why: the cards above the tabs must show the numbers of the decisions the rest of the page shows. The
    threshold-free figures (AUC, log loss, calibration, the curves) stay those of `res`.
    """
    if pred.task == "binary":
        t, source = eval_binary.in_force(run, res, tune_split)
        at = load.report_at(run, split, {"binary": t})
        return {**res, **at}, f"At threshold **{display.threshold(t)}**: {source}"
    if pred.task == "multilabel":
        ts, source = eval_multilabel.in_force(run, res, len(pred.classes), tune_split)
        at = load.report_at(run, split, {"multilabel": ts})
        return {**res, **at}, f"At per-label thresholds {source}"
    return res, "The prediction is the most probable class (no threshold)"


def protocol(res: dict, where: str) -> None:
    reported_on = res.get("reported_on")
    follow = {
        "binary": " The cards, the confusion matrix and the galleries follow the threshold on the **Threshold** tab.",
        "multilabel": " The cards follow the thresholds on the **Thresholds** tab.",
    }.get(res.get("task"), "")
    temperature = (
        f" Temperature fitted on **{res['tuned_on']}**."
        if res.get("task") == "multiclass" and res.get("tuned_on")
        else ""
    )
    st.caption(
        f"{where}; reported on **{reported_on}** ({res.get('n', 0):,} images).{follow}{temperature} "
        "Intervals: 95% bootstrap."
    )
    if res.get("optimistic"):
        st.warning(
            f"Optimistic: thresholds were tuned on the same split they are reported on (**{reported_on}**), "
            "so these figures flatter the model. Report on test for an honest estimate.",
            icon=":material/warning:",
        )


def cards(res: dict) -> None:
    """The headline metrics, in rows of `CARDS_PER_ROW` so each card's interval badge shows whole."""
    ci = res.get("ci") or {}
    shown = CARDS.get(res.get("task"), CARDS["multiclass"])
    if res.get("level") == "coarse":  # a few coarse classes may have no top-3: a card reading n/a says nothing
        shown = [(k, label) for k, label in shown if k != "top3_accuracy" or _value(res, k) is not None]
    for start in range(0, len(shown), CARDS_PER_ROW):
        cols = st.columns(CARDS_PER_ROW)
        for col, (key, label) in zip(cols, shown[start : start + CARDS_PER_ROW]):
            band = display.interval(key, ci.get(key))
            col.metric(
                label,
                display.format_metric(key, _value(res, key)),
                border=True,
                help=CARD_HELP.get(key),
                delta=f"95% CI {band}" if band != display.MISSING else None,
                delta_color="off",
                delta_arrow="off",
            )


# --- classes: confusion matrix, the images of a cell, per-class scores ----------------------------


def _cell_clicked(chart_key: str, cell_key: str) -> None:
    selection = (st.session_state.get(chart_key) or {}).get("selection") or {}
    for point in selection.get("points") or []:
        cell = charts.cell_of(point)
        if cell is not None:
            st.session_state[cell_key] = f"{cell[0]},{cell[1]}"
            return


def classes_section(run: Run, pred, res: dict, split: str) -> None:
    classes = list(pred.classes)
    if pred.task == "binary":
        t = eval_binary.current_threshold(run, res)
        predicted = eval_binary.predicted(pred, t)
        cm = M.confusion_matrix(pred.labels.astype(np.int64), predicted, len(classes))
        pc = M.per_class(cm)
        rows = [
            {
                "class": c,
                "precision": float(pc["precision"][i]),
                "recall": float(pc["recall"][i]),
                "f1": float(pc["f1"][i]),
                "support": int(pc["support"][i]),
            }
            for i, c in enumerate(classes)
        ]
        confused = most_confused(cm, classes)
        st.caption(f"At the threshold on the Threshold tab ({display.threshold(t)}).")
    else:
        predicted = np.asarray(pred.probs).argmax(axis=1)
        cm = np.asarray(res["confusion_matrix"])
        rows, confused = res.get("per_class") or [], res.get("most_confused") or []
    left, right = st.columns([3, 2], gap="large")
    with left:
        normalised = st.toggle(
            "Share of each true class", key=K_NORM, help="Rows sum to 100%: each cell is a recall / miss rate"
        )
        shown = M.normalise_cm(cm) if normalised else cm
        level = "" if pred.level == "fine" else f".{pred.level}"  # a cell of one level is not a cell of the other
        cell_key = f"eval.cell.{run.id}.{split}{level}"
        chart_key = f"eval.chart.cm.{run.id}.{split}{level}"
        cells = [f"{i},{j}" for i in range(len(classes)) for j in range(len(classes))]
        if st.session_state.get(cell_key) not in cells:
            st.session_state.pop(cell_key, None)
        chosen = st.session_state.get(cell_key)
        sel = tuple(int(v) for v in chosen.split(",")) if chosen else None
        st.plotly_chart(
            charts.confusion_heatmap(shown, classes, normalised, sel, counts=cm),
            key=chart_key,
            on_select=lambda: _cell_clicked(chart_key, cell_key),
            selection_mode="points",
        )
    with right:
        st.markdown("##### Most confused pairs")
        if confused:
            # a static table: long class names wrap in its cells instead of being clipped
            pairs = [
                {
                    "True": gallery.breakable(m["true"]),
                    "Predicted as": gallery.breakable(m["predicted"]),
                    "Images": f"{int(m['count']):,}",
                }
                for m in confused
            ]
            st.table(pd.DataFrame(pairs), hide_index=True)
        else:
            st.caption("No mistakes on this split.")
        st.selectbox(
            "Show the images of a cell",
            cells,
            key=cell_key,
            index=None,
            placeholder="Click a cell, or choose one",
            format_func=lambda c: "true {} → predicted {}".format(*(classes[int(v)] for v in c.split(","))),
        )
    if chosen:
        i, j = (int(v) for v in chosen.split(","))
        items, total = gallery.cell_items(pred, predicted, i, j)
        st.markdown(
            f"##### True **{classes[i]}**, predicted **{classes[j]}**: {total:,} image{'s' * (total != 1)}"
            + (f" (the {len(items)} most confident shown)" if total > len(items) else "")
        )
        gallery.show(gallery.dataset_of(run), items, classes, key="eval.cell_gallery", run_id=run.id)
    bars, numbers = st.columns([3, 2], gap="large")
    bars.plotly_chart(charts.per_class_bars(rows), key="eval.chart.per_class")
    with numbers:
        st.markdown("##### Per class")
        st.table(per_class_table(rows), hide_index=True)
        st.caption("Support: the images of each class on this split. Balanced accuracy is the mean of the recalls.")


def per_class_table(rows: list[dict]) -> pd.DataFrame:
    """The bars' numbers, written as every rate on the page is (percentages with 2 decimals; long names wrap)."""
    return pd.DataFrame(
        [
            {
                "class": gallery.breakable(r["class"]),
                "precision": display.format_metric("precision", r.get("precision")),
                "recall": display.format_metric("recall", r.get("recall")),
                "F1": display.format_metric("f1", r.get("f1")),
                "support": f"{int(r.get('support') or 0):,}",
            }
            for r in rows
        ]
    )


def labels_section(run: Run, pred, res: dict, split: str, thresholds: list[float]) -> None:
    """Multi-label: per-label precision/recall/F1 bars, and each label's own confusion (TP/FP/FN/TN) with the
    images behind each cell, all at the thresholds in force."""
    st.plotly_chart(
        charts.per_class_bars(res.get("per_label") or res.get("per_class") or [], what="label"),
        key="eval.chart.per_label",
    )
    st.caption("Each label is its own yes/no decision; thresholds and their effect are on the Thresholds tab.")
    st.markdown("##### Confusion per label")
    classes = list(pred.classes)
    cm = np.asarray(res.get("confusion_matrix") or [])  # (labels, 2, 2): [[TN, FP], [FN, TP]] per label
    rows = [
        {
            "label": gallery.breakable(c),
            "threshold": display.threshold(thresholds[i]),
            "TP": f"{int(cm[i, 1, 1]):,}",
            "FP (extra)": f"{int(cm[i, 0, 1]):,}",
            "FN (missed)": f"{int(cm[i, 1, 0]):,}",
            "TN": f"{int(cm[i, 0, 0]):,}",
        }
        for i, c in enumerate(classes)
        if cm.ndim == 3
    ]
    left, right = st.columns([3, 2], gap="large")
    left.table(pd.DataFrame(rows), hide_index=True)
    with right:
        label = st.selectbox(
            "Label", range(len(classes)), format_func=lambda i: classes[i], key=f"eval.ml_cell_label.{run.id}"
        )
        cell = st.radio(
            "Cell",
            list(gallery.LABEL_CELLS),
            horizontal=True,
            key=f"eval.ml_cell.{run.id}",
            index=1,
            help="TP: there and decided · FP: decided, not there · FN: there, not decided · TN: neither",
        )
        st.caption(gallery.LABEL_CELLS[cell].capitalize() + f", at threshold {display.threshold(thresholds[label])}.")
    decided = M.decide(pred.probs, "multilabel", threshold=np.asarray(thresholds, np.float64))
    items, total = gallery.label_cell_items(pred, decided, int(label), cell)
    st.markdown(
        f"##### **{classes[label]}**, {cell}: {total:,} image{'s' * (total != 1)}"
        + (f" (the {len(items)} most confident shown)" if total > len(items) else "")
    )
    st.caption(f"Caption: true labels → decided labels (P({classes[label]})).")
    gallery.show(gallery.dataset_of(run), items, classes, key="eval.ml_cell_gallery", run_id=run.id)


# --- errors: top losses and likely mislabelled --------------------------------------------------------


def errors_section(run: Run, pred, res: dict) -> None:
    from engine.evaluate import report as ev

    classes = list(pred.classes)
    ds = gallery.dataset_of(run)
    st.markdown("##### Top losses")
    st.caption(
        "The images the model is most confidently wrong about (highest loss first; correct decisions are never "
        "listed): label noise, ambiguous images, or a real blind spot."
        + (
            " Caption: true labels → decided labels · the missed labels and the extra ones, each with its "
            "probability; (none) is an empty set."
            if pred.task == "multilabel"
            else ""
        )
    )
    t = eval_binary.current_threshold(run, res) if pred.task == "binary" else None
    if pred.task == "multilabel":
        t = st.session_state.get(eval_multilabel.k_thresholds(run))
    items = ev.top_losses(pred, n=gallery.MAX_IMAGES, threshold=t)
    gallery.show(ds, items, classes, key="eval.top_losses", extra="loss", run_id=run.id)
    st.markdown("##### Likely mislabelled")
    if "oof" not in load.splits_of(run):
        st.caption(
            f"Needs out-of-fold probabilities: train with k-fold (on the Train page, {control('kfold')} 2 or more) "
            "to rank the images whose given label the model doubts (confident learning)."
        )
        return
    rows = load.likely_mislabelled(run)
    st.caption(
        "Out-of-fold images cleanlab (confident learning) finds likely mislabelled, ranked by how much more the model "
        "believes another class. Caption: given label → suggested label (probability). Confirm or relabel them in "
        "the Dataset page's label queue."
    )
    items = [
        {
            "id": r["id"],
            "index": r["index"],
            "true": r["given"],
            "predicted": r["suggested"],
            "confidence": r["suggested_prob"],
            "margin": r["margin"],
        }
        for r in rows
    ]
    gallery.show(ds, items, classes, key="eval.mislabelled", extra="margin", run_id=run.id)


# --- calibration -------------------------------------------------------------------------------------


def calibration_section(pred, res: dict) -> None:
    cal = res.get("calibration") or {}
    if not cal.get("bins"):
        st.caption("No calibration figures for this split.")
        return
    temperature = cal.get("temperature")
    cols = st.columns(4)
    cols[0].metric(
        "ECE",
        display.format_metric("ece", cal.get("ece")),
        border=True,
        help="Expected calibration error of the scores as trained: the images-weighted gap between "
        "confidence and accuracy. Lower is better.",
    )
    if temperature:
        after_ece, before_nll, after_nll = cal.get("ece_after"), cal.get("nll_before"), cal.get("nll_after")
        cols[1].metric(
            "ECE after scaling",
            display.format_metric("ece", after_ece),
            border=True,
            delta=_delta("ece", after_ece, cal.get("ece")),
            delta_color="inverse",
        )
        cols[2].metric(
            "Temperature",
            display.number(temperature),
            border=True,
            help="Fitted on the tuning split: logits are divided by it (> 1 softens overconfident scores, "
            "< 1 sharpens underconfident ones).",
        )
        cols[3].metric(
            "Log loss after scaling",
            display.format_metric("log_loss", after_nll),
            border=True,
            delta=_delta("log_loss", after_nll, before_nll),
            delta_color="inverse",
            help=f"Before: {display.format_metric('log_loss', before_nll)}.",
        )
    left, right = st.columns(2)
    left.plotly_chart(
        charts.reliability_diagram(cal["bins"], cal.get("ece"), "Reliability (as trained)"),
        key="eval.chart.calib_before",
    )
    if temperature:
        after = M.apply_temperature(pred.probs, float(temperature), pred.task == "multilabel")
        rel = M.reliability(pred.labels, after)
        right.plotly_chart(
            charts.reliability_diagram(
                rel["bins"],
                rel["ece"],
                f"After temperature scaling (T = {display.number(temperature)})",
                color=charts.F1_C,
            ),
            key="eval.chart.calib_after",
        )
    st.caption(
        "Bars: accuracy of the images in each confidence bin; the dotted diagonal is perfect calibration. "
        "ECE = the images-weighted mean gap. " + scaling_note(pred.task)
    )


def scaling_note(task: str) -> str:
    """What temperature scaling does to the decisions: nothing for multi-class (the most probable class stays the
    most probable), but with thresholds it moves scores across them unless the thresholds move too."""
    if task == "multiclass":
        return "Temperature scaling changes confidence, never the predicted class (the most probable stays so)."
    what = "the threshold" if task == "binary" else "a label's threshold"
    return (
        f"Temperature scaling moves every score, so a score can cross {what}: at an unchanged threshold it can "
        "change the decision. The thresholds on this page apply to the scores as trained."
    )


def _delta(name: str, after: object, before: object) -> str | None:
    """The change a calibration step made, in the metric's unit; None when either end is missing."""
    if not (display.finite(after) and display.finite(before)):
        return None
    return display.format_delta(name, float(after) - float(before))


# --- the page ----------------------------------------------------------------------------------------


def main() -> None:
    st.title("Evaluate")
    runs = run_picker.require_runs(
        load.evaluable_runs(),
        "No trained run to evaluate yet. Start one on the **Train** "
        "page: once it completes, its stored predictions on val and test are evaluated here "
        "(nothing is re-run).",
    )
    top, side = st.columns([3, 2], vertical_alignment="bottom")
    with top:
        run = run_picker.pick_run(runs, fallback=load.latest_completed(runs), needs="stored predictions", key="eval")
    splits = load.splits_of(run)
    with side:
        split = pick_split(run, splits)
    tune_split = load.tune_split_for(splits)
    try:
        res = load.evaluation(run, split, tune_split)
        pred = load.predictions(run, split)
        with side:
            level = pick_level(run, pred)
        if level == "coarse":
            pred, res = load.coarse_predictions(run, split), res["coarse"]
    except LoupeError as e:
        st.error(str(e), icon=":material/error:")
        return
    if level == "coarse":
        coarse_caption(res)
    shown, where = at_threshold_in_force(run, pred, res, split, tune_split)
    protocol(shown, where)
    cards(shown)
    names = ["Classes" if pred.task != "multilabel" else "Labels"]
    if pred.task in ("binary", "multilabel"):
        names.append("Threshold" if pred.task == "binary" else "Thresholds")
    names += ["Top losses", "Calibration", "Compare runs"]
    tabs = dict(zip(names, st.tabs(names)))
    if pred.task == "binary":
        with tabs["Threshold"]:
            eval_binary.panel(run, pred, res, split, tune_split)
    if pred.task == "multilabel":
        with tabs["Thresholds"]:
            eval_multilabel.panel(run, pred, res, split, tune_split)
    with tabs[names[0]]:
        if pred.task == "multilabel":
            labels_section(
                run, pred, shown, split, [float(v) for v in st.session_state[eval_multilabel.k_thresholds(run)]]
            )
        else:
            classes_section(run, pred, res, split)
    with tabs["Top losses"]:
        errors_section(run, pred, res)
    with tabs["Calibration"]:
        calibration_section(pred, res)
    with tabs["Compare runs"]:
        compare.section(run, runs, split, pred.task)


draw_frame()  # the page config and the sidebar every page shares
main()

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

from engine import metrics as M
from engine.errors import LoupeError
from engine.evaluate import most_confused
from engine.runs.folder import Run
from app.evaluate import binary as eval_binary
from app.evaluate import charts
from app.evaluate import gallery
from app.evaluate import load
from app.evaluate import multilabel as eval_multilabel
from app.common import run_picker
from app.common.sidebar import draw_frame

K_NORM = "eval.cm_normalised"
K_COMPARE = "eval.compare"
COMPARE_DEFAULT = 6


# --- choosing the split ------------------------------------------------------------------------------


def pick_split(run: Run, splits: list[str]) -> str:
    key = f"eval.split.{run.id}"
    if st.session_state.get(key) not in splits:
        st.session_state[key] = "test" if "test" in splits else splits[0]
    return st.radio("Reported on", splits, key=key, horizontal=True, format_func=lambda s: load.SPLIT_NAMES.get(s, s),
                    help="The split whose predictions are scored. Thresholds are tuned on val.")  # fmt: skip


# --- the top: protocol and metric cards ------------------------------------------------------------

CARDS = {
    "binary": [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("macro_f1", "Macro F1"),
               ("roc_auc", "ROC AUC"), ("hter", "HTER"), ("log_loss", "Log loss")],
    "multiclass": [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("macro_f1", "Macro F1"),
                   ("roc_auc", "ROC AUC (one-vs-rest)"), ("top_3", "Top-3 accuracy"), ("log_loss", "Log loss")],
    "multilabel": [("subset_accuracy", "Subset accuracy"), ("micro_f1", "Micro F1"), ("macro_f1", "Macro F1"),
                   ("samples_f1", "Samples F1"), ("hamming_loss", "Hamming loss"), ("roc_auc", "ROC AUC (macro)")],
}  # fmt: skip


def _value(res: dict, key: str):
    if key.startswith("top_"):
        return (res.get("top_k") or {}).get(key.removeprefix("top_"))
    return res.get(key)


def protocol(res: dict) -> None:
    tuned_on, reported_on = res.get("tuned_on"), res.get("reported_on")
    chosen = res.get("threshold_config") or {}
    what = ""
    if res.get("task") == "binary" and res.get("threshold") is not None:
        rule = eval_binary.RULE_NAMES.get(res.get("rule"), res.get("rule"))
        what = f" at threshold **{res['threshold']:.4f}** ({rule})"
    elif res.get("task") == "multilabel":
        what = " at per-label thresholds"
    source = "saved with the run" if chosen.get("tuned_on") == "manual" or chosen.get("rule") == "manual" else f"tuned on **{tuned_on}**"
    st.caption(f"{res.get('n', 0):,} images of the **{reported_on}** split{what}; thresholds {source}, reported on "
               f"**{reported_on}**. Intervals: 95% bootstrap.")  # fmt: skip
    if res.get("optimistic"):
        st.warning(f"Optimistic: thresholds were tuned on the same split they are reported on (**{reported_on}**), "
                   "so these figures flatter the model. Report on test for an honest estimate.", icon=":material/warning:")  # fmt: skip


def cards(res: dict) -> None:
    ci = res.get("ci") or {}
    shown = [(k, label) for k, label in CARDS.get(res.get("task"), CARDS["multiclass"]) if _value(res, k) is not None]
    cols = st.columns(max(1, len(shown)))
    for col, (key, label) in zip(cols, shown):
        value = _value(res, key)
        lo_hi = ci.get(key)
        delta = f"95% CI {lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if lo_hi else None
        col.metric(label, f"{float(value):.3f}", delta=delta, delta_color="off", delta_arrow="off", border=True)


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
        rows = [{"class": c, "precision": float(pc["precision"][i]), "recall": float(pc["recall"][i]),
                 "f1": float(pc["f1"][i]), "support": int(pc["support"][i])} for i, c in enumerate(classes)]  # fmt: skip
        confused = most_confused(cm, classes)
        st.caption(f"At the threshold on the Threshold tab ({t:.4f}).")
    else:
        predicted = np.asarray(pred.probs).argmax(axis=1)
        cm = np.asarray(res["confusion_matrix"])
        rows, confused = res.get("per_class") or [], res.get("most_confused") or []
    left, right = st.columns([3, 2], gap="large")
    with left:
        normalised = st.toggle("Share of each true class", key=K_NORM, help="Rows sum to 100%: each cell is a recall / miss rate")
        shown = M.normalise_cm(cm) if normalised else cm
        cell_key = f"eval.cell.{run.id}.{split}"
        chart_key = f"eval.chart.cm.{run.id}.{split}"
        cells = [f"{i},{j}" for i in range(len(classes)) for j in range(len(classes))]
        if st.session_state.get(cell_key) not in cells:
            st.session_state.pop(cell_key, None)
        chosen = st.session_state.get(cell_key)
        sel = tuple(int(v) for v in chosen.split(",")) if chosen else None
        st.plotly_chart(charts.confusion_heatmap(shown, classes, normalised, sel, counts=cm), key=chart_key,
                        on_select=lambda: _cell_clicked(chart_key, cell_key), selection_mode="points")  # fmt: skip
    with right:
        st.markdown("##### Most confused pairs")
        if confused:
            st.dataframe(pd.DataFrame(confused).rename(columns={"true": "True", "predicted": "Predicted as", "count": "Images"}),
                         hide_index=True, key="eval.most_confused")  # fmt: skip
        else:
            st.caption("No mistakes on this split.")
        st.selectbox("Show the images of a cell", cells, key=cell_key, index=None, placeholder="Click a cell, or choose one",
                     format_func=lambda c: "true {} → predicted {}".format(*(classes[int(v)] for v in c.split(","))))  # fmt: skip
    if chosen:
        i, j = (int(v) for v in chosen.split(","))
        items, total = gallery.cell_items(pred, predicted, i, j)
        st.markdown(f"##### True **{classes[i]}**, predicted **{classes[j]}**: {total:,} image{'s' * (total != 1)}"
                    + (f" (the {len(items)} most confident shown)" if total > len(items) else ""))  # fmt: skip
        gallery.show(gallery.dataset_of(run), items, classes, key="eval.cell_gallery", run_id=run.id)
    st.plotly_chart(charts.per_class_bars(rows), key="eval.chart.per_class")


def labels_section(res: dict) -> None:
    """Multi-label: per-label precision/recall/F1 bars (no single confusion matrix)."""
    st.plotly_chart(charts.per_class_bars(res.get("per_label") or res.get("per_class") or []), key="eval.chart.per_label")
    st.caption("Each label is its own yes/no decision; thresholds and their effect are on the Thresholds tab.")


# --- errors: top losses and likely mislabelled --------------------------------------------------------


def errors_section(run: Run, pred, res: dict) -> None:
    from engine.evaluate import report as ev

    classes = list(pred.classes)
    ds = gallery.dataset_of(run)
    st.markdown("##### Top losses")
    st.caption("The images the model is most confidently wrong about (highest loss first): label noise, ambiguous "
               "images, or a real blind spot.")  # fmt: skip
    t = eval_binary.current_threshold(run, res) if pred.task == "binary" else None
    if pred.task == "multilabel":
        t = st.session_state.get(eval_multilabel.k_thresholds(run))
    items = ev.top_losses(pred, n=gallery.MAX_IMAGES, threshold=t)
    gallery.show(ds, items, classes, key="eval.top_losses", extra="loss", run_id=run.id)
    st.markdown("##### Likely mislabelled")
    if "oof" not in load.splits_of(run):
        st.caption("Needs out-of-fold probabilities: train with k-fold (Train page, `kfold` ≥ 2) to rank the images "
                   "whose given label the model doubts (confident learning).")  # fmt: skip
        return
    rows = load.likely_mislabelled(run)
    st.caption("Out-of-fold images whose given label's probability is below that class's average self-confidence, ranked "
               "by how much more the model believes another class. Caption: given label → suggested label (probability).")  # fmt: skip
    items = [{"id": r["id"], "index": r["index"], "true": r["given"], "predicted": r["suggested"],
              "confidence": r["suggested_prob"], "margin": r["margin"]} for r in rows]  # fmt: skip
    gallery.show(ds, items, classes, key="eval.mislabelled", extra="margin", run_id=run.id)


# --- calibration -------------------------------------------------------------------------------------


def calibration_section(pred, res: dict) -> None:
    cal = res.get("calibration") or {}
    if not cal.get("bins"):
        st.caption("No calibration figures for this split.")
        return
    temperature = cal.get("temperature")
    cols = st.columns(4)
    cols[0].metric("ECE before", f"{cal['ece']:.4f}", border=True)
    if temperature:
        after_ece = cal.get("ece_after")
        cols[1].metric("ECE after", f"{after_ece:.4f}" if after_ece is not None else "—",
                       delta=f"{after_ece - cal['ece']:+.4f}" if after_ece is not None else None, delta_color="inverse", border=True)  # fmt: skip
        cols[2].metric("Temperature", f"{temperature:.3f}", border=True,
                       help="Fitted on the tuning split: logits are divided by it (> 1 softens overconfident scores).")  # fmt: skip
        if cal.get("nll_before") is not None and cal.get("nll_after") is not None:
            cols[3].metric("NLL before → after", f"{cal['nll_before']:.3f} → {cal['nll_after']:.3f}", border=True)
    left, right = st.columns(2)
    left.plotly_chart(charts.reliability_diagram(cal["bins"], cal.get("ece"), "Reliability (as trained)"), key="eval.chart.calib_before")
    if temperature:
        after = M.apply_temperature(pred.probs, float(temperature), pred.task == "multilabel")
        rel = M.reliability(pred.labels, after)
        right.plotly_chart(charts.reliability_diagram(rel["bins"], rel["ece"], f"After temperature scaling (T = {temperature:.2f})",
                                                           color=charts.F1_C), key="eval.chart.calib_after")  # fmt: skip
    st.caption("Bars: accuracy of the images in each confidence bin; the dotted diagonal is perfect calibration. "
               "ECE = the images-weighted mean gap. Temperature scaling changes confidence, never the predicted class.")  # fmt: skip


# --- compare runs --------------------------------------------------------------------------------------

COMPARE_COLUMNS = [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced acc."), ("macro_f1", "Macro F1"),
                   ("micro_f1", "Micro F1"), ("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("hter", "HTER"),
                   ("eer", "EER"), ("log_loss", "Log loss"), ("hamming_loss", "Hamming loss")]  # fmt: skip


def compare_section(run: Run, runs: list[Run], split: str) -> None:
    spec = load.dataset_spec(run)
    peers = [r for r in runs if load.dataset_spec(r) == spec and split in load.splits_of(r)]
    st.caption(f"Runs on `{spec}` with {split} predictions, evaluated the same way (thresholds tuned on val, or the ones "
               "saved with each run). Click a column header to sort.")  # fmt: skip
    by_id = {r.id: r for r in peers}
    key = f"{K_COMPARE}.{spec}.{split}"
    if key not in st.session_state:
        st.session_state[key] = [r.id for r in peers[:COMPARE_DEFAULT]]
    st.session_state[key] = [i for i in st.session_state[key] if i in by_id] or [run.id]
    picked = st.multiselect("Runs", list(by_id), key=key, format_func=lambda i: run_picker.run_label(by_id[i]))
    rows = []
    for rid in picked:
        r = by_id[rid]
        try:
            res = load.evaluation(r, split, load.tune_split_for(load.splits_of(r)), bootstrap=0)
        except LoupeError as e:
            st.caption(f"{run_picker.run_name(r)}: {e}")
            continue
        cfg = r.config().get("config") or {}
        row = {"Run": run_picker.run_name(r) + (" (shown above)" if r.id == run.id else ""), "Model": cfg.get("model"),
               "Tuned on": res.get("tuned_on")}  # fmt: skip
        row.update({label: res.get(k) for k, label in COMPARE_COLUMNS})
        row["ECE"] = (res.get("calibration") or {}).get("ece")
        row["Threshold"] = res.get("threshold")
        rows.append(row)
    if not rows:
        return
    frame = pd.DataFrame(rows).dropna(axis=1, how="all")
    numbers = {c: st.column_config.NumberColumn(c, format="%.4f") for c in frame.columns if c not in ("Run", "Model", "Tuned on")}
    st.dataframe(frame, hide_index=True, key="eval.compare_table", column_config=numbers)


# --- the page ----------------------------------------------------------------------------------------


def main() -> None:
    st.title("Evaluate")
    runs = run_picker.require_runs(load.evaluable_runs(), "No trained run to evaluate yet. Start one on the **Train** "
                                   "page: once it completes, its stored predictions on val and test are evaluated here "
                                   "(nothing is re-run).")  # fmt: skip
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
    except LoupeError as e:
        st.error(str(e), icon=":material/error:")
        return
    protocol(res)
    cards(res)
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
            labels_section(res)
        else:
            classes_section(run, pred, res, split)
    with tabs["Top losses"]:
        errors_section(run, pred, res)
    with tabs["Calibration"]:
        calibration_section(pred, res)
    with tabs["Compare runs"]:
        compare_section(run, runs, split)


draw_frame()  # the page config and the sidebar every page shares
main()

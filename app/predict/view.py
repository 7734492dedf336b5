"""Drawing the Predict page's results: one card per image (the image, a large "98% Beagle" line, the top-k bar
chart, the decision, the unsure flag, the time and an optional Grad-CAM overlay), the table of many images with
its CSV download, and the export panel of a run (ONNX / TorchScript, offered for download)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app.common.images import for_display
from app.explain import charts
from app.predict import load
from engine.errors import LoupeError
from engine.metrics.display import finite, number, percent, threshold

EXPORTS = {"onnx": ("ONNX", ".onnx"), "torchscript": ("TorchScript", ".pt")}
K_EXPORT = "pred.export"  # session key prefix of finished exports (file name + bytes, for the download buttons)


# --- one image ---------------------------------------------------------------------------------------------


NONE = "(none)"  # a multi-label image whose every label is below its threshold


def top_line(res: dict) -> str:
    """'98% Beagle': the top class and its probability."""
    top = (res.get("top") or [{}])[0]
    prob = top.get("prob")
    return f"{prob:.0%} {top.get('class', '?')}" if isinstance(prob, (int, float)) else str(top.get("class", "?"))


def decided_set(res: dict) -> str:
    """A multi-label decision as people read it: the accepted labels, or "(none)"."""
    return ", ".join(map(str, res.get("label") or [])) or NONE


def headline(res: dict, task: str) -> str:
    """The card's big line: the decision. Single-label: '98% Beagle'; multi-label: the decided set (every label
    whose probability reaches its threshold), never the most probable label, which its threshold may reject."""
    if task == "multilabel" or isinstance(res.get("label"), (list, tuple)):
        return decided_set(res)
    return top_line(res)


def gradcam_target(res: dict) -> tuple[int | None, str]:
    """(class index, name) the card's Grad-CAM explains: the most probable *decided* label for multi-label (the
    top label may be rejected), else the top class; (None, '') when there is nothing to explain."""
    labels = res.get("labels")
    if labels:
        accepted = sorted((lab for lab in labels if lab["accepted"]), key=lambda lab: -float(lab["prob"]))
        pick = accepted[0] if accepted else max(labels, key=lambda lab: float(lab["prob"]))
        return int(pick["index"]), str(pick["class"])
    top = (res.get("top") or [{}])[0]
    return top.get("index"), str(top.get("class", ""))


def closest_label(res: dict) -> dict | None:
    """The multi-label label nearest its threshold (what the unsure margin measures), or None."""
    labels = res.get("labels") or []
    return min(labels, key=lambda lab: abs(float(lab["prob"]) - float(lab["threshold"])), default=None)


def decision_text(res: dict, task: str) -> str:
    label = res.get("label")
    if task == "multilabel" or isinstance(label, (list, tuple)):
        labels = list(label or [])
        if not labels:
            return f"Decided labels: **{NONE}**: no label reaches its threshold"
        return f"Decided labels: **{decided_set(res)}** (each at or above its threshold)"
    text = f"Decision: **{label}**"
    if res.get("coarse"):  # a two-level run: the coarse class is decided on its own (the summed probabilities)
        text += f" · coarse class **{res['coarse']}** ({percent(res.get('coarse_confidence'))})"
    score, th = res.get("score"), res.get("threshold")
    if task == "binary" and isinstance(score, (int, float)):
        text += f" · score {number(score)}" + (f" (threshold {threshold(th)})" if isinstance(th, (int, float)) else "")
    return text


def unsure_badge(res: dict, task: str, margin: float) -> str:
    """The flag as a badge that says why, in the terms of the task's rule (`engine.predict.unsure`)."""
    m = res.get("margin")
    labels = res.get("label")
    if task == "multilabel" and isinstance(labels, (list, tuple)) and not labels:
        why = "no label passes its threshold"
    elif not finite(m):
        why = "no margin"
    elif task == "binary":
        why = f"score {number(m)} from the threshold"
    elif task == "multilabel":
        near = closest_label(res)
        if near is None:
            why = f"a label {number(m)} from its threshold"
        else:
            side = "above" if near["accepted"] else "below"
            why = f"{near['class']} {number(m)} {side} its threshold"
    else:
        why = f"top two {number(m)} apart"
    if res.get("unsure"):
        return f":orange-badge[:material/help: unsure: {why} (margin {margin:.2f})]"
    return f":green-badge[:material/check: confident: {why}]"


def ood_badge(res: dict) -> str:
    """The out-of-distribution signal (`engine.predict.ood`) as a badge; '' when the check is unavailable."""
    from engine.predict.ood import UNLIKE, verdict

    if res.get("unlike_training") is None:
        return ""
    if res["unlike_training"]:
        return f":red-badge[:material/warning: {UNLIKE}]"
    return f":gray-badge[{verdict(res)}]"


def flag_of(res: dict) -> str:
    if not res.get("ok"):
        return "error"
    return "unsure" if res.get("unsure") else "ok"


def result_card(
    i: int, res: dict, data: bytes, task: str, unsure_margin: float, overlay: Callable[[], np.ndarray] | None
) -> None:
    """One image's card. `overlay` (when given) returns (Grad-CAM overlay, seconds, coarse-map warning or None), or
    raises NoGradCam/LoupeError."""
    with st.container(border=True, key=f"pred.card.{i}"):
        left, right = st.columns([1, 2], vertical_alignment="top")
        pixels = load.thumbnail(data)
        if pixels is not None:
            shown = for_display(pixels, 160)
            # "content": its own width (at most THUMB_MAX), but never wider than the column it sits in
            left.image(shown, caption=res["file"], width="content")
        else:
            left.markdown(f"**{res['file']}**")
        if overlay is not None:
            try:
                with st.spinner("Grad-CAM…"):
                    over, secs, note = overlay()
                left.image(for_display(over, 160), caption="Grad-CAM overlay", width=160)
                left.caption(f"Grad-CAM of {gradcam_target(res)[1]} · {secs * 1000:.0f} ms")
                if note:
                    left.warning(note, icon=":material/grid_view:")
            except (load.NoGradCam, LoupeError, ValueError, RuntimeError) as e:
                left.caption(f"Grad-CAM: {e}")
        right.markdown(f"## {headline(res, task)}")
        conf = res.get("confidence") if task != "multilabel" else None  # one label's probability is no set's
        right.markdown(f"{decision_text(res, task)} · {unsure_badge(res, task, unsure_margin)}")
        ood = ood_badge(res)
        if ood:
            right.markdown(ood, help=ood_help())
            if res.get("unlike_training"):
                right.caption(verdict_text(res) + ": the prediction above may mean little for this image.")
        top = res.get("top") or []
        if task == "multilabel" and res.get("labels"):
            right.plotly_chart(
                charts.label_bars(res["labels"], len(top) or None, "Label probabilities and thresholds"),
                key=f"pred.chart.{i}",
            )
        elif top:
            probs = np.array([float(t["prob"]) for t in top])
            names = [str(t["class"]) for t in top]
            what = "label probabilities" if task == "multilabel" else "confidences"
            right.plotly_chart(
                charts.top_k_bars(probs, names, len(top), f"Top {len(top)} {what}"), key=f"pred.chart.{i}"
            )
        secs = res.get("seconds")
        right.caption(
            " · ".join(
                x
                for x in [
                    f"confidence {conf:.1%}" if isinstance(conf, (int, float)) else "",
                    f"took {secs * 1000:.0f} ms" if isinstance(secs, (int, float)) else "",
                ]
                if x
            )
        )


def verdict_text(res: dict) -> str:
    from engine.predict.ood import verdict

    return verdict(res).capitalize()


def ood_help() -> str:
    from engine.predict.ood import IN_SHARE

    return (
        "Out-of-distribution check: the Mahalanobis distance of this image's features (the model's penultimate "
        f"layer) from the training images', against a threshold set so that {IN_SHARE:.0%} of the validation "
        "images fall below it. Far from everything the model was trained on means its prediction may mean little."
    )


# --- many images ----------------------------------------------------------------------------------------------


def table(results: Sequence[dict], task: str = "multiclass") -> pd.DataFrame:
    """One row per image: the decision, its confidence (single-label), each label's probability against its
    threshold (multi-label), the flags and whether it looks unlike the training data."""

    def pred(r: dict) -> str:
        if not r.get("ok"):
            return ""
        label = r.get("label")
        return decided_set(r) if isinstance(label, (list, tuple)) else str(label)

    def unlike(r: dict) -> str:
        u = r.get("unlike_training")
        return "n/a" if u is None else ("yes" if u else "no")

    cols: dict[str, list] = {
        "file": [r.get("file") for r in results],
        "prediction": [pred(r) for r in results],
    }
    if task == "multilabel":
        names = [str(lab["class"]) for r in results for lab in r.get("labels") or []]
        for name in dict.fromkeys(names):
            cols[name] = [_label_cell(r, name) for r in results]
    else:
        cols["confidence"] = [r.get("confidence") if r.get("ok") else None for r in results]
        if any("coarse" in r for r in results):
            cols["coarse class"] = [r.get("coarse") or "" for r in results]
    cols.update(
        {
            "margin": [number(r.get("margin")) if r.get("ok") else "" for r in results],
            "flag": [flag_of(r) for r in results],
            "unlike training data": [unlike(r) if r.get("ok") else "" for r in results],
            "seconds": [r.get("seconds") for r in results],
            "error": [r.get("error") or "" for r in results],
        }
    )
    return pd.DataFrame(cols)


def _label_cell(res: dict, name: str) -> str:
    """'98.00% ≥ 0.5000 accepted': one label's probability against its threshold, and the decision."""
    lab = next((x for x in res.get("labels") or [] if str(x["class"]) == name), None)
    if lab is None:
        return ""
    sign, word = ("≥", "accepted") if lab["accepted"] else ("<", "rejected")
    return f"{percent(lab['prob'])} {sign} {threshold(lab['threshold'])} {word}"


def results_table(results: Sequence[dict], pred) -> pd.DataFrame:
    """The table of many images and the CSV download (the CLI's `predict --out` columns,
    `engine.predict.predictor.csv_header`)."""
    from engine.predict.predictor import write_csv

    task = str(getattr(pred, "task", "multiclass"))
    df = table(results, task)
    n_unsure, n_err = int((df["flag"] == "unsure").sum()), int((df["flag"] == "error").sum())
    n_unlike = int((df["unlike training data"] == "yes").sum())
    st.subheader(f"{len(df)} images")
    st.caption(
        f"{n_unsure} unsure · {n_unlike} look unlike the training data · {n_err} could not be read · "
        f"model `{getattr(pred, 'name', '?')}`"
    )
    st.dataframe(
        df,
        hide_index=True,
        key="pred.table",
        column_config={
            "prediction": st.column_config.TextColumn("prediction", width="large"),
            "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
            "seconds": st.column_config.NumberColumn("seconds", format="%.3f"),
        },
    )
    st.download_button(
        "Download CSV",
        write_csv(pred, list(results)).encode("utf-8"),
        file_name="predictions.csv",
        mime="text/csv",
        icon=":material/download:",
        key="pred.csv",
    )
    return df


# --- export --------------------------------------------------------------------------------------------------


def _do_export(run, fmt: str) -> None:
    from engine.predict.export import export

    label, ext = EXPORTS[fmt]
    out_dir = Path(tempfile.mkdtemp(prefix="loupe-export-"))
    try:
        with st.spinner(f"Exporting to {label}…"):
            path = Path(export(run, fmt, out_dir / f"{run.id}{ext}"))
    except (LoupeError, OSError, ValueError, RuntimeError, ImportError) as e:
        st.session_state[f"{K_EXPORT}.error"] = f"Export to {label} failed: {e}"
        return
    files = [(path.name, path.read_bytes())]
    files += [(p.name, p.read_bytes()) for p in sorted(out_dir.glob("*.json")) if p != path]
    st.session_state[f"{K_EXPORT}.{run.id}.{fmt}"] = files
    st.session_state.pop(f"{K_EXPORT}.error", None)


def export_panel(run) -> None:
    """Format choice, an Export button, then the exported file (and its JSON model card) for download."""
    with st.expander("Export this model", icon=":material/output:"):
        c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
        fmt = c1.radio(
            "Format",
            list(EXPORTS),
            format_func=lambda f: EXPORTS[f][0],
            horizontal=True,
            key="pred.export.fmt",
            help="ONNX runs in ONNX Runtime and most serving stacks; TorchScript loads with `torch.jit.load` "
            "without Loupe. A JSON model card (classes, input size, thresholds) comes with it.",
        )
        if c2.button("Export", key="pred.export.go", icon=":material/output:"):
            _do_export(run, fmt)
        err = st.session_state.get(f"{K_EXPORT}.error")
        if err:
            st.error(err, icon=":material/error:")
        for name, data in st.session_state.get(f"{K_EXPORT}.{run.id}.{fmt}", []):
            st.download_button(
                f"Download {name}",
                data,
                file_name=name,
                icon=":material/download:",
                key=f"pred.export.dl.{fmt}.{name}",
                mime="application/json" if name.endswith(".json") else "application/octet-stream",
            )

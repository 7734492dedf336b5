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
from engine.metrics.display import finite, number, threshold

EXPORTS = {"onnx": ("ONNX", ".onnx"), "torchscript": ("TorchScript", ".pt")}
K_EXPORT = "pred.export"  # session key prefix of finished exports (file name + bytes, for the download buttons)


# --- one image ---------------------------------------------------------------------------------------------


def top_line(res: dict) -> str:
    """'98% Beagle': the top class and its probability."""
    top = (res.get("top") or [{}])[0]
    prob = top.get("prob")
    return f"{prob:.0%} {top.get('class', '?')}" if isinstance(prob, (int, float)) else str(top.get("class", "?"))


def decision_text(res: dict, task: str) -> str:
    label = res.get("label")
    if task == "multilabel" or isinstance(label, (list, tuple)):
        labels = list(label or [])
        return f"Labels: **{', '.join(map(str, labels))}**" if labels else "Labels: **none** above their thresholds"
    text = f"Decision: **{label}**"
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
        why = f"a label {number(m)} from its threshold"
    else:
        why = f"top two {number(m)} apart"
    if res.get("unsure"):
        return f":orange-badge[:material/help: unsure: {why} (margin {margin:.2f})]"
    return f":green-badge[:material/check: confident: {why}]"


def flag_of(res: dict) -> str:
    if not res.get("ok"):
        return "error"
    return "unsure" if res.get("unsure") else "ok"


def result_card(
    i: int, res: dict, data: bytes, task: str, unsure_margin: float, overlay: Callable[[], np.ndarray] | None
) -> None:
    """One image's card. `overlay` (when given) returns (Grad-CAM overlay, seconds), or raises NoGradCam/LoupeError."""
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
                    over, secs = overlay()
                left.image(for_display(over, 160), caption="Grad-CAM overlay", width=160)
                left.caption(f"Grad-CAM of the top class · {secs * 1000:.0f} ms")
            except (load.NoGradCam, LoupeError, ValueError, RuntimeError) as e:
                left.caption(f"Grad-CAM: {e}")
        right.markdown(f"## {top_line(res)}")
        conf = res.get("confidence")
        right.markdown(f"{decision_text(res, task)} · {unsure_badge(res, task, unsure_margin)}")
        top = res.get("top") or []
        if top:
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


# --- many images ----------------------------------------------------------------------------------------------


def table(results: Sequence[dict]) -> pd.DataFrame:
    def pred(r: dict) -> str:
        if not r.get("ok"):
            return ""
        label = r.get("label")
        return ", ".join(map(str, label)) if isinstance(label, (list, tuple)) else str(label)

    return pd.DataFrame(
        {
            "file": [r.get("file") for r in results],
            "prediction": [pred(r) for r in results],
            "confidence": [r.get("confidence") if r.get("ok") else None for r in results],
            "margin": [number(r.get("margin")) if r.get("ok") else "" for r in results],
            "flag": [flag_of(r) for r in results],
            "seconds": [r.get("seconds") for r in results],
            "error": [r.get("error") or "" for r in results],
        }
    )


def results_table(results: Sequence[dict], model_name: str) -> pd.DataFrame:
    df = table(results)
    n_unsure, n_err = int((df["flag"] == "unsure").sum()), int((df["flag"] == "error").sum())
    st.subheader(f"{len(df)} images")
    st.caption(f"{n_unsure} unsure · {n_err} could not be read · model `{model_name}`")
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
    from engine.predict import csv_cell

    st.download_button(
        "Download CSV",
        df.map(csv_cell).to_csv(index=False).encode("utf-8"),  # names escaped against spreadsheet formulas
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

"""Plotly figures for the Explain page (no Streamlit here): top-k confidences, deletion curves, and the
robustness sweep (accuracy / HTER vs epsilon, per-class robust accuracy, minimal-epsilon histogram)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from app.common.charts import BLUE, GREEN, ORANGE, RED, layout

HEIGHT = 320
ACC_C, HTER_C, FAR_C, FRR_C = BLUE, GREEN, RED, ORANGE


def top_k_bars(probs: np.ndarray, classes: Sequence[str], k: int = 5, title: str = "Top classes") -> go.Figure:
    order = np.argsort(-probs, kind="stable")[:k][::-1]
    fig = go.Figure(go.Bar(x=[float(probs[i]) for i in order], y=[str(classes[i]) for i in order], orientation="h",
                           text=[f"{probs[i]:.1%}" for i in order], textposition="auto", marker_color=ACC_C,
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(type="category")
    return layout(fig, title, height=max(180, 60 + 30 * len(order)))


def deletion_curves(curves: Mapping[str, dict], target_name: str) -> go.Figure:
    fig = go.Figure()
    for method, c in curves.items():
        fig.add_scatter(x=list(map(float, c["fractions"])), y=list(map(float, c["probs"])), mode="lines+markers",
                        name=f"{method} (AUC {float(c['auc']):.3f})")  # fmt: skip
    fig.update_xaxes(title="share of pixels removed (most important first)", tickformat=".0%")
    fig.update_yaxes(title=f"P({target_name})", range=[0, 1.02])
    return layout(fig, "Deletion curves (lower AUC = more faithful)", height=HEIGHT)


def accuracy_vs_eps(sweep: dict, binary: bool) -> go.Figure:
    eps = list(map(float, sweep["eps"]))
    fig = go.Figure()
    fig.add_scatter(x=eps, y=list(map(float, sweep["accuracy"])), mode="lines+markers", name="accuracy", line={"color": ACC_C})
    if binary:
        for key, color in (("hter", HTER_C), ("far", FAR_C), ("frr", FRR_C)):
            if sweep.get(key) is not None:
                fig.add_scatter(x=eps, y=list(map(float, sweep[key])), mode="lines+markers", name=key.upper(),
                                line={"color": color, "dash": "solid" if key == "hter" else "dot"})  # fmt: skip
    fig.update_xaxes(title="epsilon (pixel units, 0–1)")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    title = "Accuracy and HTER vs epsilon" if binary else "Accuracy vs epsilon"
    return layout(fig, title, height=HEIGHT, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})


def per_class_table(sweep: dict, classes: Sequence[str]) -> tuple[list[str], list[float], list[list[float]]]:
    """(class names, eps, accuracy rows, one per class) from `per_class`: one {class: accuracy} per epsilon
    (what `epsilon_sweep` gives), or already per class as {class: [accuracy per eps]}."""
    pc, eps = sweep.get("per_class"), list(map(float, sweep["eps"]))
    if isinstance(pc, Mapping):
        names = [str(k) for k in pc]
        return names, eps, [[float(v) for v in pc[k]] for k in pc]
    per_eps = list(pc or [])
    present = {str(k) for row in per_eps for k in row}
    names = [str(c) for c in classes if str(c) in present] + sorted(present - {str(c) for c in classes})
    rows = [[float(row.get(n, row.get(str(n), np.nan))) for row in per_eps] for n in names]
    return names, eps, rows


def per_class_heatmap(sweep: dict, classes: Sequence[str]) -> go.Figure:
    names, eps, rows = per_class_table(sweep, classes)
    z = [[(v if np.isfinite(v) else None) for v in r] for r in rows]
    fig = go.Figure(go.Heatmap(z=z, x=[f"{e:g}" for e in eps], y=names, zmin=0, zmax=1, colorscale="RdYlGn",
                               text=[[("" if v is None else f"{v:.0%}") for v in r] for r in z],
                               texttemplate="%{text}" if len(names) <= 15 else None,
                               hovertemplate="%{y} at eps %{x}: %{z:.1%}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title="epsilon", type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return layout(fig, "Robust accuracy per class", height=max(HEIGHT, 90 + 28 * len(names)))


def min_eps_histogram(min_eps: Sequence[float | None], max_eps: float) -> go.Figure:
    """Images flipped at some epsilon; None / inf: never flipped up to the search limit; 0: already wrong."""
    vals = np.asarray([np.inf if v is None else float(v) for v in (min_eps or [])], dtype=float)
    flipped = vals[np.isfinite(vals) & (vals > 0)]
    held, wrong = int(np.isinf(vals).sum()), int((vals == 0).sum())
    fig = go.Figure(go.Histogram(x=flipped.tolist(), nbinsx=min(30, max(5, len(flipped) // 3)), marker_color=ACC_C,
                                 hovertemplate="eps %{x}: %{y} images<extra></extra>"))  # fmt: skip
    notes = [f"{held} never flipped up to {max_eps:g}"] if held else []
    notes += [f"{wrong} already wrong"] if wrong else []
    fig.update_xaxes(title="smallest epsilon that flips the prediction")
    fig.update_yaxes(title="images")
    extra = f" · {', '.join(notes)}" if notes else ""
    return layout(fig, f"Minimal epsilon ({len(flipped)} images flipped{extra})", height=HEIGHT)

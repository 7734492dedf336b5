"""Plotly figures for the Explain page (no Streamlit here): top-k confidences, deletion curves, and the
robustness sweep (accuracy / HTER vs epsilon, per-class robust accuracy, minimal-epsilon histogram)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from app.common.charts import BLUE, GREEN, GREY, ORANGE, RED, layout
from engine.metrics.display import finite, number, percent, threshold

HEIGHT = 320
ACC_C, HTER_C, FAR_C, FRR_C = BLUE, GREEN, RED, ORANGE
LABEL_WIDTH = 22  # characters per line of a class name on an axis


def wrap(label: str, width: int = LABEL_WIDTH, lines: int = 3) -> str:
    """A long class name broken into lines for a Plotly axis (which never wraps, it widens the margin and squeezes
    the plot); beyond `lines` lines it ends with an ellipsis (the hover shows the whole name)."""
    parts = textwrap.wrap(str(label), width, break_long_words=True) or [str(label)]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "<br>".join(parts)


def top_k_bars(probs: np.ndarray, classes: Sequence[str], k: int = 5, title: str = "Top classes") -> go.Figure:
    order = np.argsort(-probs, kind="stable")[:k][::-1]
    names = [wrap(classes[i]) for i in order]
    fig = go.Figure(
        go.Bar(
            x=[float(probs[i]) for i in order],
            y=names,
            orientation="h",
            text=[f"{probs[i]:.1%}" for i in order],
            textposition="auto",
            marker_color=ACC_C,
            customdata=[str(classes[i]) for i in order],
            hovertemplate="%{customdata}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_xaxes(range=[0, 1], tickformat=".0%", tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    fig.update_yaxes(type="category")
    lines = sum(n.count("<br>") + 1 for n in names)
    fig = layout(fig, title, height=max(180, 60 + 22 * lines + 8 * len(order)))
    fig.update_layout(margin={"r": 28})  # room for the "100%" tick, which Plotly drops when it would be clipped
    return fig


def label_bars(labels: Sequence[Mapping], k: int | None = None, title: str = "Labels") -> go.Figure:
    """Multi-label: each label's probability as a bar, its threshold as a tick on the bar, and the decision
    (accepted: probability >= threshold, `engine.metrics.core.decide`) in the bar's colour and text.

    `labels` are the Predictor's per-label dicts (class, prob, threshold, accepted). The `k` most probable are
    drawn, plus every accepted label beyond them, so the decided set is always on the chart."""
    ranked = sorted(labels, key=lambda lab: -float(lab["prob"]))
    keep = [lab for i, lab in enumerate(ranked) if k is None or i < k or lab["accepted"]][::-1]
    names = [wrap(str(lab["class"])) for lab in keep]
    probs = [float(lab["prob"]) for lab in keep]
    ths = [float(lab["threshold"]) for lab in keep]
    words = ["accepted" if lab["accepted"] else "rejected" for lab in keep]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=names,
            orientation="h",
            text=[f"{p:.1%} · threshold {threshold(t)} · {w}" for p, t, w in zip(probs, ths, words)],
            textposition="auto",
            marker_color=[GREEN if lab["accepted"] else GREY for lab in keep],
            customdata=[[str(lab["class"]), threshold(t), w] for lab, t, w in zip(keep, ths, words)],
            hovertemplate="%{customdata[0]}: %{x:.2%}, threshold %{customdata[1]}: %{customdata[2]}<extra></extra>",
            name="probability",
        )
    )
    fig.add_scatter(
        x=[min(max(t, 0.0), 1.0) for t in ths],
        y=names,
        mode="markers",
        marker={"symbol": "line-ns", "size": 22, "line": {"width": 3, "color": RED}},
        name="threshold",
        hovertemplate="threshold %{x:.4f}<extra></extra>",
    )
    fig.update_xaxes(range=[0, 1], tickformat=".0%", tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    fig.update_yaxes(type="category")
    lines = sum(n.count("<br>") + 1 for n in names)
    fig = layout(fig, title, height=max(200, 80 + 26 * lines + 8 * len(keep)))
    fig.update_layout(margin={"r": 28}, showlegend=True, legend={"orientation": "h", "y": -0.15})
    return fig


def deletion_curves(curves: Mapping[str, dict], target_name: str) -> go.Figure:
    fig = go.Figure()
    for method, c in curves.items():
        fig.add_scatter(
            x=list(map(float, c["fractions"])),
            y=list(map(float, c["probs"])),
            mode="lines+markers",
            name=f"{method} (AUC {number(c['auc'])})",
        )
    fig.update_xaxes(title="share of pixels removed (most important first)", tickformat=".0%")
    fig.update_yaxes(title=f"P({wrap(target_name, 30, 1)})", range=[0, 1.02])
    return layout(fig, "Deletion curves (lower AUC = more faithful)", height=HEIGHT)


def _values(values) -> list[float | None]:
    """Floats for a trace; None (a gap) where a value is missing or not finite."""
    return [float(v) if finite(v) else None for v in (values or [])]


def accuracy_vs_eps(sweep: dict, binary: bool) -> go.Figure:
    """Accuracy (and HTER, FAR, FRR for binary) against epsilon; a rate that is n/a at every epsilon (its class
    is not in the sample) is left out of the chart and named in the legend."""
    eps = list(map(float, sweep["eps"]))
    fig = go.Figure()
    fig.add_scatter(
        x=eps,
        y=_values(sweep["accuracy"]),
        mode="lines+markers",
        name="accuracy",
        line={"color": ACC_C},
        hovertemplate="ε %{x}: %{y:.2%}<extra>accuracy</extra>",
    )
    if binary:
        for key, color in (("hter", HTER_C), ("far", FAR_C), ("frr", FRR_C)):
            if sweep.get(key) is None:
                continue
            ys = _values(sweep[key])
            name = key.upper() if any(v is not None for v in ys) else f"{key.upper()} n/a (class not in the sample)"
            fig.add_scatter(
                x=eps,
                y=ys,
                mode="lines+markers",
                name=name,
                hovertemplate=f"ε %{{x}}: %{{y:.2%}}<extra>{key.upper()}</extra>",
                line={"color": color, "dash": "solid" if key == "hter" else "dot"},
            )
    fig.update_xaxes(title="epsilon (pixel units, 0–1)")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    title = "Accuracy and HTER vs epsilon" if binary else "Accuracy vs epsilon"
    return layout(
        fig,
        title,
        height=HEIGHT,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    )


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
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{e:g}" for e in eps],
            y=[wrap(n) for n in names],
            zmin=0,
            zmax=1,
            colorscale="RdYlGn",
            text=[[("" if v is None else percent(v)) for v in r] for r in z],
            texttemplate="%{text}" if len(names) <= 15 else None,
            hovertemplate="%{y} at ε %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_xaxes(title="epsilon", type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return layout(fig, "Robust accuracy per class", height=max(HEIGHT, 90 + 28 * len(names)))


def _min_eps_counts(min_eps: Sequence[float | None]) -> tuple[np.ndarray, int, int]:
    """(epsilons of the images flipped, images never flipped up to the limit, images already wrong)."""
    vals = np.asarray([np.inf if v is None else float(v) for v in (min_eps or [])], dtype=float)
    return vals[np.isfinite(vals) & (vals > 0)], int(np.isinf(vals).sum()), int((vals == 0).sum())


def min_eps_histogram(min_eps: Sequence[float | None], max_eps: float) -> go.Figure:
    """Images flipped at some epsilon; None / inf: never flipped up to the search limit; 0: already wrong. The
    title stays short (the chart sits in half the page's width); the counts are in `min_eps_note`."""
    flipped, _, _ = _min_eps_counts(min_eps)
    fig = go.Figure(
        go.Histogram(
            x=flipped.tolist(),
            nbinsx=min(30, max(5, len(flipped) // 3)),
            marker_color=ACC_C,
            hovertemplate="ε %{x}: %{y} images<extra></extra>",
        )
    )
    fig.update_xaxes(title="smallest epsilon that flips the prediction", range=[0, max_eps])
    # image counts: whole-number ticks (plotly puts 0.5, 1.5 between the bars of a handful of images)
    fig.update_yaxes(title="images", tickformat=",d", dtick=1 if len(flipped) <= 8 else None, rangemode="tozero")
    return layout(fig, "Minimal epsilon per image", height=HEIGHT)


def min_eps_note(min_eps: Sequence[float | None], max_eps: float) -> str:
    """The histogram's counts in words: flipped, never flipped up to `max_eps`, already wrong."""
    flipped, held, wrong = _min_eps_counts(min_eps)
    bits = [f"{len(flipped):,} image{'s' if len(flipped) != 1 else ''} flipped"]
    bits += [f"{held:,} never flipped up to ε = {max_eps:g}"] if held else []
    bits += [f"{wrong:,} already wrong without an attack"] if wrong else []
    median = f"; median {float(np.median(flipped)):.4f}" if len(flipped) else ""
    return " · ".join(bits) + median

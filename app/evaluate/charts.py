"""Plotly figures for the Evaluate page, built from what `engine.evaluate.report` returns (no Streamlit here).

Confusion matrix (with an invisible marker per cell so a click selects the cell), per-class bars,
binary error-rate curves with the operating point, DET and ROC, reliability diagrams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.common.charts import BLUE, GREEN, ORANGE, RED, layout
from engine.metrics import display

HEIGHT = 340
CURVE_HEIGHT = 400  # DET and ROC are square: a little taller, so the square is not small
FAR_C, FRR_C, HTER_C, OP_C = RED, BLUE, GREEN, "#222222"
PRECISION_C, RECALL_C, F1_C = BLUE, ORANGE, GREEN
TOP_RIGHT = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"}
MAX_TEXT_CELLS = 15  # above this many classes, numbers in the cells are clutter: hover instead
WRAP = 14  # characters per line of a class name on an axis; longer names wrap (never clipped)


def wrap(name: str, width: int = WRAP) -> str:
    """A long label broken into lines of about `width` characters for a plotly axis (`<br>` between lines).

    Breaks after spaces, '_', '-' and '/' when it can, inside a word only when a word alone is too long.
    """
    text = str(name)
    if len(text) <= width:
        return text
    lines, line = [], ""
    for piece in _pieces(text):
        if line and len(line) + len(piece) > width:
            lines.append(line.rstrip())
            line = ""
        while len(piece) > width:
            lines.append(piece[:width])
            piece = piece[width:]
        line += piece
    if line.strip():
        lines.append(line.rstrip())
    return "<br>".join(lines)


def _pieces(text: str) -> list[str]:
    """`text` cut after each separator, separators kept: "a_b c" -> ["a_", "b ", "c"]."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch in " _-/":
            out.append(cur)
            cur = ""
    return out + ([cur] if cur else [])


def _note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#888", "size": 13}
    )


# --- confusion matrix ------------------------------------------------------------------------------


def confusion_heatmap(
    cm: Sequence[Sequence[float]],
    classes: Sequence[str],
    normalised: bool = False,
    selected: tuple[int, int] | None = None,
    counts: Sequence[Sequence[int]] | None = None,
) -> go.Figure:
    """Rows: true class, columns: predicted class. `cm` is what is coloured (counts or row-normalised);
    `counts` (when `cm` is normalised) go in the hover. A transparent marker sits on each cell so that
    clicking a cell is a point selection (`customdata` = [true, predicted])."""
    z = np.asarray(cm, dtype=float)
    k = len(classes)
    n = np.asarray(counts if counts is not None else cm, dtype=float)
    names = [str(c) for c in classes]
    text = [[(f"{v:.0%}" if normalised else f"{int(v):,}") for v in row] for row in z] if k <= MAX_TEXT_CELLS else None
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=names,
            y=names,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}" if text else None,
            zmin=0,
            zmax=1 if normalised else None,
            customdata=n.tolist(),
            showscale=False,
            hovertemplate=(
                "true %{y} → predicted %{x}: %{z:.2%} (%{customdata:,} images)<extra></extra>"
                if normalised
                else "true %{y} → predicted %{x}: %{z:,} images<extra></extra>"
            ),
        )
    )
    height = max(HEIGHT, 90 + 34 * k)
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    fig.add_scatter(
        x=[names[j] for j in jj.ravel()],
        y=[names[i] for i in ii.ravel()],
        mode="markers",
        # a click selects the cell when it lands on its marker: make the marker (nearly) the cell's height
        marker={"size": max(8, min(120, int(0.9 * (height - 110) / max(k, 1)))), "opacity": 0, "symbol": "square"},
        customdata=np.stack([ii.ravel(), jj.ravel(), n.ravel()], axis=1).tolist(),
        hovertemplate="true %{y} → predicted %{x}: %{customdata[2]:,} images · click to show them<extra></extra>",
        showlegend=False,
        name="cells",
    )
    if selected is not None:
        i, j = selected
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line={"color": RED, "width": 3})
    ticks = {"tickvals": names, "ticktext": [wrap(c) for c in names]}
    # fixed ranges: autorange would pad the axes to fit the (large, invisible) cell markers and shrink the cells
    fig.update_xaxes(title="predicted", type="category", side="bottom", range=[-0.5, k - 0.5], **ticks)
    fig.update_yaxes(title="true", type="category", range=[k - 0.5, -0.5], **ticks)
    title = "Confusion matrix" + (" (share of each true class)" if normalised else " (images)")
    return layout(fig, title, height=height, clickmode="event+select", dragmode=False)


def cell_of(point: dict) -> tuple[int, int] | None:
    """(true, predicted) of a selected point of `confusion_heatmap`'s cell markers, else None."""
    data = point.get("customdata")
    if isinstance(data, (list, tuple)) and len(data) >= 2:
        return int(data[0]), int(data[1])
    return None


def per_class_bars(rows: Sequence[dict], what: str = "class") -> go.Figure:
    """Precision, recall and F1 per class (per label: `what="label"`), grouped; the support in the axis label
    and hover."""
    names = [f"{r['class']} (n={int(r.get('support', 0)):,})" for r in rows]
    fig = go.Figure()
    for key, color in (("precision", PRECISION_C), ("recall", RECALL_C), ("f1", F1_C)):
        fig.add_bar(
            x=names,
            y=[r.get(key) for r in rows],
            name="F1" if key == "f1" else key,
            marker_color=color,
            hovertemplate=f"%{{x}} · {key}: %{{y:.2%}}<extra></extra>",
        )
    fig.update_yaxes(range=[0, 1.02], title="score", tickformat=".0%")
    # up to a dozen classes: level labels wrapped to their slot's width; more: slanted, one line each
    level = len(rows) <= 12
    width = max(6, min(WRAP, 120 // max(1, len(rows)))) if level else 3 * WRAP
    fig.update_xaxes(
        type="category",
        tickangle=0 if level else -30,
        tickvals=names,
        ticktext=[
            wrap(str(r["class"]), width) + ("<br>" if level else " ") + f"(n={int(r.get('support', 0)):,})"
            for r in rows
        ],
    )
    return layout(fig, f"Per {what}: precision, recall, F1 (support in brackets)", barmode="group", legend=TOP_RIGHT)


# --- binary ----------------------------------------------------------------------------------------


def _arr(curves: dict, key: str) -> np.ndarray:
    return np.asarray(curves.get(key, []), dtype=float)


def threshold_curves(curves: dict, threshold: float, marks: dict | None = None) -> go.Figure:
    """FAR, FRR and HTER against the threshold; the current threshold as a line, EER and min-HTER marked.
    `marks`: {"eer": (t, value), "min_hter": (t, value)} (either may be missing)."""
    t = np.clip(_arr(curves, "thresholds"), 0.0, 1.0)  # the reject-all threshold sits just above 1
    fig = go.Figure()
    order = np.argsort(t, kind="mergesort")
    for key, color, name in (("far", FAR_C, "FAR"), ("frr", FRR_C, "FRR"), ("hter", HTER_C, "HTER")):
        y = _arr(curves, key)
        if len(y) == len(t) and len(t):
            fig.add_scatter(
                x=t[order],
                y=y[order],
                mode="lines",
                name=name,
                line={"color": color, "width": 2, "dash": "dot" if key == "hter" else None},
                hovertemplate=f"threshold %{{x:.4f}} · {name} %{{y:.2%}}<extra></extra>",
            )
    for key, symbol, name in (("eer", "diamond", "EER"), ("min_hter", "star", "min HTER")):
        mark = (marks or {}).get(key)
        if mark and mark[0] is not None and mark[1] is not None:
            fig.add_scatter(
                x=[mark[0]],
                y=[mark[1]],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 13, "color": OP_C},
                hovertemplate=f"{name} %{{y:.2%}} at threshold %{{x:.4f}}<extra></extra>",
            )
    # the threshold in force as a trace, so the legend names it (an annotation on the line ran into the legend)
    fig.add_scatter(
        x=[threshold, threshold],
        y=[0, 1],
        mode="lines",
        name=f"t = {display.threshold(threshold)}",
        line={"color": OP_C, "width": 1, "dash": "dash"},
        hoverinfo="skip",
    )
    if not len(t):
        _note(fig, "no scores")
    x_range = threshold_range(t, threshold)
    zoomed = x_range != [0.0, 1.0]
    fig.update_xaxes(
        title="threshold (accept when score ≥ t)" + (", zoomed to where the scores lie" if zoomed else ""),
        range=x_range,
    )
    fig.update_yaxes(title="error rate", tickformat=".0%", range=[0, 1.02])
    return layout(fig, "FAR, FRR and HTER vs threshold", height=HEIGHT, legend=TOP_RIGHT)


ZOOM_BELOW = 0.5  # scores spanning less than this of 0..1 get a zoomed threshold axis


def threshold_range(thresholds: np.ndarray, threshold: float) -> list[float]:
    """0..1, or, when every score lies in a narrow band (an early or timid model: all near 0.47, say), that
    band with a margin, the threshold in force included: on 0..1 the three curves would be one vertical line."""
    t = np.asarray(thresholds, dtype=float)
    t = t[np.isfinite(t)]
    if not len(t) or t.max() - t.min() >= ZOOM_BELOW:
        return [0.0, 1.0]
    lo, hi = min(float(t.min()), threshold), max(float(t.max()), threshold)
    pad = max(0.02, 0.1 * (hi - lo))
    return [max(0.0, lo - pad), min(1.0, hi + pad)]


# DET axes: normal deviates of the rates. The range is fixed (the same for every run, so two runs' curves
# compare by eye) and matches the ticks; rates outside it (0 and 1 map to -inf and +inf) are drawn on its
# edge, and the hover still tells the true value.
DET_TICKS = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99]
DET_LIMITS = (0.0005, 0.995)


def _probit(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Rates -> normal deviates, clipped to the DET range (so nothing is drawn outside the axes)."""
    from scipy.stats import norm

    return norm.ppf(np.clip(np.asarray(p, dtype=float), *DET_LIMITS))


def det_range() -> list[float]:
    return _probit(DET_LIMITS).tolist()


def _square(fig: go.Figure) -> None:
    """Equal scales on both axes by shrinking the plot area, never by widening an axis beyond its range
    (plotly's default widened the ROC's x axis to -50%..150% on a wide chart)."""
    fig.update_xaxes(constrain="domain")
    fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")


def det_curve(curves: dict, op: tuple[float, float] | None = None) -> go.Figure:
    """FRR against FAR on normal-deviate (probit) axes, with the operating point (far, frr)."""
    far, frr = _arr(curves, "far"), _arr(curves, "frr")
    fig = go.Figure()
    if len(far):
        fig.add_scatter(
            x=_probit(far),
            y=_probit(frr),
            mode="lines",
            name="DET",
            line={"color": FRR_C, "width": 2},
            customdata=np.stack([far, frr], axis=1),
            hovertemplate="FAR %{customdata[0]:.2%} · FRR %{customdata[1]:.2%}<extra></extra>",
        )
    else:
        _note(fig, "no scores")
    if op is not None:
        fig.add_scatter(
            x=_probit([op[0]]),
            y=_probit([op[1]]),
            mode="markers",
            name="operating point",
            cliponaxis=False,
            marker={"size": 12, "color": OP_C, "symbol": "x"},
            hovertemplate=f"current threshold: FAR {display.percent(op[0])} · FRR {display.percent(op[1])}<extra></extra>",
        )
    ticks = {
        "tickvals": _probit(DET_TICKS).tolist(),
        "ticktext": [f"{v:.1%}".replace(".0%", "%") for v in DET_TICKS],
        "range": det_range(),
        "zeroline": False,
    }
    fig.update_xaxes(title="FAR (false accepts)", **ticks)
    fig.update_yaxes(title="FRR (false rejects)", **ticks)
    _square(fig)
    return layout(fig, "DET curve", height=CURVE_HEIGHT, showlegend=False)


RATE_TICKS = {"tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0], "tickformat": ".0%", "range": [0, 1]}


def roc_curve(curves: dict, op: tuple[float, float] | None = None, auc: float | None = None) -> go.Figure:
    """TPR against FPR, the chance diagonal, and the operating point (fpr, tpr)."""
    fpr, tpr = _arr(curves, "fpr"), _arr(curves, "tpr")
    if not len(fpr):
        fpr, tpr = _arr(curves, "far"), 1 - _arr(curves, "frr")
    order = np.lexsort((tpr, fpr)) if len(fpr) else []
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        line={"dash": "dot", "color": "#999", "width": 1},
        hoverinfo="skip",
        name="chance",
    )
    if len(fpr):
        fig.add_scatter(
            x=np.clip(fpr[order], 0, 1),
            y=np.clip(tpr[order], 0, 1),
            mode="lines",
            name="ROC",
            line={"color": PRECISION_C, "width": 2},
            hovertemplate="FPR %{x:.2%} · TPR %{y:.2%}<extra></extra>",
        )
    else:
        _note(fig, "no scores")
    if op is not None:
        fig.add_scatter(
            x=[op[0]],
            y=[op[1]],
            mode="markers",
            name="operating point",
            cliponaxis=False,
            marker={"size": 12, "color": OP_C, "symbol": "x"},
            hovertemplate="current threshold: FPR %{x:.2%} · TPR %{y:.2%}<extra></extra>",
        )
    fig.update_xaxes(title="false positive rate (FAR)", **RATE_TICKS)
    fig.update_yaxes(title="true positive rate (1 − FRR)", **RATE_TICKS)
    _square(fig)
    title = "ROC curve" + (f" (AUC {display.format_metric('roc_auc', auc)})" if display.finite(auc) else "")
    return layout(fig, title, height=CURVE_HEIGHT, showlegend=False)


# --- calibration -----------------------------------------------------------------------------------


def reliability_diagram(
    bins: Sequence[dict], ece: float | None = None, title: str = "Reliability", color: str = PRECISION_C
) -> go.Figure:
    """Accuracy against confidence per bin (bars at the bins' width), the diagonal of perfect calibration;
    the gap between bar and diagonal is the miscalibration, weighted by the bin's count in the ECE."""
    bins = [b for b in bins if b.get("count")]
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        line={"dash": "dot", "color": "#999", "width": 1},
        hoverinfo="skip",
        name="perfect",
    )
    if bins:
        mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
        fig.add_bar(
            x=mids,
            y=[b["accuracy"] for b in bins],
            width=[b["hi"] - b["lo"] for b in bins],
            name="accuracy",
            marker={"color": color, "line": {"color": "white", "width": 1}},
            opacity=0.85,
            customdata=[[b["confidence"], b["count"], b["lo"], b["hi"]] for b in bins],
            hovertemplate=(
                "confidence %{customdata[2]:.2f}–%{customdata[3]:.2f}: accuracy %{y:.1%}, "
                "mean confidence %{customdata[0]:.1%}, %{customdata[1]:,} images<extra></extra>"
            ),
        )
        fig.add_scatter(
            x=[b["confidence"] for b in bins],
            y=[b["accuracy"] for b in bins],
            mode="markers",
            name="mean confidence",
            marker={"color": OP_C, "size": 6},
            hoverinfo="skip",
        )
    else:
        _note(fig, "no predictions")
    fig.update_xaxes(title="confidence", **RATE_TICKS)
    fig.update_yaxes(title="accuracy", range=[0, 1.02], tickformat=".0%")
    if display.finite(ece):
        title += f" · ECE {display.format_metric('ece', ece)}"
    return layout(fig, title, height=HEIGHT, showlegend=False)

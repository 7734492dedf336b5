"""The Evaluate page's figures (app/evaluate/charts.py) hold their axes: fixed ranges that match the ticks,
every plotted point inside them (extreme rates included), equal scales won by shrinking the plot area and
never by widening an axis, and long class names wrapped onto lines instead of clipped."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from app.evaluate import charts
from engine.metrics import curves


def _curves(seed: int = 0, n: int = 400) -> dict:
    """Real FAR/FRR/ROC arrays: their ends are exactly 0 and 1 (probit of them is infinite); one score is a
    sure 1.0, as a confident model gives, so the reject-all threshold lies just above 1."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.0 * y - 1.0)))
    score[np.flatnonzero(y)[0]] = 1.0
    return {k: np.asarray(v) for k, v in curves(y, score).items()}


def _axes(fig: go.Figure) -> tuple[dict, dict]:
    full = fig.to_plotly_json()["layout"]
    return full.get("xaxis", {}), full.get("yaxis", {})


def _points(fig: go.Figure) -> list[tuple[float, float]]:
    out = []
    for trace in fig.data:
        xs, ys = trace.x, trace.y
        if xs is None or ys is None:
            continue
        out += [(float(x), float(y)) for x, y in zip(xs, ys)]
    return out


def _assert_inside(fig: go.Figure) -> None:
    xaxis, yaxis = _axes(fig)
    assert xaxis.get("range") and yaxis.get("range"), "both axes need a fixed range"
    (x0, x1), (y0, y1) = xaxis["range"], yaxis["range"]
    points = _points(fig)
    assert points
    outside = [(x, y) for x, y in points if not (x0 <= x <= x1 and y0 <= y <= y1) or not np.isfinite([x, y]).all()]
    assert not outside, f"{len(outside)} points outside x {x0:.3f}..{x1:.3f}, y {y0:.3f}..{y1:.3f}: {outside[:5]}"


def _assert_ticks_inside(axis: dict) -> None:
    lo, hi = axis["range"]
    ticks = axis.get("tickvals")
    assert ticks, "the ticks are set, so they match the fixed range"
    assert all(lo <= t <= hi for t in ticks)
    # the range ends near the outer ticks: no wide empty band beyond them
    span = hi - lo
    assert min(ticks) - lo < 0.15 * span and hi - max(ticks) < 0.15 * span


def _assert_square_by_domain(fig: go.Figure) -> None:
    """Axes tied to one scale keep their range and give up plot area (constrain='domain'); plotly's default
    ('range') widened the ROC's x axis to -50%..150% on a wide chart."""
    xaxis, yaxis = _axes(fig)
    for axis in (xaxis, yaxis):
        if axis.get("scaleanchor") or xaxis.get("scaleanchor") or yaxis.get("scaleanchor"):
            assert axis.get("constrain") == "domain", axis


@pytest.mark.parametrize("op", [None, (0.0, 1.0), (0.12, 0.3), (1.0, 0.0)])
def test_det_curve_has_fixed_probit_ranges_matching_its_ticks_and_every_point_inside(op):
    fig = charts.det_curve(_curves(), op)
    _assert_inside(fig)
    xaxis, yaxis = _axes(fig)
    assert xaxis["range"] == pytest.approx(yaxis["range"])
    for axis in (xaxis, yaxis):
        _assert_ticks_inside(axis)
        # the labels are percentages: '0.1%', '1%', '5%', ... and as many as the ticks
        assert len(axis["ticktext"]) == len(axis["tickvals"]) and all(t.endswith("%") for t in axis["ticktext"])
        assert "0.1%" in axis["ticktext"] and "20%" in axis["ticktext"]
    _assert_square_by_domain(fig)


@pytest.mark.parametrize("op", [None, (0.0, 0.0), (0.2, 0.7), (1.0, 1.0)])
def test_roc_curve_spans_exactly_zero_to_one_on_both_axes(op):
    fig = charts.roc_curve(_curves(1), op, auc=0.81234)
    _assert_inside(fig)
    xaxis, yaxis = _axes(fig)
    assert xaxis["range"] == [0, 1] and yaxis["range"] == [0, 1]
    _assert_ticks_inside(xaxis)
    _assert_ticks_inside(yaxis)
    _assert_square_by_domain(fig)
    assert "AUC 0.8123" in fig.layout.title.text  # a score: four decimals, as everywhere


def test_threshold_curves_stay_inside_zero_to_one_with_the_reject_all_threshold():
    c = _curves(2)
    assert c["thresholds"].max() > 1.0  # the reject-all threshold sits just above the top score
    fig = charts.threshold_curves(c, 0.42, {"eer": (0.4, 0.2), "min_hter": (0.5, 0.18)})
    _assert_inside(fig)
    assert any(tr.name == "t = 0.4200" for tr in fig.data)  # the threshold in force, named in the legend


def test_long_class_names_wrap_on_the_axes_instead_of_being_clipped():
    classes = ["negatives_without_glasses_or_hats", "positives with sunglasses and a hat"]
    fig = charts.confusion_heatmap([[5, 1], [2, 7]], classes)
    xaxis, yaxis = _axes(fig)
    for axis in (xaxis, yaxis):
        lines = [line for text in axis["ticktext"] for line in text.split("<br>")]
        assert all(len(line) <= charts.WRAP for line in lines), lines
        assert "".join(lines).replace(" ", "") == "".join(classes).replace(" ", "")  # nothing dropped
    bars = charts.per_class_bars(
        [{"class": c, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10} for c in classes]
    )
    ticks = bars.to_plotly_json()["layout"]["xaxis"]["ticktext"]
    assert all(len(line) <= charts.WRAP for text in ticks for line in text.split("<br>"))


def test_confusion_matrix_cells_fill_the_plot_whatever_the_size_of_the_click_targets():
    """Each cell carries an invisible marker as large as the cell (a click anywhere in it selects it); the
    category axes keep exactly one unit per class instead of padding around those markers."""
    for k in (2, 10):
        fig = charts.confusion_heatmap(np.eye(k, dtype=int) * 5 + 1, [f"class {i}" for i in range(k)])
        xaxis, yaxis = _axes(fig)
        assert xaxis["range"] == [-0.5, k - 0.5] and yaxis["range"] == [k - 0.5, -0.5]  # true classes top to bottom
        markers = next(tr for tr in fig.data if tr.name == "cells")
        if k == 2:  # two rows share ~230 px of plot: the click target is most of a cell, not a dot in its middle
            assert markers.marker.size >= 80


def test_threshold_axis_zooms_to_narrow_scores_and_keeps_every_point_and_the_threshold_inside():
    """A timid model's scores all sit near 0.47: on a 0..1 axis the three curves are one vertical line."""
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    score = 0.46 + 0.02 * rng.random(300) + 0.005 * y
    c = {k: np.asarray(v) for k, v in curves(y, score).items()}
    fig = charts.threshold_curves(c, 0.5, {"eer": (0.47, 0.4)})
    _assert_inside(fig)
    x0, x1 = _axes(fig)[0]["range"]
    assert x1 - x0 < 0.2 and x0 <= 0.46 and x1 >= 0.5  # the band of scores and the threshold in force
    assert "zoomed" in fig.layout.xaxis.title.text
    wide = charts.threshold_curves(_curves(2), 0.42)
    assert list(wide.layout.xaxis.range) == [0, 1]

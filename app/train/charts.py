"""Plotly figures for the Train page, built from a run's metrics.jsonl records (no Streamlit here).

A record is one line of metrics.jsonl: `epoch`, `step`, `split`, `loss` (val), `train_loss`, the val
metrics (`accuracy`, `balanced_accuracy`, `macro_f1`, binary: `auc`, `far`, `frr`, `hter`), `lr`
and `img_per_s`.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from app.common.charts import BLUE, GREEN, ORANGE, PALETTE, PURPLE, RED, TEAL, layout
from engine.metrics.display import is_rate

TRAIN, VAL = BLUE, ORANGE
METRIC_COLORS = {
    "accuracy": BLUE,
    "balanced_accuracy": ORANGE,
    "macro_f1": GREEN,
    "auc": PURPLE,
    "micro_f1": TEAL,
    "macro_f1_tuned": PURPLE,
    "hter": RED,
}
HEIGHT = 300
TOP_RIGHT = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"}
NOT_METRICS = {"epoch", "step", "split", "time", "lr", "img_per_s"}
LOWER_IS_BETTER = {"loss", "train_loss", "hter", "far", "frr", "hamming_loss"}
LABELS = {
    "loss": "val loss",
    "train_loss": "train loss",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "micro_f1": "micro F1",
    "macro_f1_tuned": "macro F1 (per-label thresholds)",
    "auc": "AUC",
    "hter": "HTER",
    "far": "FAR",
    "frr": "FRR",
    "hamming_loss": "Hamming loss",
    "map": "mAP",
}
SHORT = {
    "balanced_accuracy": "bal. acc.",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "micro_f1": "micro F1",
    "macro_f1_tuned": "macro F1 (tuned)",
    "auc": "AUC",
    "hter": "HTER",
    "loss": "val loss",
    "far": "FAR",
    "frr": "FRR",
}
SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "auc")  # the metric chart's lines, if present
# A multi-label run's lines: its accuracy is exact-set match and balanced accuracy says little there; macro F1
# at 0.5 and at per-label thresholds tuned on val are what it is judged by.
MULTILABEL_SCORES = ("macro_f1", "macro_f1_tuned", "micro_f1")


def label(key: str, task: str | None = None) -> str:
    """'val_balanced_accuracy' or 'balanced_accuracy' -> 'balanced accuracy'; a multi-label run's 'accuracy' is
    exact-match accuracy, called 'subset accuracy'."""
    key = key.removeprefix("val_")
    if task == "multilabel" and key == "accuracy":
        return "subset accuracy"
    return LABELS.get(key, key.replace("_", " "))


def short_label(key: str, task: str | None = None) -> str:
    """A label that fits a narrow card: 'val_balanced_accuracy' -> 'bal. acc.'."""
    key = key.removeprefix("val_")
    if task == "multilabel" and key == "accuracy":
        return "subset acc."
    return SHORT.get(key, label(key))


def train_loss_note(cfg: dict, task: str | None = None) -> str:
    """What the train loss is, beside the val loss (always the unweighted log loss, `engine.metrics.log_loss`):
    'weighted BCE', 'focal', 'cross-entropy'... so two different quantities on one axis say which is which."""
    base = "BCE" if task == "multilabel" else "cross-entropy"
    if cfg.get("loss") == "focal":
        base = "focal"
    parts = [base]
    if cfg.get("imbalance") == "weighted_loss":
        parts.insert(0, "weighted")
    if cfg.get("label_smoothing") and task != "multilabel":
        parts.append("smoothed")
    return " ".join(parts)


def val_records(records: list[dict]) -> list[dict]:
    """The per-epoch validation records, one per epoch (the last one wins after a resume)."""
    by_epoch = {r["epoch"]: r for r in records if r.get("split", "val") == "val" and "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def metric_keys(records: list[dict]) -> list[str]:
    """Numeric keys the records carry that are worth plotting (loss first)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in NOT_METRICS and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    order = ["loss", "train_loss", *SCORES, "macro_f1_tuned"]
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [e for e, _ in pts], [v for _, v in pts]


def _epoch_axis(fig: go.Figure, xs: list[float], epochs: int | None) -> None:
    """x in epochs over what has been trained so far (at least one epoch), not the whole planned run: in the
    first epoch its batch losses spread over the width instead of a sliver at the start of 0..N. Whole
    epochs are ticked when there are a few, quarters while the run is in its first epoch."""
    reached = max([x for x in xs if isinstance(x, (int, float))] or [0.0])
    upper = max(1.0, min(float(epochs), reached) if epochs else reached)
    dtick = 0.25 if upper <= 1.0 else 1 if upper <= 20 else None
    fig.update_xaxes(
        title="epoch", range=[0, upper + max(0.03, upper * 0.03)], dtick=dtick, tick0=0
    )  # room for markers


def padded_range(
    values: list[float], lo: float | None = None, hi: float | None = None, pad: float = 0.08
) -> list[float] | None:
    """[min, max] of `values` widened by `pad` of their spread on each side (a flat series gets a small
    band around it), kept within [lo, hi]: differences between epochs fill the chart, not a 0..1 axis."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None
    low, high = min(vals), max(vals)
    margin = (high - low) * pad if high > low else max(abs(high) * 0.05, 0.01)
    low, high = low - margin, high + margin
    if lo is not None:
        low = max(lo, low)
    if hi is not None:
        high = min(hi, high)
    return [low, high]


def _hover(key: str) -> str:
    """A hover value as the app writes this metric (`engine.metrics.display`): rates as percentages."""
    return "%{y:.2%}" if is_rate(key) else "%{y:.4f}"


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#888", "size": 13}
    )


def loss_curves(records: list[dict], epochs: int | None = None, train_note: str = "as optimised") -> go.Figure:
    """Train and validation loss per epoch, plus the throttled batch losses logged during each epoch.

    x is in epochs: a batch record's fractional epoch (0.5 = half-way through the first) and an epoch
    record's number (1 = the end of the first) share one axis; y spans the losses shown, padded."""
    recs = val_records(records)
    fig = go.Figure()
    live = [r for r in records if r.get("split") == "train" and isinstance(r.get("loss"), (int, float))]
    xs: list[float] = []
    ys: list[float] = []
    if live:
        fig.add_scatter(
            x=[r["epoch"] for r in live],
            y=[r["loss"] for r in live],
            mode="lines",
            name="train (batches)",
            line={"color": TRAIN, "width": 1, "dash": "dot"},
            opacity=0.6,
            hovertemplate="epoch %{x:.2f} · batch loss %{y:.4f}<extra></extra>",
        )
        xs += [r["epoch"] for r in live]
        ys += [r["loss"] for r in live]
    for key, color, name in (
        ("train_loss", TRAIN, f"train ({train_note})"),
        ("loss", VAL, "val (log loss, unweighted)"),
    ):
        x, y = _series(recs, key)
        fig.add_scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=name,
            line={"color": color, "width": 2},
            hovertemplate=f"epoch %{{x}} · {name} loss %{{y:.4f}}<extra></extra>",
        )
        xs += x
        ys += y
    if not recs and not live:
        _empty_note(fig, "curves appear after the first batches")
    _epoch_axis(fig, xs, epochs)
    fig.update_yaxes(title=f"loss (train: {train_note}; val: log loss)", range=padded_range(ys, lo=0.0))
    return layout(fig, "Loss", height=HEIGHT, legend=TOP_RIGHT)


def metric_curves(
    records: list[dict], monitor: str | None = None, epochs: int | None = None, task: str | None = None
) -> go.Figure:
    """Validation scores per epoch; the monitored one is drawn thicker and its best epoch marked. y spans
    the scores shown, padded (a fixed 0..1 axis flattened the differences that matter); rates read as
    percentages, as everywhere in the app."""
    recs = val_records(records)
    mon = (monitor or "").removeprefix("val_")
    fig = go.Figure()
    scores = MULTILABEL_SCORES if task == "multilabel" else SCORES
    keys = [k for k in scores if any(isinstance(r.get(k), (int, float)) for r in recs)]
    if mon and mon not in keys and mon != "loss" and any(isinstance(r.get(mon), (int, float)) for r in recs):
        keys.append(mon)
    xs: list[float] = []
    ys: list[float] = []
    for i, key in enumerate(keys):
        x, y = _series(recs, key)
        width = 3 if key == mon else 1.5
        color = METRIC_COLORS.get(key, PALETTE[i % len(PALETTE)])
        fig.add_scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=label(key, task),
            line={"color": color, "width": width},
            hovertemplate=f"epoch %{{x}} · {label(key, task)} {_hover(key)}<extra></extra>",
        )
        xs += x
        ys += y
    best = best_record(recs, mon) if mon else None
    if best is not None and mon in keys:
        fig.add_scatter(
            x=[best["epoch"]],
            y=[best[mon]],
            mode="markers",
            name="best",
            marker={"symbol": "star", "size": 14, "color": "#222"},
            hovertemplate=f"best: epoch %{{x}} · {label(mon, task)} {_hover(mon)}<extra></extra>",
        )
    if not recs:
        _empty_note(fig, "curves appear after the first epoch")
    _epoch_axis(fig, xs, epochs)
    rates = bool(keys) and all(is_rate(k) for k in keys)
    span = padded_range(ys, lo=0.0, hi=1.0) or [0.0, 1.0]
    digits = 0 if span[1] - span[0] >= 0.1 else 1 if span[1] - span[0] >= 0.01 else 2
    fig.update_yaxes(title="validation score", range=span, tickformat=f".{digits}%" if rates else None)
    return layout(fig, "Validation metrics", height=HEIGHT, legend=TOP_RIGHT)


def best_record(records: list[dict], key: str) -> dict | None:
    """The record with the best `key` (lowest for losses and error rates, else highest); ties: earliest."""
    key = key.removeprefix("val_")
    pts = [r for r in val_records(records) if isinstance(r.get(key), (int, float))]
    if not pts:
        return None
    sign = 1 if key in LOWER_IS_BETTER else -1
    return min(pts, key=lambda r: (sign * r[key], r["epoch"]))


def compare_curves(series: dict[str, list[dict]], key: str) -> go.Figure:
    """One line per run for metric `key` (e.g. 'loss', 'balanced_accuracy'), for side-by-side comparison."""
    fig = go.Figure()
    most = max((len(val_records(r)) for r in series.values()), default=0)
    for i, (name, records) in enumerate(series.items()):
        x, y = _series(val_records(records), key)
        fig.add_scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=name,
            line={"color": PALETTE[i % len(PALETTE)], "width": 2},
            hovertemplate=f"{name}<br>epoch %{{x}} · {label(key)} {_hover(key)}<extra></extra>",
        )
    if not series:
        _empty_note(fig, "choose runs to compare")
    fig.update_xaxes(title="epoch", rangemode="tozero", dtick=1 if most <= 20 else None)
    fig.update_yaxes(title=label(key), rangemode="tozero", tickformat=".0%" if is_rate(key) else None)
    title = label(key)
    return layout(
        fig,
        title[0].upper() + title[1:] + " by run",
        height=HEIGHT + 60,
        legend={"orientation": "h", "y": -0.25, "yanchor": "top", "x": 0, "xanchor": "left"},
    )

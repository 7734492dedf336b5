"""Plotly figures for the Dataset page, built from the statistics dict the engine returns (no Streamlit here):
classes (with the minority highlighted), classes per split, image sizes and aspect ratios, and for multi-label
data the label co-occurrence and the commonest label sets."""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

from app.common.charts import BLUE, GREEN, HEIGHT, ORANGE, PALETTE, RED, layout
from engine.data.stats import share_of_images
from engine.metrics.display import percent

BASE, MINORITY = BLUE, RED
SPLIT_COLORS = {"train": BLUE, "val": ORANGE, "test": GREEN}
MAX_TEXT_BARS = 30  # above this many bars, numbers on the bars are clutter: hover instead

BALANCED = 1.2  # max/min class counts below this: nothing to highlight
TICK_CHARS = 18  # class names longer than this are wrapped onto several lines under their bar
MAX_WRAPPED_TICKS = 12  # above this many bars, names stay on one (rotated) line: wrapped ones would collide


def wrapped_ticks(fig: go.Figure, names: list[str]) -> None:
    """Long class names wrapped under their bars instead of rotated across the chart (the hover keeps them whole)."""
    if len(names) <= MAX_WRAPPED_TICKS and any(len(n) > TICK_CHARS for n in names):
        text = ["<br>".join(textwrap.wrap(n, TICK_CHARS, break_long_words=True)) or n for n in names]
        fig.update_xaxes(tickmode="array", tickvals=names, ticktext=text, tickangle=0)


def minority_classes(stats: dict) -> list[str]:
    """Classes as rare as the rarest one (ties included); none when the classes are about balanced."""
    counts = stats.get("class_counts") or {}
    if len(counts) < 2 or max(counts.values()) < BALANCED * min(counts.values()):
        return []
    low = min(counts.values())
    return [name for name, n in counts.items() if n == low]


def class_distribution(stats: dict) -> go.Figure:
    """Images per class (per label for multi-label); minority class(es) in red, extremes annotated."""
    counts = stats["class_counts"]
    names, values = list(counts), list(counts.values())
    total = stats.get("num_images") or sum(values)  # shares of images: the minority share's one definition
    minority = set(minority_classes(stats))
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            marker_color=[MINORITY if n in minority else BASE for n in names],
            text=[f"{v:,}" for v in values] if len(names) <= MAX_TEXT_BARS else None,
            textposition="auto",
            textangle=0,
            customdata=[share_of_images(v, total) for v in values],
            hovertemplate="%{x}: %{y:,} images (%{customdata:.2%} of the images)<extra></extra>",
        )
    )
    majority = stats.get("majority_class")
    if minority and majority in counts:
        fig.add_annotation(
            x=majority,
            y=counts[majority],
            text=f"majority · {percent(share_of_images(counts[majority], total))}",
            showarrow=True,
            arrowhead=2,
            ay=-30,
        )
        for name in sorted(minority)[:3]:
            fig.add_annotation(
                x=name,
                y=counts[name],
                text=f"minority · {percent(share_of_images(counts[name], total))}",
                showarrow=True,
                arrowhead=2,
                ay=-30,
                font={"color": MINORITY},
            )
    what = "Images per label" if stats.get("task") == "multilabel" else "Images per class"
    if len(counts) > 1 and not minority:
        what += " (balanced)"
    fig.update_yaxes(title="images", rangemode="tozero")
    fig.update_xaxes(type="category", automargin=True)
    wrapped_ticks(fig, names)
    return layout(fig, what, showlegend=False)


def split_bars(stats: dict, share: bool = False) -> go.Figure:
    """Per-class counts in each split, grouped; `share` plots each class's share of its split instead,
    which shows at a glance whether the splits are stratified alike."""
    classes = list(stats["class_counts"])
    fig = go.Figure()
    for split, info in stats.get("splits", {}).items():
        counts = info.get("class_counts", {})
        n = info.get("num_images", 0) or 1
        y = [counts.get(c, 0) / n if share else counts.get(c, 0) for c in classes]
        fig.add_bar(
            x=classes,
            y=y,
            name=f"{split} ({info.get('num_images', 0):,})",
            marker_color=SPLIT_COLORS.get(split),
            hovertemplate=f"{split} · %{{x}}: %{{y:{'.2%' if share else ','}}}<extra></extra>",
        )
    fig.update_yaxes(title="share of split" if share else "images", tickformat=".0%" if share else None)
    fig.update_xaxes(type="category", automargin=True)
    wrapped_ticks(fig, classes)
    return layout(
        fig,
        "Classes per split",
        barmode="group",
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0.5, "xanchor": "center"},
    )


def _sizes(stats: dict) -> list[tuple[int, int, int]]:
    return [(int(w), int(h), int(c)) for w, h, c in (stats.get("images", {}).get("sizes") or [])]


def size_scatter(stats: dict) -> go.Figure:
    """Image sizes on disk: width vs height, marker area proportional to how many images have it."""
    sizes = _sizes(stats)
    fig = go.Figure()
    if sizes:
        w, h, c = zip(*sizes)
        biggest = max(c)
        fig.add_scatter(
            x=w,
            y=h,
            mode="markers",
            customdata=c,
            marker={
                "size": c,
                "sizemode": "area",
                "sizeref": 2.0 * biggest / 40**2,
                "sizemin": 5,
                "color": BASE,
                "opacity": 0.7,
                "line": {"width": 1, "color": "white"},
            },
            hovertemplate="%{x} × %{y} px: %{customdata:,} images<extra></extra>",
        )
        top = max(max(w), max(h)) * 1.1
        fig.add_scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            line={"dash": "dot", "color": "#999", "width": 1},
            hoverinfo="skip",
            name="square",
        )
    fig.update_xaxes(title="width (px)", rangemode="tozero")
    fig.update_yaxes(title="height (px)", rangemode="tozero")
    return layout(fig, "Image sizes (on disk)", showlegend=False)


def aspect_histogram(stats: dict) -> go.Figure:
    """Aspect ratios (width / height), weighted by the number of images of each size."""
    sizes = [(w, h, c) for w, h, c in _sizes(stats) if h > 0]
    fig = go.Figure(
        go.Histogram(
            x=[w / h for w, h, _ in sizes],
            y=[c for *_, c in sizes],
            histfunc="sum",
            xbins={"size": 0.05},
            marker_color=BASE,
            hovertemplate="aspect %{x}: %{y:,} images<extra></extra>",
        )
    )
    if sizes:  # keep 1 (square) in view and leave room around a single shared aspect
        aspects = [w / h for w, h, _ in sizes]
        fig.update_xaxes(range=[min(min(aspects), 1) - 0.25, max(max(aspects), 1) + 0.25])
    fig.update_xaxes(title="width / height")
    fig.update_yaxes(title="images")
    return layout(fig, "Aspect ratios", showlegend=False, bargap=0.05)


def cooccurrence_heatmap(stats: dict) -> go.Figure:
    """How often two labels appear on the same image (diagonal: images with the label)."""
    classes = list(stats["class_counts"])
    z = stats["multilabel"]["cooccurrence"]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=classes,
            y=classes,
            colorscale="Blues",
            text=z,
            texttemplate="%{text:,}" if len(classes) <= 15 else None,
            hovertemplate="%{y} & %{x}: %{z:,} images<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, "Label co-occurrence", height=max(HEIGHT, 40 + 28 * len(classes)))


def label_sets(stats: dict, top: int = 15) -> go.Figure:
    """The commonest combinations of labels on one image."""
    rows = stats["multilabel"].get("label_set_counts", [])[:top][::-1]  # biggest at the top
    names = [" + ".join(r["labels"]) or "(no label)" for r in rows]
    fig = go.Figure(
        go.Bar(
            x=[r["count"] for r in rows],
            y=names,
            orientation="h",
            marker_color=BASE,
            text=[f"{r['count']:,}" for r in rows],
            textposition="auto",
            textangle=0,
            hovertemplate="%{y}: %{x:,} images<extra></extra>",
        )
    )
    fig.update_xaxes(title="images")
    fig.update_yaxes(type="category", automargin=True)
    return layout(fig, "Commonest label sets", height=max(HEIGHT, 60 + 24 * len(rows)), showlegend=False)


def hierarchy_treemap(stats: dict) -> go.Figure:
    """Two-level data: a box per coarse class holding a box per fine class, each sized by its images.

    Ids are prefixed by level, so a fine class may share its name with a coarse one ('other')."""
    coarse = (stats.get("hierarchy") or {}).get("coarse") or []
    total = stats.get("num_images") or sum(c["images"] for c in coarse) or 1
    ids, labels, parents, values, colors = [], [], [], [], []
    for k, c in enumerate(coarse):
        colors += [PALETTE[k % len(PALETTE)]] * (1 + len(c["members"]))  # a coarse class and its fine boxes
        ids.append(f"coarse:{c['name']}")
        labels.append(c["name"])
        parents.append("")
        values.append(c["images"])
        for fine, n in c["members"].items():
            ids.append(f"fine:{c['name']}:{fine}")
            labels.append(fine)
            parents.append(f"coarse:{c['name']}")
            values.append(n)
    fig = go.Figure(
        go.Treemap(
            ids=ids,
            labels=labels,
            parents=parents,
            values=values,
            branchvalues="total",
            customdata=[percent(share_of_images(v, total)) for v in values],
            texttemplate="%{label}<br>%{value:,} images",
            hovertemplate="%{label}: %{value:,} images (%{customdata} of the images)<extra></extra>",
            marker={"colors": colors},
        )
    )
    layout(fig, title="Coarse classes and their fine classes (images)", height=HEIGHT)
    fig.update_layout(margin={"t": 40, "l": 0, "r": 0, "b": 0})
    return fig

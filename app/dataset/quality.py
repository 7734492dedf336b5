"""The Dataset page's image-quality galleries and embedding map.

Image quality: per measure of `engine.data.quality` (cleanvision's definitions, one ours) the count, the rule
with its threshold and a gallery of the flagged images worst first, each captioned with its score. The scores
are computed while the dataset opens (`app.common.loaders.load_quality`: a server task whose progress takes the
opening's place, then a file in the cache).

Embedding map: `engine.explain.embedding` places every image (a stratified sample above 20,000) in 2-D; the
points are coloured by class, split, a run's prediction errors or a quality issue; hovering a point shows its
image with its name and label (`app.dataset.map_component`: a small Streamlit component, since Plotly's own hover
labels cannot hold an image; images for up to 2,000 points, the others hover with their name), legend entries
toggle groups, and clicking, box- or lasso-selecting points shows the selected images under the map. The map is
drawn on request (a first UMAP or t-SNE takes seconds to minutes on a small CPU), in a fragment, so a selection
reruns only it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.common import scans
from app.common.charts import PALETTE, layout
from app.common.images import THUMB_PX, for_display
from app.common.loaders import load_quality
from app.dataset.map_component import Thumbnails, hover_thumbnails, map_chart
from engine.data import Dataset
from engine.data.quality import QualityReport, measures
from engine.data.stats import label_text
from engine.errors import LoupeError
from engine.metrics.display import number, threshold

GALLERY = 16  # flagged images shown per measure, worst first
SELECTED_SHOWN = 48  # selected images shown under the map
MAP_HEIGHT = 560
K_METHOD, K_COLOUR, K_RUN, K_DRAW = "dataset.map.method", "dataset.map.colour", "dataset.map.run", "dataset.map.draw"
K_CHART = "dataset.map.chart"
METHODS = {
    "auto": "Auto (t-SNE below 5,000 points, UMAP above)",
    "umap": "UMAP",
    "tsne": "t-SNE",
    "pca": "PCA (instant)",
}
CLASS, SPLIT, ERRORS = "class", "split", "prediction error (a run)"
ISSUE = "issue: "
FLAGGED, FINE = "flagged", "not flagged"
COLOURS = {"wrong": "#E45756", "right": "#4C78A8", "not scored": "#BAB0AC", FLAGGED: "#E45756", FINE: "#BAB0AC"}


def caption(ds: Dataset, i: int, score: float | None = None) -> str:
    """A thumbnail's caption: its score (4 decimals) when given, its label and its folder/file name."""
    parts = [f"score {number(score)}"] if score is not None else []
    return " · ".join([*parts, label_text(ds.classes, ds.labels[i]), ds.source.item_id(i)])


def show_quality(ds: Dataset, report: QualityReport) -> None:
    """One expander per measure: the rule with its threshold and whose definition it is, then the flagged images
    worst first with their scores (or that none is flagged). `report` was computed while the dataset opened."""
    st.subheader("Image quality")
    counts = report.counts()
    found = [f"{counts[m.key]:,} {m.title.lower()}" for m in measures() if counts[m.key]]
    st.caption(
        ("Flagged: " + ", ".join(found) + "." if found else "No image is flagged by any measure.")
        + " Scores are in [0, 1], low meaning the problem; each measure flags the images below its threshold. "
        "cleanvision's definitions, computed on the decoded images (see README, Data quality)."
    )
    for m in measures():
        n = counts[m.key]
        applies = report.applies[m.key]
        title = f"{m.title}: {n:,} flagged" if applies else f"{m.title}: not applicable"
        with st.expander(title, expanded=False):
            source = "cleanvision's definition" if m.source == "cleanvision" else "Loupe's own measure"
            st.caption(f"Rule ({source}), threshold {threshold(report.thresholds[m.key])}: {m.rule}.")
            if not applies:
                st.caption("Every image of this dataset is grayscale, so none is flagged for it.")
                continue
            flagged = report.flagged(m.key)
            if not len(flagged):
                st.caption("No image is flagged by this measure.")
                continue
            if n > GALLERY:
                st.caption(f"The {GALLERY} lowest scores of {n:,}.")
            shown = [int(i) for i in flagged[:GALLERY]]
            st.image(
                [for_display(ds.thumbnail(i)) for i in shown],
                caption=[caption(ds, i, float(report.scores[m.key][i])) for i in shown],
                width=THUMB_PX,
            )


# --- the embedding map ------------------------------------------------------------------------------


def runs_on(ds: Dataset) -> list[str]:
    """Paths of the runs trained on this dataset's content that saved predictions, newest first."""
    from engine.runs.folder import list_runs

    out = []
    for run in list_runs():
        if run.config().get("dataset_fingerprint") == ds.fingerprint and any(run.predictions.glob("*.npz")):
            out.append(str(run.path))
    return out


def load_map(spec: str, ds: Dataset, method: str) -> Any:
    """The map for `method`, computed once per dataset content in a server task (progress bar meanwhile)."""
    from engine.explain.embedding import embedding_map

    key = ("embedding", spec, ds.fingerprint, ds.image_size, ds.channels, method)  # Re-scan forgets it (key[1])
    return scans.result(key, lambda progress: embedding_map(ds, method=method, progress=progress), "Embedding map")


def load_thumbnails(spec: str, ds: Dataset, method: str, emap: Any) -> Thumbnails:
    """The map's hover images, encoded once per map in a server task (a second or two for 2,000 files)."""
    key = ("map-thumbnails", spec, ds.fingerprint, ds.image_size, ds.channels, method)  # Re-scan forgets it
    return scans.result(key, lambda progress: hover_thumbnails(ds, emap.indices, progress=progress), "Hover images")


def colour_groups(ds: Dataset, emap: Any, colour: str, run: str | None, report: QualityReport | None) -> np.ndarray:
    """(n,) the group name of each point for `colour`."""
    from engine.explain.embedding import class_key, prediction_errors, split_names

    idx = emap.indices
    if colour == CLASS:
        keys = class_key(ds)[idx]
        names = np.array([*ds.classes, "(no label)"], dtype=object)
        return names[np.where(keys < 0, len(ds.classes), keys)]
    if colour == SPLIT:
        return split_names(ds, idx)
    if colour == ERRORS:
        return prediction_errors(run, ds, idx)
    key = next(m.key for m in measures() if ISSUE + m.title == colour)
    flagged = np.zeros(len(ds), bool)
    flagged[report.flagged(key)] = True
    return np.where(flagged[idx], FLAGGED, FINE).astype(object)


def map_figure(ds: Dataset, emap: Any, groups: np.ndarray, title: str) -> go.Figure:
    """One WebGL trace per group (legend entries toggle them); customdata holds each point's dataset index and
    text its name and label, which the map component shows on hover beside the image (Plotly's own hover label
    is off: it cannot hold an image)."""
    fig = go.Figure()
    order = list(dict.fromkeys(sorted(set(groups.tolist()), key=lambda g: (g in (FINE, "not scored"), str(g)))))
    for k, name in enumerate(order):
        sel = np.flatnonzero(groups == name)
        items = emap.indices[sel]
        text = [f"{ds.source.item_id(int(i))}<br>{label_text(ds.classes, ds.labels[int(i)])}" for i in items]
        fig.add_trace(
            go.Scattergl(
                x=emap.xy[sel, 0],
                y=emap.xy[sel, 1],
                mode="markers",
                name=f"{name} ({len(sel):,})",
                marker={"size": 6, "color": COLOURS.get(str(name), PALETTE[k % len(PALETTE)]), "opacity": 0.8},
                customdata=items,
                text=text,
                meta=str(name),
                hoverinfo="none",
            )
        )
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return layout(
        fig,
        title,
        height=MAP_HEIGHT,
        dragmode="lasso",
        legend={"itemsizing": "constant"},
        template="plotly_white",
    )


@st.fragment
def show_embedding(spec: str, ds: Dataset) -> None:
    """The map's controls, the map on request and the images selected on it (only this part reruns)."""
    st.subheader("Embedding map")
    left, middle, right = st.columns(3)
    method = left.selectbox("Projection", list(METHODS), format_func=METHODS.get, key=K_METHOD)
    options = [CLASS, SPLIT, ERRORS] + [ISSUE + m.title for m in measures()]
    colour = middle.selectbox("Colour by", options, key=K_COLOUR)
    run = None
    if colour == ERRORS:
        runs = runs_on(ds)
        if not runs:
            right.caption("No run trained on this dataset has saved predictions yet: train one on the Train page.")
            return
        run = right.selectbox("Run", runs, format_func=lambda p: p.rsplit("/", 1)[-1], key=K_RUN)
    if not st.toggle("Draw the embedding map", key=K_DRAW, help="UMAP or t-SNE take a while on a CPU the first time"):
        st.caption("A 2-D map of the images, look-alikes close together: switch it on to compute it (cached after).")
        return
    try:
        emap = load_map(spec, ds, method)
        report = load_quality(spec, ds) if colour.startswith(ISSUE) else None
        groups = colour_groups(ds, emap, colour, run, report)
        thumbs = load_thumbnails(spec, ds, method, emap)
    except LoupeError as e:
        st.error(str(e))
        return
    sample = (
        f" (a stratified sample of {len(emap.indices):,} of {emap.usable:,} images)"
        if emap.sampled
        else f" ({len(emap.indices):,} images)"
    )
    hover = (
        f"Hover a point to see its image (images for a stratified sample of {len(thumbs.urls):,} of "
        f"{thumbs.drawn:,} points; the others show their name only)"
        if thumbs.partial
        else "Hover a point to see its image"
    )
    st.caption(
        f"{emap.method} of {emap.features}{sample}. {hover}; click, box- or lasso-select points to see their "
        "images below (double-click the map to clear); click a legend entry to hide or show its group."
    )
    fig = map_figure(ds, emap, groups, f"Embedding map, coloured by {colour}")
    items = map_chart(fig, thumbs, emap.indices, MAP_HEIGHT, key=K_CHART)
    show_selection(ds, items, caption)


def show_selection(ds: Dataset, items: list[int], captions: Callable[[Dataset, int], str]) -> None:
    """The images selected on the map (the first `SELECTED_SHOWN`), captioned, in a container of their own."""
    with st.container(key="dataset-map-selection"):
        if not items:
            st.caption("Nothing selected on the map.")
            return
        more = f" (the first {SELECTED_SHOWN} shown)" if len(items) > SELECTED_SHOWN else ""
        st.markdown(f"**{len(items):,} image{'s' if len(items) != 1 else ''} selected**{more}")
        shown = items[:SELECTED_SHOWN]
        st.image(
            [for_display(ds.thumbnail(i)) for i in shown], caption=[captions(ds, i) for i in shown], width=THUMB_PX
        )

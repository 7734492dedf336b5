"""The embedding map as a small two-way Streamlit component, so that hovering a point shows its image.

Why a component: `st.plotly_chart`'s hover labels are SVG text and cannot hold an <img>. The front end is one
hand-written page (`map_frontend/index.html`, no build step) that speaks Streamlit's component protocol by
postMessage, draws the same Plotly figure the page built (`map_figure`), shows a floating thumbnail with the file
name and label beside the cursor, and sends back the dataset indices of clicked, boxed or lassoed points. Its
plotly.js is the installed plotly package's own file, copied beside index.html into the cache folder
(`frontend_dir`): the app is offline (no CDN), and Streamlit serves a component only the files inside its folder.

Payload: thumbnails go with the figure as data URLs (`app.common.images.data_url`), for at most `THUMBS_MAX` points,
a class-stratified subset of those drawn (the others hover with their name only, and the page's caption says so).
Measured on a busy 2-core CPU: 2,000 Fashion-MNIST thumbnails are 1.5 MB, built in 0.3 s; digits 190 bytes each;
photos (64-px JPEG, decoded from their files) about 1.1 KB each, 2.2 MB and about 2 s for 2,000. They are built
once per map in a server task (`app.dataset.quality.load_thumbnails`). Drawing fashion-binary's 7,954-point map
sent the browser 2.1 MB; the rerun after a click 3.7 KB, as Streamlit sends an unchanged element by reference.

The value is `{"figure": figure_id, "points": [dataset indices]}`: `selected_items` checks it (it comes from the
browser) and drops a selection made on another figure (the map redrawn for another colouring or projection clears
the selection on screen, so the images under the map must go too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit.components.v1 as components

from app.common.images import THUMB_PX, data_url
from engine.data import Dataset
from engine.data.cache import cache_dir

FRONTEND = Path(__file__).with_name("map_frontend")  # index.html, in the repository
THUMBS_MAX = 2_000  # points that get a hover image (a class-stratified subset of the drawn ones)
NAME = "embedding_map"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Thumbnails:
    """Hover images of a map: `urls[i]` is dataset item i's data URL, for at most `THUMBS_MAX` of `drawn` points."""

    urls: dict[int, str]
    drawn: int

    @property
    def partial(self) -> bool:
        return len(self.urls) < self.drawn

    @property
    def size_bytes(self) -> int:
        return sum(len(u) for u in self.urls.values())


def hover_thumbnails(
    ds: Dataset, indices: np.ndarray, limit: int = THUMBS_MAX, progress: Progress | None = None
) -> Thumbnails:
    """Data URLs of up to `limit` of the map's points (`indices`, dataset items), each class keeping its share,
    so a map of 20,000 points stays a few MB. Images come from `ds.thumbnail` (the original file when there is one)."""
    from engine.explain.embedding import class_key, stratified_sample

    indices = np.asarray(indices, dtype=np.int64)
    chosen = stratified_sample(class_key(ds), indices, limit) if len(indices) > limit else indices
    urls: dict[int, str] = {}
    for k, i in enumerate(chosen.tolist()):
        urls[i] = data_url(ds.thumbnail(i))
        if progress and k % 100 == 0:
            progress(k, len(chosen), "encoding hover images")
    return Thumbnails(urls, len(indices))


def figure_id(figure_json: str) -> str:
    """A short id of the figure: a selection belongs to the figure it was made on."""
    return hashlib.sha1(figure_json.encode()).hexdigest()[:16]


def component_args(fig: go.Figure, thumbs: Thumbnails, height: int) -> dict[str, Any]:
    """What the front end gets: the figure as JSON, its id, the hover images by dataset index (JSON keys are
    strings), the width they are shown at, and the frame's height."""
    figure = fig.to_json()
    return {
        "figure": figure,
        "figure_id": figure_id(figure),
        "thumbs": {str(i): u for i, u in thumbs.urls.items()},
        "thumb_px": THUMB_PX,
        "height": height,
    }


def selected_items(value: Any, current: str, drawn: np.ndarray) -> list[int]:
    """The dataset indices selected on the map, in the order sent, without repeats: from the component's value
    when it was made on the figure `current` and names only points of the map (`drawn`); nothing otherwise."""
    if not isinstance(value, dict) or value.get("figure") != current or not isinstance(value.get("points"), list):
        return []
    allowed = set(np.asarray(drawn).tolist())
    out = [p for p in value["points"] if isinstance(p, int) and not isinstance(p, bool) and p in allowed]
    return list(dict.fromkeys(out))


def frontend_dir() -> Path:
    """The component's folder: index.html and the installed plotly.min.js, copied into the cache folder once per
    version of either (a new folder, renamed into place, so concurrent sessions never see half a copy)."""
    import plotly

    page = (FRONTEND / "index.html").read_bytes()
    plotly_js = Path(plotly.__file__).with_name("package_data") / "plotly.min.js"
    digest = hashlib.sha1(page + plotly.__version__.encode()).hexdigest()[:12]
    target = cache_dir() / "components" / f"{NAME}-{digest}"
    if (target / "index.html").is_file() and (target / "plotly.min.js").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    try:
        shutil.copyfile(plotly_js, tmp / "plotly.min.js")
        (tmp / "index.html").write_bytes(page)
        os.replace(tmp, target)
    except OSError:
        if not (target / "index.html").is_file():  # not another session's copy that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def map_chart(fig: go.Figure, thumbs: Thumbnails, drawn: np.ndarray, height: int, key: str) -> list[int]:
    """Draw the map with hover images; returns the dataset indices selected on it (see `selected_items`)."""
    args = component_args(fig, thumbs, height)
    component = components.declare_component(NAME, path=str(frontend_dir()))
    value = component(**args, key=key, default=None)
    return selected_items(value, args["figure_id"], drawn)

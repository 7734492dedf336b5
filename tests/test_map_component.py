"""The embedding map's component, Python side (`app.dataset.map_component`): the hover images (encoded small, capped
to a class-stratified subset of the drawn points), the args the front end gets, the value it sends back parsed into
dataset indices, and the folder Streamlit serves it from (index.html beside the installed plotly.js)."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
import pytest
from PIL import Image

from app.common.images import HOVER_PX, THUMB_PX, data_url
from app.dataset import map_component as M
from engine.data import open_dataset
from tests.conftest import make_class_folders


def decoded(url: str) -> Image.Image:
    head, _, payload = url.partition(",")
    assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_data_url_keeps_tiny_images_lossless_and_shrinks_photos():
    digit = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    url = data_url(digit)
    assert url.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(decoded(url)), digit[:, :, 0])  # its own size, every pixel kept
    photo = np.random.default_rng(1).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    url = data_url(photo)
    assert url.startswith("data:image/jpeg;base64,")
    assert decoded(url).size == (48, HOVER_PX)  # at most HOVER_PX, the aspect ratio kept
    assert len(url) < 8_000  # a few KB: thousands of them fit in one page


def shrunk(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR), dtype=float)


@pytest.fixture
def folder_ds(tmp_path: Path):
    root = make_class_folders(tmp_path / "data" / "pics", {"cats": 24, "dogs": 12}, size=(80, 60))
    return open_dataset(str(root))


def test_hover_thumbnails_are_capped_to_a_class_stratified_subset_of_the_drawn_points(folder_ds):
    ds = folder_ds
    drawn = np.arange(len(ds))[::-1].copy()  # every item, in another order than the dataset's
    seen = []
    thumbs = M.hover_thumbnails(ds, drawn, limit=9, progress=lambda done, total, stage: seen.append((total, stage)))
    assert len(thumbs.urls) == 9 and thumbs.drawn == 36 and thumbs.partial
    assert set(thumbs.urls) <= set(drawn.tolist())
    classes = [int(ds.labels[i]) for i in thumbs.urls]
    assert sorted(classes) == [0] * 6 + [1] * 3  # 24:12 kept as 6:3
    assert seen and seen[0] == (9, "encoding hover images")
    first, *others = thumbs.urls
    for i in thumbs.urls:  # each is that item's own image (ds.thumbnail), shrunk: near it, far from another's
        img = np.asarray(decoded(thumbs.urls[i]).convert("RGB"), dtype=float)
        assert max(img.shape[:2]) == HOVER_PX
        own, other = (shrunk(ds.thumbnail(j), img.shape) for j in (i, first if i != first else others[0]))
        assert np.abs(img - own).mean() < 0.5 * np.abs(img - other).mean()
    assert thumbs.size_bytes == sum(len(u) for u in thumbs.urls.values())
    whole = M.hover_thumbnails(ds, drawn[:5])
    assert sorted(whole.urls) == sorted(drawn[:5].tolist()) and not whole.partial  # under the cap: all of them
    assert M.THUMBS_MAX == 2_000


def test_component_args_carry_the_figure_its_id_and_the_images_by_dataset_index():
    fig = go.Figure(go.Scattergl(x=[0.0, 1.0], y=[1.0, 0.0], customdata=[5, 9], text=["a.png<br>cat", "b.png<br>dog"]))
    thumbs = M.Thumbnails({5: "data:image/png;base64,AAAA"}, drawn=2)
    args = M.component_args(fig, thumbs, height=560)
    assert json.loads(args["figure"]) == json.loads(fig.to_json())
    assert args["thumbs"] == {"5": "data:image/png;base64,AAAA"}  # JSON keys are strings
    assert args["thumb_px"] == THUMB_PX and args["height"] == 560
    assert args["figure_id"] == M.figure_id(args["figure"]) and len(args["figure_id"]) == 16
    fig.update_layout(title="another colouring")
    assert M.component_args(fig, thumbs, 560)["figure_id"] != args["figure_id"]
    json.dumps(args)  # all of it travels as JSON


def test_selected_items_reads_the_component_value_for_the_current_figure_only():
    drawn = np.array([3, 7, 11])
    value = {"figure": "f1", "points": [7, 3, 7]}
    assert M.selected_items(value, "f1", drawn) == [7, 3]  # in the order sent, no repeats
    assert M.selected_items(value, "f2", drawn) == []  # made on another figure (colouring, projection)
    assert M.selected_items({"figure": "f1", "points": []}, "f1", drawn) == []  # cleared by a double-click
    # the value comes from the browser: anything but whole numbers of this map is dropped
    odd = {"figure": "f1", "points": [11, 4, True, "3", 7.0, None, -1]}
    assert M.selected_items(odd, "f1", drawn) == [11]
    for bad in (None, [], "f1", {"figure": "f1"}, {"figure": "f1", "points": "3"}, {"points": [3]}):
        assert M.selected_items(bad, "f1", drawn) == []


def test_frontend_folder_holds_the_page_and_the_installed_plotly_js():
    folder = M.frontend_dir()
    assert folder.parent == Path(os.environ["LOUPE_CACHE_DIR"]) / "components"
    page = (folder / "index.html").read_text()
    assert page == (M.FRONTEND / "index.html").read_text()
    shipped = Path(plotly.__file__).with_name("package_data") / "plotly.min.js"
    assert (folder / "plotly.min.js").read_bytes() == shipped.read_bytes()  # offline: no CDN
    assert '<script src="plotly.min.js">' in page
    for message in (
        "streamlit:componentReady",
        "streamlit:render",
        "streamlit:setFrameHeight",
        "streamlit:setComponentValue",
    ):
        assert message in page
    assert M.frontend_dir() == folder  # copied once

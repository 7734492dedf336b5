"""The Dataset page's Image quality galleries and Embedding map, driven through AppTest on constructed real images
(`tests/test_data_quality.make_quality_folder`): each measure's count, rule and ranked gallery with scores; the map
drawn (PCA, quick) as the map component with its hover images, coloured by class and by an issue, and a selection
sent back from the browser shown under the map."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.test_data_quality import make_quality_folder

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
RAW = re.compile(r"\b(nan|NaN|inf)\b|\bNone\b(?! found|:)|object at 0x")  # "None found." is a word


def test_quality_galleries_and_embedding_map(tmp_path: Path):
    root = make_quality_folder(tmp_path / "photos")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["dataset"] = str(root)
    at.run()
    assert not at.exception and not at.error
    heads = [s.value for s in at.subheader]
    assert heads[-2:] == ["Image quality", "Embedding map"]
    labels = [e.label for e in at.expander]
    assert labels == [
        "Blurry: 1 flagged",
        "Too dark: 1 flagged",
        "Too bright: 1 flagged",
        "Low information (near-constant): 1 flagged",
        "Odd aspect ratio: 1 flagged",
        "Odd size: 2 flagged",
        "Grayscale in a colour set: 3 flagged",
    ]
    blurry = at.expander[0]
    assert "below 0.29" in blurry.caption[0].value and "cleanvision" in blurry.caption[0].value
    first = blurry.image[0].captions[0]
    assert re.fullmatch(r"score 0\.\d{4} · problem · problem/blurry\.png", first), first
    sizes = at.expander[5]
    size_captions = [c for img in sizes.image for c in img.captions]
    assert [c.split(" · ")[-1] for c in size_captions] == ["problem/odd_size.png", "problem/odd_aspect_ratio.png"]
    scores = [float(c.split(" · ")[0].removeprefix("score ")) for c in size_captions]
    assert scores == sorted(scores)  # worst (lowest) first
    text = " ".join([c.value for c in at.caption] + [m.value for m in at.markdown])
    assert not RAW.search(text), RAW.search(text)

    # the map, on request: PCA (instant), coloured by class, then by an issue. It is the map component (an unknown
    # element to AppTest): its args carry the figure and the hover images
    at.selectbox(key="dataset.map.method").set_value("pca").run()
    at.toggle(key="dataset.map.draw").set_value(True).run()
    assert not at.exception and not at.error
    args = map_args(at)
    fig = json.loads(args["figure"])
    assert fig["layout"]["title"]["text"] == "Embedding map, coloured by class"
    assert fig["layout"]["dragmode"] == "lasso"
    names = [t["name"] for t in fig["data"]]
    assert names == ["people (5)", "problem (7)", "things (4)"]
    assert all(t["hoverinfo"] == "none" for t in fig["data"])  # the component draws the hover, with the image
    assert sorted(int(i) for i in args["thumbs"]) == list(range(16))  # 16 points, under the cap: every one
    assert all(u.startswith("data:image/") for u in args["thumbs"].values())
    assert any("PCA of frozen efficientnet-lite0 features" in c.value for c in at.caption)
    assert any(c.value.endswith("click a legend entry to hide or show its group.") for c in at.caption)
    assert any("Hover a point to see its image;" in c.value for c in at.caption)
    # a lasso selection as the browser sends it: the images show under the map, captioned
    problem = [int(i) for i in decode_typed(fig["data"][1]["customdata"])]
    at.session_state[KEY] = {"figure": args["figure_id"], "points": problem[:2]}
    at.run()
    assert not at.exception and not at.error
    assert any(m.value == "**2 images selected**" for m in at.markdown)
    shown = at.image[-1].captions
    assert shown == ["problem · problem/blurry.png", "problem · problem/dark.png"], shown
    at.selectbox(key="dataset.map.colour").set_value("issue: Blurry").run()
    args = map_args(at)
    fig = json.loads(args["figure"])
    assert [t["name"] for t in fig["data"]] == ["flagged (1)", "not flagged (15)"]
    flagged = fig["data"][0]
    assert "problem/blurry.png" in flagged["text"][0]
    # the selection was made on the class colouring, which the browser no longer shows
    assert any(c.value == "Nothing selected on the map." for c in at.caption)


KEY = "dataset.map.chart"


def map_args(at: AppTest) -> dict:
    """The args of the embedding map component drawn last (AppTest sees a component as an unknown element)."""
    maps = [e for e in at.get("component_instance") if e.proto.component_name.endswith(".embedding_map")]
    assert maps, "no embedding map drawn"
    return json.loads(maps[-1].proto.json_args)


def decode_typed(value) -> list:
    """A Plotly JSON array: a plain list, or a typed array ({dtype, bdata}) as plotly writes numpy arrays."""
    if isinstance(value, list):
        return value
    return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()

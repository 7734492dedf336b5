"""The Dataset page's Image quality galleries and Embedding map, driven through AppTest on constructed real images
(`tests/test_data_quality.make_quality_folder`): each measure's count, rule and ranked gallery with scores; the map
drawn (PCA, quick), coloured by class and by an issue."""

from __future__ import annotations

import json
import re
from pathlib import Path

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

    # the map, on request: PCA (instant), coloured by class, then by an issue
    at.selectbox(key="dataset.map.method").set_value("pca").run()
    at.toggle(key="dataset.map.draw").set_value(True).run()
    assert not at.exception and not at.error
    fig = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert fig["layout"]["title"]["text"] == "Embedding map, coloured by class"
    assert fig["layout"]["dragmode"] == "lasso"
    names = [t["name"] for t in fig["data"]]
    assert names == ["people (5)", "problem (7)", "things (4)"]
    assert any("PCA of frozen efficientnet-lite0 features" in c.value for c in at.caption)
    at.selectbox(key="dataset.map.colour").set_value("issue: Blurry").run()
    fig = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert [t["name"] for t in fig["data"]] == ["flagged (1)", "not flagged (15)"]
    flagged = fig["data"][0]
    assert "problem/blurry.png" in flagged["text"][0]
    assert any(c.value == "Nothing selected on the map." for c in at.caption)

"""The Predict page through AppTest: the built-in ImageNet model (the default before any training) on a real
photo of a cat, a tiny real run (digits, small CNN, 8 px, 1 epoch, trained here in seconds) on an uploaded PNG
with Grad-CAM and a TorchScript export, and a corrupt upload next to good ones (one error, the rest predicted,
the table with its CSV, the unsure threshold)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.runs.folder import Run
from tests.pagetools import open_page, train_tiny

CATS = ("tabby", "tiger cat", "egyptian cat", "persian", "siamese")
BIG_LINE = re.compile(r"^## (\d{1,3})% (.+)$")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    return train_tiny(tmp_path_factory.mktemp("predict-runs"), "builtin:digits", 8, session_cache)


def open_predict(run: Run | None = None) -> AppTest:
    return open_page("pages/prediction.py", "Predict", run)


def upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="pred.uploader").set_value(list(files)).run()
    assert not at.exception, at.exception
    return at


def big_lines(at: AppTest) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in (BIG_LINE.match(md.value) for md in at.markdown) if m]


def top_k_classes(at: AppTest) -> list[list[str]]:
    out = []
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        if fig.get("layout", {}).get("title", {}).get("text", "").startswith("Top "):
            out.append([str(y) for y in fig["data"][0]["y"]])
    return out


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def digit_png(i: int) -> bytes:
    from sklearn.datasets import load_digits

    img = load_digits().images[i]
    return encode((img * (255 / 16)).round().astype(np.uint8).repeat(4, 0).repeat(4, 1), "PNG")


def test_builtin_imagenet_is_the_default_and_sees_a_cat():
    from skimage.data import chelsea

    at = open_predict()
    assert at.selectbox(key="pred.model").value == "builtin:imagenet"
    assert any("No trained run yet" in c.value for c in at.caption)
    upload(at, ("chelsea.jpg", encode(chelsea(), "JPEG"), "image/jpeg"))
    assert not at.error
    lines = big_lines(at)
    assert len(lines) == 1 and 0 < lines[0][0] <= 100
    (top,) = top_k_classes(at)
    assert len(top) == 5
    assert any(any(cat in c.lower() for cat in CATS) for c in top), top
    assert any("took" in c.value and "ms" in c.value for c in at.caption)
    assert not at.get("download_button")  # one image: no table, no CSV


def test_run_predicts_an_uploaded_png_with_gradcam_and_export(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_predict(run)
    assert at.selectbox(key="pred.model").value == run.id
    upload(at, ("three.png", digit_png(3), "image/png"))
    assert not at.error
    (line,) = big_lines(at)
    assert line[1] in run.classes()
    assert any(c.value.startswith("confidence ") and "%" in c.value for c in at.caption)
    assert len(top_k_classes(at)[0]) == 5
    # Grad-CAM overlay from the run's model
    at.toggle(key="pred.gradcam").set_value(True).run()
    assert not at.exception and not at.error
    assert "Grad-CAM overlay" in [c for el in at.image for c in el.captions]
    # export to TorchScript, offered for download
    at.radio(key="pred.export.fmt").set_value("torchscript")
    at.button(key="pred.export.go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    names = [b.proto.label for b in at.get("download_button")]
    assert any(n.endswith(".pt") for n in names) and any(n.endswith(".pt.json") for n in names), names


def test_corrupt_upload_next_to_good_ones_and_the_table(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_predict(run)
    upload(
        at,
        ("a.png", digit_png(0), "image/png"),
        ("broken.jpg", b"\xff\xd8 not really a jpeg", "image/jpeg"),
        ("b.png", digit_png(1), "image/png"),
    )
    assert len(at.error) == 1 and "broken.jpg" in at.error[0].value
    assert len(big_lines(at)) == 2
    df = at.dataframe[0].value
    assert list(df["file"]) == ["a.png", "broken.jpg", "b.png"]
    assert list(df["flag"])[1] == "error" and all(0 <= c <= 1 for c in df["confidence"].dropna())
    assert any(b.proto.label == "Download CSV" for b in at.get("download_button"))
    # everything is unsure below a threshold of 1.0 (without re-running the model)
    at.slider(key="pred.unsure").set_value(1.0).run()
    assert not at.exception
    assert list(at.dataframe[0].value["flag"]) == ["unsure", "error", "unsure"]
    # the built-in model can still be chosen while runs exist, and stays chosen
    at.selectbox(key="pred.model").set_value("builtin:imagenet").run()
    assert not at.exception and at.selectbox(key="pred.model").value == "builtin:imagenet"
    at.run()
    assert at.selectbox(key="pred.model").value == "builtin:imagenet"
    assert len(at.error) == 1 and len(big_lines(at)) == 2


# --- "unsure" for binary runs (issue 13, item 5) ----------------------------------------------------------


@pytest.fixture(scope="module")
def run_at_55(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    """A real binary run whose best weights are then set to answer 55% 'positives' for every image: the final
    layer's weights zeroed, its bias the log-odds of 0.55 (the rest of the network untouched)."""
    import torch

    from engine.models.factory import build_model
    from engine.runs.checkpoint import load_weights, save_weights
    from tests.conftest import make_class_folders

    root = tmp_path_factory.mktemp("binary-55")
    data = make_class_folders(root / "faces", {"negatives": 60, "positives": 20})
    run = train_tiny(root / "runs", str(data), 16, session_cache)
    header = run.config()
    model, _ = build_model(
        header["config"]["model"],
        2,
        in_chans=int(header.get("channels", 3)),
        pretrained=False,
        allow_scratch=True,
        image_size=16,
    )
    best = run.checkpoints / "best.safetensors"
    load_weights(model, best)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, float(np.log(0.55 / 0.45))]))
    save_weights(model, best)
    return run


def test_a_55_percent_binary_prediction_is_flagged_unsure_at_the_default_margin(run_at_55, monkeypatch):
    """A binary top class always has >= 50%, so "top confidence below 0.5" called 55% confident; the rule is now
    the distance from the decision threshold (0.5 here: none saved), below a margin stated on the slider."""
    from engine.predict.unsure import DEFAULT_MARGIN

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run_at_55.path.parent))
    at = open_predict(run_at_55)
    slider = at.slider(key="pred.unsure")
    assert slider.value == DEFAULT_MARGIN and f"default {DEFAULT_MARGIN:g}" in slider.label
    assert "threshold" in slider.help and "(this model)" in slider.help
    upload(
        at,
        ("a.png", encode(np.full((16, 16, 3), 90, np.uint8), "PNG"), "image/png"),
        ("b.png", encode(np.full((16, 16, 3), 200, np.uint8), "PNG"), "image/png"),
    )
    assert not at.error
    assert big_lines(at) == [(55, "positives"), (55, "positives")]
    cards = [md.value for md in at.markdown if md.value.startswith("Decision:")]
    assert len(cards) == 2 and all(":orange-badge[" in c and "unsure" in c for c in cards), cards
    assert all("score 0.5500" in c and "threshold 0.5000" in c for c in cards), cards
    df = at.dataframe[0].value
    assert list(df["flag"]) == ["unsure", "unsure"] and list(df["margin"]) == ["0.0500", "0.0500"]
    # a narrower margin than 0.05 calls them confident (the model is not re-run)
    at.slider(key="pred.unsure").set_value(0.04).run()
    assert list(at.dataframe[0].value["flag"]) == ["ok", "ok"]
    for el in (*at.markdown, *at.caption):
        assert not re.search(r"\b(None|nan)\b", el.value), el.value


def test_the_chosen_run_stays_chosen_while_its_results_change(run, tmp_path, monkeypatch):
    """Issue 13, item 6's pattern on this page: the model picker's labels carried the run's state and best metric,
    which change while a run trains; the browser sends back the label it shows, which then named no option, and
    the choice fell back to the first run. Labels are stable now; state and best metric are in the caption."""
    import os
    import shutil

    from tests.test_page_explain import _browser_sends

    root = tmp_path / "runs"
    newer, older = root / f"{run.id}-newer", root / f"{run.id}-older"
    shutil.copytree(run.path, newer)
    shutil.copytree(run.path, older)
    os.utime(older / "config.json", (1e9, 1e9))  # listed second
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(root))
    at = open_predict()
    model = at.selectbox(key="pred.model")
    assert model.value == newer.name  # the newest run first
    model.set_value(older.name).run()
    assert not at.exception and at.selectbox(key="pred.model").value == older.name
    shown = at.selectbox(key="pred.model")
    label = shown.options[shown.index]
    summary = json.loads((older / "summary.json").read_text())
    monitor = summary["monitor"].removeprefix("val_")
    summary["best"][monitor] = summary["best"][monitor] / 2 + 0.25  # as when a later epoch does better
    (older / "summary.json").write_text(json.dumps(summary))
    at.run()  # the page redraws (an epoch ended elsewhere); the browser still shows, and sends, the label it had
    _browser_sends(at.selectbox(key="pred.model"), label)
    at.toggle(key="pred.use_camera").set_value(False).run()
    assert not at.exception
    assert at.selectbox(key="pred.model").value == older.name, "the choice must survive the run's progress"
    assert any(f"`{older.name}`" in c.value and "best " in c.value and "%" in c.value for c in at.caption)

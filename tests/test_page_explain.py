"""The Explain page through AppTest on a tiny real run (digits, small CNN, 8 px, 1 epoch, trained here in
seconds): attribution maps for a dataset image picked with ?image=, an uploaded image, the adversarial
panel (three images, flip flag checked against the model itself), the robustness sweep and no runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.runs.folder import Run
from tests.pagetools import open_page, train_tiny

@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    return train_tiny(tmp_path_factory.mktemp("explain-runs"), "builtin:digits", 8, session_cache)


def open_explain(run: Run | None = None, **params: str) -> AppTest:
    return open_page("pages/explanations.py", "Explain", run, **params)


def figures(at) -> dict[str, dict]:
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out[fig.get("layout", {}).get("title", {}).get("text", "")] = fig
    return out


def n_images(block) -> int:
    """Images drawn in a block (one st.image call may hold several)."""
    return sum(len(el.value) for el in block.image)


def captions_of(block) -> list[str]:
    return [c for el in block.image for c in el.captions]


def test_no_runs_points_to_train():
    at = open_explain()
    assert not at.error
    assert any("No trained run" in i.value and "Train" in i.value for i in at.info)


def test_dataset_image_from_query_param_shows_maps(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run, image="7")
    assert not at.error
    assert at.number_input(key="expl.index").value == 7
    assert at.query_params["image"] == "7"
    assert at.multiselect(key="expl.methods").value == ["saliency", "gradcam"]
    attributions = at.tabs[0]
    caps = captions_of(attributions)
    for method in ("saliency", "gradcam"):
        assert f"{method} · heatmap" in caps and f"{method} · overlay" in caps
    assert "original" in caps
    assert sum("Deletion AUC" in c.value for c in attributions.caption) == 2
    assert sum("infidelity" in c.value and "max-sensitivity" in c.value for c in attributions.caption) == 2
    assert any(t.startswith("Deletion curves") for t in figures(at))
    assert any(t.startswith("Top ") for t in figures(at))
    # another index typed in moves the URL along
    at.number_input(key="expl.index").set_value(11).run()
    assert not at.exception and at.query_params["image"] == "11"


def _png(seed: int = 0, size: int = 20) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_uploaded_image_is_explained(run, monkeypatch):
    from engine.predict.run_model import load_run_model, prepare_image
    from app.explain import load

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    data = _png()
    rm = load_run_model(run)
    picked = load.from_upload(data, "upload.png", rm)
    pixels, x = prepare_image(data, "upload.png", rm)
    assert picked.pixels.shape == (8, 8, 1) and picked.label is None
    assert np.array_equal(picked.pixels, pixels) and picked.x.shape == x.shape
    at = open_explain(run)
    at.radio(key="expl.source").set_value("upload").run()
    assert not at.exception and "image" not in at.query_params
    at.file_uploader(key="expl.uploader").set_value(("upload.png", data, "image/png")).run()
    assert not at.exception and not at.error
    assert "upload.png" in captions_of(at)
    assert n_images(at.tabs[0]) >= 5  # the original and each method's heatmap + overlay
    # a file that is not an image: a clear error, no exception
    at.file_uploader(key="expl.uploader").set_value(("notes.png", b"not an image", "image/png")).run()
    assert not at.exception and any("notes.png" in e.value for e in at.error)


def test_adversarial_panel_three_images_and_flip_flag(run, monkeypatch):
    import torch

    from engine.explain.attacks import fgsm
    from engine.data import open_dataset
    from engine.predict.run_model import load_run_model, predict_tensor
    from app.explain import load

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    rm = load_run_model(run)
    ds = open_dataset("builtin:digits", image_size=8)
    idx = int(ds.splits["test"][0])
    at = open_explain(run, image=str(idx))
    for eps in (0.0, 0.1):
        at.slider(key="adv.eps").set_value(eps).run()
        assert not at.exception
        panel = at.tabs[1]
        caps = captions_of(panel)
        assert len(caps) == 3 and caps[0].startswith("original: ") and caps[1].startswith("perturbation")
        assert caps[2].startswith("adversarial: ")
        picked = load.from_dataset(ds, idx, rm)
        y = torch.tensor([int(ds.labels[idx])])
        x_adv = fgsm(rm, picked.x, y, eps)
        clean, adv = predict_tensor(rm, picked.x)[0].argmax(), predict_tensor(rm, x_adv)[0].argmax()
        flipped = clean != adv
        assert any("Prediction flipped" in e.value for e in panel.error) == flipped
        assert any("Prediction held" in s.value for s in panel.success) == (not flipped)
        assert caps[2].startswith(f"adversarial: {rm.classes[adv]} ")
        if eps == 0.0:
            assert not flipped
    # the attribution of the adversarial image next to the clean one
    at.toggle(key="adv.explain").set_value(True).run()
    assert not at.exception
    caps = captions_of(at.tabs[1])
    assert any(c.startswith("clean · saliency") for c in caps) and any(c.startswith("adversarial · saliency") for c in caps)


def test_robustness_sweep_draws_its_charts(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_explain(run)
    at.text_input(key="rob.eps").set_value("0.02, 0.1")
    at.number_input(key="rob.limit").set_value(20)
    at.button(key="rob.go").click().run()
    assert not at.exception and not at.error
    figs = figures(at)
    acc = next(f for t, f in figs.items() if t.startswith("Accuracy vs epsilon"))
    assert acc["data"][0]["x"] == [0.0, 0.02, 0.1]
    assert acc["data"][0]["y"][0] >= acc["data"][0]["y"][-1]  # attacks do not help
    assert any(t.startswith("Robust accuracy per class") for t in figs)
    assert any(t.startswith("Minimal epsilon") for t in figs)


def test_robustness_sweep_comes_back_in_a_fresh_session(run, monkeypatch):
    """A reload is a new session: the sweep saved in the run folder is drawn again without a click, with the
    settings it was run with; other settings show the latest saved sweep with a caption saying so."""
    import shutil

    from engine.runs.sweeps import SWEEP_DIR, load_sweep, sweep_params

    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    shutil.rmtree(run.path / SWEEP_DIR, ignore_errors=True)
    fresh = open_explain(run)
    assert not any(t.startswith("Accuracy vs epsilon") for t in figures(fresh)), "no sweep saved yet: no chart"
    first = open_explain(run)
    first.text_input(key="rob.eps").set_value("0.03, 0.08")
    first.number_input(key="rob.limit").set_value(20)
    first.button(key="rob.go").click().run()
    assert not first.exception and not first.error
    before = next(f for t, f in figures(first).items() if t.startswith("Accuracy vs epsilon"))
    saved = load_sweep(run, sweep_params([0.0, 0.03, 0.08], "val", 20, "fgsm"))
    assert saved is not None and saved["accuracy"] == before["data"][0]["y"]

    again = open_explain(run)  # the reload: nothing clicked
    assert not again.exception and not again.error
    assert again.text_input(key="rob.eps").value == "0, 0.03, 0.08" and again.number_input(key="rob.limit").value == 20
    after = next(f for t, f in figures(again).items() if t.startswith("Accuracy vs epsilon"))
    assert after["data"] == before["data"]
    assert any(t.startswith("Minimal epsilon") for t in figures(again))
    assert not any("settings above differ" in c.value for c in again.caption)
    # other settings, not run: the saved sweep stays, labelled with its own settings
    again.number_input(key="rob.limit").set_value(30).run()
    assert not again.exception
    assert any(t.startswith("Accuracy vs epsilon") for t in figures(again))
    note = next(c.value for c in again.caption if "settings above differ" in c.value)
    assert "ε = 0, 0.03, 0.08" in note and "20 val images" in note

"""Issue 14, item 4: Explain treats a multi-label run as multi-label.

A tiny real run on lfw faces with four tags read off the pictures (`tests/multilabel_faces.py`, 16 px, small CNN):
the page must show the decided label set (at the run's saved thresholds, never the top label its threshold
rejects), the image's true labels, and map each accepted label side by side. And a Grad-CAM read from a
feature map too small to mean anything (the digits run at 8 px: 2x2) says so, on the page and in the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.evaluate.thresholds import save_thresholds
from engine.runs.folder import Run
from tests.multilabel_faces import TAGS, make_faces_csv, tags_of
from tests.pagetools import train_tiny
from tests.test_page_explain import captions_of, figures, open_explain


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    root = tmp_path_factory.mktemp("faces-ml")
    spec = make_faces_csv(root / "faces")
    return train_tiny(root / "runs", str(spec), 16, session_cache)


def image_probs(run: Run, index: int) -> np.ndarray:
    from app.explain.load import from_dataset
    from engine.data.dataset import open_dataset
    from engine.predict.run_model import load_run_model, predict_tensor

    cfg = run.config()["config"]
    rm = load_run_model(run)
    ds = open_dataset(cfg["dataset"], image_size=16, seed=cfg["seed"])
    return predict_tensor(rm, from_dataset(ds, index, rm).x)[0]


def truth_of(index: int) -> list[str]:
    from skimage.data import lfw_subset

    return tags_of(lfw_subset())[index]


def decided_box(at) -> str:
    return " ".join(m.value for m in at.main.markdown if m.value.startswith("### "))


def test_the_decided_set_and_the_truth_not_the_top_label(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    classes = run.classes()
    assert sorted(classes) == sorted(TAGS)
    index = 3  # a face
    probs = image_probs(run, index)
    top, second = np.argsort(-probs)[:2]
    # the case: the most probable label sits just under its saved threshold; another label passes
    th = [1.01] * len(classes)
    th[top] = float(probs[top]) + 0.01
    th[second] = 0.0
    save_thresholds(run, {"multilabel": th, "tuned_on": "val"})
    at = open_explain(run, image=str(index))
    assert not at.exception and not at.error
    assert decided_box(at) == f"### {classes[second]}"
    truth = ", ".join(t for t in classes if t in truth_of(index))
    assert any(m.value == f"True labels: **{truth}**" for m in at.markdown), [m.value for m in at.markdown]
    bars = figures(at)["Label probabilities (independent) and thresholds"]
    texts = bars["data"][0]["text"]
    assert any(t.endswith(f"threshold {th[top]:.4f} · rejected") for t in texts), texts
    assert any(t.endswith("threshold 0.0000 · accepted") for t in texts), texts
    # the label explained by default is the decided one, not the rejected top label
    box = next(m for m in at.multiselect if m.label == "Explain the labels")
    assert box.value == [second]


def test_each_accepted_label_is_mapped_side_by_side(run, monkeypatch):
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    classes = run.classes()
    index = 3
    probs = image_probs(run, index)
    a, b = sorted(np.argsort(-probs)[:2], key=lambda i: -probs[i])
    th = [1.01] * len(classes)
    th[a] = th[b] = 0.0
    save_thresholds(run, {"multilabel": th, "tuned_on": "val"})
    at = open_explain(run, image=str(index))
    assert not at.exception and not at.error
    assert decided_box(at) == f"### {classes[a]}, {classes[b]}"
    caps = captions_of(at.tabs[0])
    for method in ("saliency", "gradcam"):
        for label in (classes[a], classes[b]):
            assert f"{method} · {label} · overlay" in caps, caps
    labels_shown = [m.value for m in at.tabs[0].markdown if m.value.endswith("· accepted")]
    assert labels_shown == [f"**{classes[a]}** · accepted", f"**{classes[b]}** · accepted"] * 2
    table = at.dataframe[0].value
    assert list(table["label"]) == [classes[a], classes[b]] * 2
    # at 16 px this small CNN's Grad-CAM reads a 4x4 map: no warning
    assert not [w.value for w in at.warning if "feature map" in w.value]


def test_a_2x2_gradcam_map_is_called_out(tmp_path_factory, session_cache, monkeypatch, tmp_path, capsys):
    """The digits run at 8 px: small_cnn's last spatial layer is 2x2, an almost uniform square when upsampled."""
    from engine.cli.main import main
    from tests.test_page_explain import _png

    run8 = train_tiny(tmp_path_factory.mktemp("digits-8"), "builtin:digits", 8, session_cache)
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run8.path.parent))
    at = open_explain(run8, image="7")
    warnings = [w.value for w in at.warning if "feature map" in w.value]
    assert warnings == [
        "Grad-CAM read a 2x2 feature map for a 8 px input: upsampled, it is an almost uniform square that can "
        "only say which of 4 cells mattered. Use saliency, integrated gradients or occlusion instead, or train "
        "at a bigger input size."
    ]
    # the same on the Predict page's Grad-CAM overlay
    from tests.test_page_predict import open_predict, upload

    pat = open_predict(run8)
    upload(pat, ("digit-14-4.png", _png(2), "image/png"))
    pat.toggle(key="pred.gradcam").set_value(True).run()
    assert not pat.exception and not pat.error
    assert [w.value for w in pat.warning if "feature map" in w.value] == warnings
    img = tmp_path / "x.png"
    img.write_bytes(_png(1))
    assert main(["explain", str(run8.path), str(img), "--method", "gradcam", "--out", str(tmp_path / "o.png")]) == 0
    err = capsys.readouterr().err
    assert "note: Grad-CAM read a 2x2 feature map for a 8 px input" in err
    # saliency has no feature map: no note
    assert main(["explain", str(run8.path), str(img), "--method", "saliency", "--out", str(tmp_path / "s.png")]) == 0
    assert "feature map" not in capsys.readouterr().err


def test_cli_explain_names_the_decided_labels_and_explains_one_of_them(run, tmp_path, capsys):
    from PIL import Image

    from engine.cli.main import main

    classes = run.classes()
    img = tmp_path / "face.png"
    Image.open(
        Path(json.loads((run.path / "config.json").read_text())["config"]["dataset"]).parent / "images" / "lfw003.png"
    ).save(img)
    save_thresholds(run, {"multilabel": [1.01] * len(classes), "tuned_on": "val"})
    assert main(["explain", str(run.path), str(img), "--method", "saliency", "--out", str(tmp_path / "o.png")]) == 0
    assert capsys.readouterr().out.startswith("decided labels: (none); explained class ")
    th = [1.01] * len(classes)
    th[classes.index("face")] = 0.0
    save_thresholds(run, {"multilabel": th, "tuned_on": "val"})
    assert main(["explain", str(run.path), str(img), "--method", "saliency", "--out", str(tmp_path / "o.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decided labels: face (") and "explained class face (" in out

"""Issue 14, item 8: Predict says when an image looks unlike anything the model was trained on.

Real data throughout: a tiny Fashion-MNIST run (the long-tail variant: Sneaker / Sandal / Ankle boot, small_cnn at
28 px, one epoch on 600 images) is shown scikit-image's lfw faces and photos (chelsea the cat, a coffee cup). It
calls them footwear with high probability; the out-of-distribution check (`engine.predict.ood`) must flag most
of them while flagging few Fashion-MNIST test images, and about 5% of validation images (its calibration).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.predict.ood import IN_SHARE, UNLIKE, calibrate, describe, mahalanobis
from engine.predict.predictor import Predictor
from engine.runs.folder import Run
from tests.conftest import needs_fashion
from tests.pagetools import TINY

pytestmark = [needs_fashion]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def faces(n: int = 200) -> list[tuple[str, bytes]]:
    from skimage.data import lfw_subset

    return [(f"face{i}.png", png(np.round(img * 255))) for i, img in enumerate(lfw_subset()[:n])]


def photos() -> list[tuple[str, bytes]]:
    from skimage import data

    return [("chelsea.png", png(data.chelsea())), ("coffee.png", png(data.coffee()))]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    from engine.config import RunConfig
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        cfg = RunConfig(dataset="builtin:fashion-longtail", image_size=28, **{**TINY, "train_limit": 600}).validate()
        run = prepare_run(cfg, tmp_path_factory.mktemp("ood-runs"))
        fit(cfg, run, log=lambda m: None)
    return run


def split_images(run: Run, split: str, n: int) -> list[tuple[str, bytes]]:
    from engine.data.dataset import open_dataset

    cfg = run.config()["config"]
    ds = open_dataset(cfg["dataset"], image_size=28, seed=cfg["seed"], val_fraction=cfg["val_fraction"])
    idx = np.random.default_rng(0).choice(ds.splits[split], n, replace=False)
    return [(f"{split}{i}.png", png(ds.images[i][:, :, 0])) for i in idx]


def share_flagged(results: list[dict]) -> float:
    assert all(r["ok"] and r["unlike_training"] is not None for r in results)
    return float(np.mean([r["unlike_training"] for r in results]))


def test_faces_are_flagged_and_fashion_images_are_not(run):
    pred = Predictor.from_ref(str(run.path))
    assert pred.ood.available, pred.ood.reason
    face = pred.predict_bytes(faces())
    # the symptom: the classifier is sure of itself on faces (all three classes are footwear)
    assert np.median([r["confidence"] for r in face]) > 0.5
    test = pred.predict_bytes(split_images(run, "test", 300))
    val = pred.predict_bytes(split_images(run, "val", 300))
    face_share, test_share, val_share = share_flagged(face), share_flagged(test), share_flagged(val)
    print(f"flagged: faces {face_share:.1%}, Fashion-MNIST test {test_share:.1%}, val {val_share:.1%}")
    assert face_share >= 0.75, face_share
    assert test_share <= 0.12, test_share
    assert val_share <= 0.12, val_share  # calibrated so that ~95% of validation images pass
    for r in pred.predict_bytes(photos()):
        assert r["unlike_training"], (r["file"], r["ood_score"], r["ood_threshold"])
    r = face[0]
    assert r["ood_threshold"] == pytest.approx(pred.ood.check.threshold) and r["ood_score"] > 0


def test_the_calibration_is_saved_in_the_run_folder_and_reused(run, monkeypatch):
    from engine.predict import ood

    Predictor.from_ref(str(run.path))
    assert run.ood_cache.is_file()
    first = ood.load_check(run, Predictor.from_ref(str(run.path)).rm)

    def no_dataset(*a, **k):
        raise AssertionError("the cached calibration must be read, not recomputed")

    monkeypatch.setattr("engine.data.dataset.open_dataset", no_dataset)
    again = ood.load_check(run, Predictor.from_ref(str(run.path)).rm)
    assert again.available and again.check.threshold == first.check.threshold
    assert np.array_equal(again.check.precision, first.check.precision)


def test_an_old_run_whose_dataset_is_gone_still_predicts_with_the_signal_unavailable(run, tmp_path):
    old = Run(tmp_path / "runs" / "old-run")
    shutil.copytree(run.path, old.path)
    old.ood_cache.unlink(missing_ok=True)  # a run from before the check
    header = json.loads((old.path / "config.json").read_text())
    header["config"]["dataset"] = str(tmp_path / "moved-away")
    (old.path / "config.json").write_text(json.dumps(header))
    pred = Predictor.from_ref(str(old.path))
    assert not pred.ood.available and "cannot be calibrated" in pred.ood.reason
    assert describe(pred.ood).startswith("out-of-distribution check unavailable: ")
    (r,) = pred.predict_bytes(faces(1))
    assert r["ok"] and r["label"] and r["unlike_training"] is None and r["ood_score"] is None


def test_cli_predict_flags_faces_in_its_output_and_csv(run, tmp_path, capsys):
    from engine.cli.main import main

    folder = tmp_path / "faces"
    folder.mkdir()
    for name, data in faces(20):
        (folder / name).write_bytes(data)
    assert main(["predict", str(run.path), str(folder / "face0.png"), str(folder / "face1.png")]) == 0
    out = capsys.readouterr().out
    assert "out-of-distribution check: Mahalanobis distance from " in out
    assert out.count(f"[{UNLIKE} (distance ") >= 1, out
    csv_path = tmp_path / "faces.csv"
    assert main(["predict", str(run.path), str(folder), "--out", str(csv_path), "--no-progress"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0])[-3:] == ["unlike_training", "ood_score", "ood_threshold"]
    assert sum(r["unlike_training"] == "True" for r in rows) >= 15, [r["unlike_training"] for r in rows]
    assert all(float(r["ood_score"]) > 0 and float(r["ood_threshold"]) > 0 for r in rows)
    assert main(["predict", str(run.path), str(folder / "face0.png"), "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert res["unlike_training"] is True and res["ood_score"] > res["ood_threshold"]


def test_mahalanobis_and_the_95_percent_calibration():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 8)) * [1, 2, 3, 4, 1, 1, 1, 1]
    val = rng.normal(size=(1000, 8)) * [1, 2, 3, 4, 1, 1, 1, 1]
    check = calibrate(ref, val)
    assert np.mean(check.scores(val) <= check.threshold) == pytest.approx(IN_SHARE, abs=0.002)
    assert check.unlike(check.scores(rng.normal(loc=6.0, size=(50, 8)))).all()
    # the definition: sqrt((f - mu)^T P (f - mu))
    assert mahalanobis(np.array([[3.0, 4.0]]), np.zeros(2), np.eye(2)) == pytest.approx([5.0])
    assert mahalanobis(np.array([[2.0, 0.0]]), np.zeros(2), np.diag([0.25, 1.0])) == pytest.approx([1.0])


def test_the_predict_page_says_looks_unlike_the_training_data(monkeypatch):
    """The badge, its numbers, the table column and the caption that names the check (a model whose check
    flags everything, so the page's drawing is what is tested here; the real data are tested above)."""
    import torch
    from torch import nn

    from app.predict import load
    from engine.predict.ood import OodCheck, OodStatus
    from engine.predict.run_model import wrap_model
    from tests.test_page_predict import open_predict, upload

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(1, 3)

        def features(self, x):
            return x.mean(dim=(1, 2, 3))[:, None]

        def classify(self, f):
            return self.head(f)

        def forward(self, x):
            return self.classify(self.features(x))

    net = Net()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([3.0, 0.0, 0.0]))
    rm = wrap_model(net, ["Sneaker", "Sandal", "Ankle boot"], "multiclass", 8, 1)
    pred = Predictor.from_model(rm, name="fashion-run")
    pred.ood = OodStatus(OodCheck(np.zeros(1), np.eye(1), 0.25, 100, 50))  # mean pixel above 0.25: unlike
    monkeypatch.setattr(load, "predictor", lambda ref, runs, labels=None: pred)
    at = open_predict()
    bright, dark = png(np.full((8, 8), 250)), png(np.full((8, 8), 20))
    upload(at, ("bright-14-8.png", bright, "image/png"), ("dark-14-8.png", dark, "image/png"))
    assert not at.exception and not at.error
    md = [m.value for m in at.markdown]
    assert md.count(f":red-badge[:material/warning: {UNLIKE}]") == 1, md
    assert any(m.startswith(":gray-badge[like the training data (distance 0.0784 <= 0.2500)") for m in md), md
    caps = [c.value for c in at.caption]
    assert any(c.startswith(f"{UNLIKE[0].upper()}{UNLIKE[1:]} (distance 0.9804 > 0.2500)") for c in caps), caps
    assert any(c.startswith("Out-of-distribution check: Mahalanobis distance from 100 training images") for c in caps)
    df = at.dataframe[0].value
    assert list(df["unlike training data"]) == ["yes", "no"]
    assert any("1 look unlike the training data" in c for c in caps), caps


def test_the_predict_page_says_when_the_check_is_unavailable(monkeypatch):
    from app.predict import load
    from tests.test_page_predict import open_predict
    from tests.test_predict_multilabel import constant_multilabel

    pred = constant_multilabel()
    monkeypatch.setattr(load, "predictor", lambda ref, runs, labels=None: pred)
    at = open_predict()
    assert any(c.value.startswith("Out-of-distribution check unavailable: ") for c in at.caption)

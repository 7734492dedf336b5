"""The small-image recipe (issue 16, item 2): the residual net `small_resnet`, random translation, test-time
flip (one definition, `tta_probs`, used by the run's predictions, predict and export) and the defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.config import ConfigError, RunConfig
from engine.device import resolve_compute
from engine.models.classifier import probs_from_logits, tta_probs
from engine.models.factory import ImageSizeError, build_model, min_image_size
from engine.train.augment import augment_batch, max_shift
from engine.train.loop import DeviceData, predict_probs
from engine.train.recipes import suggest
from tests.test_inference import _train, digit_png

# --- the network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chans,size", [(3, 32), (1, 28), (1, 64)])
def test_small_resnet_maps_pixels_to_logits_and_is_deterministic(chans, size):
    torch.manual_seed(0)
    a, info = build_model("small_resnet", 10, in_chans=chans, image_size=size)
    torch.manual_seed(0)
    b, _ = build_model("small_resnet", 10, in_chans=chans, image_size=size)
    x = torch.rand(4, chans, size, size, generator=torch.Generator().manual_seed(1))
    a.eval(), b.eval()
    with torch.no_grad():
        assert a(x).shape == (4, 10)
        assert a.features(x).shape == (4, 256)
        assert torch.equal(a(x), b(x))  # same seed, same weights, same logits
    assert info.weights_source == "scratch" and info.default_image_size == 32
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    assert a.last_stage == ["backbone.stages.2"]


def test_small_resnet_refuses_images_its_poolings_would_erase():
    assert min_image_size("small_resnet") == 8
    with pytest.raises(ImageSizeError, match="at least 8 px"):
        build_model("small_resnet", 3, image_size=7)


# --- random translation ------------------------------------------------------------------------------


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` (C, H, W) moved so that output pixel (i, j) is input pixel (i + dy, j + dx), edges reflected
    about the border (grid_sample's reflection at align_corners=False repeats the edge pixel)."""
    h, w = x.shape[-2:]
    pad = max(abs(dy), abs(dx), 1)
    padded = torch.cat([x.flip(-1)[..., w - pad :], x, x.flip(-1)[..., :pad]], dim=-1)
    padded = torch.cat([padded.flip(-2)[..., h - pad :, :], padded, padded.flip(-2)[..., :pad, :]], dim=-2)
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def test_translate_moves_each_image_by_whole_pixels_within_the_limit():
    cfg = RunConfig(hflip=False, translate=0.0625)
    assert max_shift(cfg, 32) == 2 and max_shift(cfg, 64) == 4 and max_shift(cfg, 8) == 1
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    seen = set()
    for img, res in zip(x, out):
        shifts = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(_shifted(img, dy, dx), res, atol=1e-5)
        ]
        assert len(shifts) == 1, shifts  # exactly one whole-pixel shift of at most 2 px explains the output
        seen.add(shifts[0])
    assert len(seen) > 10  # the 25 offsets are all drawn, image by image
    again = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: reproducible


def test_translate_is_an_augmentation_the_preview_and_identity_check_see():
    from engine.train.augment import is_identity

    assert not is_identity(RunConfig(hflip=False, translate=0.1))
    assert is_identity(RunConfig(hflip=False, translate=0.0))
    with pytest.raises(ConfigError, match="translate"):
        RunConfig(translate=0.5).validate()


# --- test-time flip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("multilabel", [False, True])
def test_tta_is_the_mean_of_the_two_views_probabilities(multilabel):
    torch.manual_seed(0)
    model, _ = build_model("small_resnet", 4, in_chans=3, image_size=16)
    model.eval()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = probs_from_logits(model(x), multilabel)
        mirror = probs_from_logits(model(x.flip(-1)), multilabel)
        assert torch.allclose(tta_probs(model, x, multilabel, hflip=True), (plain + mirror) / 2, atol=1e-6)
        assert torch.equal(tta_probs(model, x, multilabel, hflip=False), plain)
        assert not torch.allclose(plain, mirror)  # the two views differ, so the mean is not one of them


def test_training_predictions_use_the_same_tta():
    torch.manual_seed(0)
    model, _ = build_model("small_cnn", 3, in_chans=1, image_size=8)
    model.eval()
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    compute = resolve_compute("cpu", "fp32")
    data = DeviceData(images, np.zeros(20, np.int64), compute.device, multilabel=False)
    idx = np.arange(20)
    x = data.batch(idx, compute.channels_last)[0]
    with torch.no_grad():
        want = (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2
    got = predict_probs(model, data, idx, compute, multilabel=False, batch_size=7, tta_hflip=True)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    plain = predict_probs(model, data, idx, compute, multilabel=False, batch_size=7)
    assert not np.allclose(plain, got)


@pytest.fixture(scope="session")
def tta_run(tmp_path_factory, session_cache) -> Path:
    return _train(tmp_path_factory, session_cache, dataset="builtin:digits", tta_hflip=True)


def test_a_tta_run_records_it_and_its_saved_predictions_predict_and_evaluate_agree(tta_run):
    from engine.data.pixels import to_tensor
    from engine.evaluate.predictions import load_predictions
    from engine.predict.predictor import Predictor
    from engine.predict.run_model import load_run_model, predict_tensor
    from engine.runs.folder import Run
    from engine.train.setup import dataset_for

    run = Run(tta_run)
    cfg = RunConfig.load(tta_run / "config.json")
    assert cfg.tta_hflip is True
    rm = load_run_model(run)
    assert rm.tta_hflip
    # the run's saved test predictions (what Evaluate and `evaluate` report) are the mean of the two views
    test = load_predictions(run, "test")
    x = to_tensor(np.asarray(dataset_for(cfg).images[test.indices]))
    with torch.no_grad():
        mean = (F.softmax(rm.model(x), 1) + F.softmax(rm.model(x.flip(-1)), 1)) / 2
    np.testing.assert_allclose(test.probs, mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(predict_tensor(rm, x), mean.numpy(), atol=1e-6)
    # ... and so are the Predict page's and `predict`'s (Predictor) scores of an image
    p = Predictor.from_ref(str(tta_run))
    got = p.predict_bytes([("d.png", digit_png(0))])[0]
    img = p.prepare(digit_png(0), "d.png")
    with torch.no_grad():
        want = ((F.softmax(rm.model(img), 1) + F.softmax(rm.model(img.flip(-1)), 1)) / 2)[0]
    assert got["top"][0]["prob"] == pytest.approx(float(want.max()), abs=1e-6)


def test_a_run_saved_before_tta_hflip_loads_without_it(tta_run, tmp_path):
    from engine.predict.run_model import load_run_model, predict_tensor
    from engine.runs.folder import Run

    old = shutil.copytree(tta_run, tmp_path / "old-run")
    header = json.loads((old / "config.json").read_text())
    del header["config"]["tta_hflip"], header["config"]["translate"]
    (old / "config.json").write_text(json.dumps(header))
    assert RunConfig.from_dict(header["config"]).tta_hflip is False
    rm = load_run_model(Run(old))
    assert rm.tta_hflip is False
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = F.softmax(rm.model(x), 1).numpy()
    np.testing.assert_allclose(predict_tensor(rm, x), plain, atol=1e-6)


def test_onnx_export_of_a_tta_run_carries_the_flip(tta_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from engine.predict.export import card_path, export
    from engine.predict.predictor import Predictor
    from engine.predict.run_model import predict_tensor

    p = Predictor.from_ref(str(tta_run))
    out = export(str(tta_run), "onnx", tmp_path / "m.onnx")
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"pixels": x.numpy()})
    probs = torch.softmax(torch.from_numpy(logits[0]), 1).numpy()
    np.testing.assert_allclose(probs, predict_tensor(p.rm, x), atol=1e-4)
    assert json.loads(card_path(out).read_text())["tta_hflip"] is True


def test_a_linear_probe_refuses_tta():
    with pytest.raises(ConfigError, match="tta_hflip"):
        RunConfig(model="resnet18", strategy="linear_probe", pretrained=True, tta_hflip=True).validate()


# --- the defaults ------------------------------------------------------------------------------------


def _stats(side: int, task: str = "multiclass") -> dict:
    return {"images": {"width": {"mean": side}, "height": {"mean": side}}, "num_images": 60_000, "task": task}


def test_defaults_choose_the_small_image_recipe_for_small_images():
    out, why = suggest(_stats(32), set(), gpu=False)
    assert out["model"] == "small_resnet" and out["image_size"] == 32 and out["strategy"] == "scratch"
    assert out["translate"] == 0.0625 and out["label_smoothing"] == 0.1 and out["tta_hflip"] is True
    assert any(r.startswith("tta_hflip:") for r in why)
    assert any(r.startswith("translate 0.0625: random shifts of up to 2 px") for r in why)
    RunConfig(**{k: v for k, v in out.items()}).validate()


def test_the_small_image_recipe_follows_what_the_user_gave():
    out, _ = suggest(_stats(32), {"hflip"}, gpu=False, values={"hflip": False})
    assert "tta_hflip" not in out  # no flip in training, no flip at test time
    out, _ = suggest(_stats(56, "multilabel"), set(), gpu=False)
    assert "label_smoothing" not in out and out["tta_hflip"] is True  # multi-label losses take no smoothing
    out, _ = suggest(_stats(8), set(), gpu=False)
    assert out["model"] == "small_cnn"  # 8 px: too small for three poolings
    given = {"model", "strategy", "pretrained"}
    values = {"model": "resnet18", "strategy": "linear_probe", "pretrained": True}
    out, _ = suggest(_stats(32), given, gpu=False, values=values)
    assert "tta_hflip" not in out

"""engine.predict.export: ONNX and TorchScript files compute what the engine computes, and carry a model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.predict.export import card_path, export
from engine.predict.predictor import Predictor
from engine.predict.run_model import predict_tensor
from tests.test_inference import binary_run, digit_png, digits_run  # noqa: F401  (session fixtures: tiny runs)

CARD_KEYS = {
    "classes",
    "image_size",
    "channels",
    "task",
    "thresholds",
    "temperature",
    "metrics",
    "dataset_fingerprint",
    "created_at",
    "input",
    "output",
}


def _inputs(p: Predictor) -> torch.Tensor:
    from engine.predict.run_model import prepare_image

    real = torch.cat([prepare_image(digit_png(i), f"{i}.png", p.rm)[1] for i in range(4)])
    return torch.cat(
        [real, torch.rand(3, p.rm.channels, p.image_size, p.image_size, generator=torch.Generator().manual_seed(1))]
    )


def test_onnx_matches_the_engine_and_writes_the_card(digits_run, tmp_path):  # noqa: F811
    ort = pytest.importorskip("onnxruntime")
    p = Predictor.from_ref(str(digits_run))
    out = export(str(digits_run), "onnx", tmp_path / "model.onnx")
    x = _inputs(p)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"pixels": x.numpy()})[0]
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    np.testing.assert_allclose(probs, predict_tensor(p.rm, x), atol=1e-4)
    card = json.loads(card_path(out).read_text())
    assert CARD_KEYS <= set(card)
    assert card["classes"] == p.classes and card["image_size"] == 8 and card["task"] == "multiclass"
    assert card["metrics"]["test"]["accuracy"] > 0 and card["dataset_fingerprint"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_matches_the_engine(digits_run, tmp_path):  # noqa: F811
    p = Predictor.from_ref(str(digits_run))
    out = export(str(digits_run), "torchscript", tmp_path / "m.pt")
    x = _inputs(p)
    with torch.no_grad():
        probs = torch.softmax(torch.jit.load(str(out))(x), 1).numpy()
    np.testing.assert_allclose(probs, predict_tensor(p.rm, x), atol=1e-4)
    assert CARD_KEYS <= set(json.loads(card_path(out).read_text()))


def test_cli_export_and_bad_format(digits_run, tmp_path, capsys):  # noqa: F811
    from engine.cli.main import main

    out = tmp_path / "cli.onnx"
    assert main(["export", str(digits_run), "--format", "onnx", "--out", str(out)]) == 0
    assert out.exists() and card_path(out).exists()
    from engine.predict.export import ExportError

    with pytest.raises(ExportError, match="Unknown export format"):
        export(str(digits_run), "tflite", tmp_path / "x")


def test_following_the_model_card_literally_gives_predicts_decisions(binary_run, tmp_path):  # noqa: F811
    """The card says probabilities = softmax(logits / temperature) and gives a threshold: that threshold must
    apply to those probabilities. With a strong temperature (20, as in the issue) a raw-probability threshold
    would never accept the positive class."""
    import io
    import shutil

    from PIL import Image

    from engine.config import RunConfig
    from engine.evaluate.thresholds import save_thresholds, tune_thresholds
    from engine.runs.folder import Run
    from engine.train.setup import dataset_for

    ort = pytest.importorskip("onnxruntime")
    run = Run(shutil.copytree(binary_run, tmp_path / "run"))  # the session's run stays as it is
    save_thresholds(run, {**tune_thresholds(run, "min_hter"), "temperature": 20.0})
    out = export(str(run.path), "onnx", tmp_path / "model.onnx")
    card = json.loads(card_path(out).read_text())

    ds = dataset_for(RunConfig.load(run.path / "config.json"))
    test = ds.images[ds.splits["test"]]  # (N, 8, 8, 1) uint8, at the model's input size
    # the card, literally: pixels in [0, 1] NCHW -> logits -> activation(logits / temperature) -> threshold
    x = (test.astype(np.float32) / 255).transpose(0, 3, 1, 2)
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"pixels": x})[0]
    assert card["output"]["activation"] == "softmax" and card["temperature"] == 20.0
    z = logits.astype(np.float64) / card["temperature"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pos = card["positive_class"]
    by_card = np.where(p[:, pos] >= card["thresholds"]["binary"], pos, 1 - pos)

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a[..., 0]).save(buf, "PNG")
        return buf.getvalue()

    results = Predictor.from_ref(str(run.path)).predict_bytes([(f"{i}.png", png(a)) for i, a in enumerate(test)])
    by_predict = np.array([card["classes"].index(r["label"]) for r in results])
    assert (by_predict == pos).any() and (by_predict != pos).any()  # both decisions occur: the test can tell
    np.testing.assert_array_equal(by_card, by_predict)
    assert "thresholds" in card["output"]["note"] and "/ 20" in card["decision"]

"""engine.predict.export: ONNX and TorchScript files compute what the engine computes, and carry a model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.predict.export import card_path, export
from engine.predict.predictor import Predictor
from engine.predict.run_model import predict_tensor
from tests.test_inference import digit_png, digits_run  # noqa: F401  (session fixture: one tiny run)

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

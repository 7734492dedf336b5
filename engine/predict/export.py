"""Export a run's model to ONNX or TorchScript, with a JSON model card beside it.

Why the exported graph is the `ImageClassifier` itself: normalisation (and the grey-to-RGB channel
repeat) live inside it, so a deployment feeds float32 (N, C, H, W) pixels in [0, 1] and cannot get the
mean/std wrong. It outputs logits; the card says how to turn them into the decision Evaluate reported
(softmax or sigmoid, optional temperature, saved thresholds), because those are data, not graph. A run
with test-time flip (`tta_hflip`) exports `MirrorAveraged`: the flip and the averaging are in the graph,
so the card's recipe gives the probabilities the run's thresholds were tuned on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from engine.errors import LoupeError
from engine.models.classifier import tta_probs

FORMATS = ("onnx", "torchscript")
OPSET = 17


class ExportError(LoupeError):
    """A format or destination that export cannot write."""


class MirrorAveraged(nn.Module):
    """A test-time-flip run's model as one graph: logits whose softmax (sigmoid for multi-label) is exactly
    `tta_probs` (the mean of the image's and its mirror's probabilities), so a consumer applies the
    activation, temperature and thresholds to its output as to any exported Loupe model."""

    def __init__(self, model: nn.Module, multilabel: bool) -> None:
        super().__init__()
        self.model, self.multilabel = model, multilabel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = tta_probs(self.model, x, self.multilabel, hflip=True)
        tiny = torch.finfo(p.dtype).tiny  # log(0) would be -inf; a probability this small is 0 to every decision
        if self.multilabel:  # logit(p): sigmoid(logit(p)) = p
            return torch.log(p.clamp_min(tiny)) - torch.log((1 - p).clamp_min(tiny))
        return torch.log(p.clamp_min(tiny))  # softmax(log p) = p / sum(p) = p


def card_path(out: Path) -> Path:
    """`model.onnx` -> `model.onnx.json`."""
    return Path(str(out) + ".json")


def export(run, fmt: str, out: Path) -> Path:
    """Write `run`'s best model (a `Run`, run id/folder or `builtin:imagenet`) as `fmt` to `out`; returns `out`."""
    from engine.predict.predictor import Predictor
    from engine.runs.folder import Run

    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format '{fmt}'; use one of {', '.join(FORMATS)}.")
    ref = str(run.path) if isinstance(run, Run) else str(run)
    pred = Predictor.from_ref(ref)
    rm = pred.rm
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    example = torch.rand(2, rm.channels, rm.image_size, rm.image_size, generator=torch.Generator().manual_seed(0))
    model = rm.model.cpu() if rm.device == "cpu" else rm.model
    if rm.tta_hflip:
        model = MirrorAveraged(model, rm.multilabel).eval()
    with rm.lock, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / legacy-exporter deprecation chatter
        if fmt == "onnx":
            torch.onnx.export(
                model,
                (example.to(rm.device),),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            )
        else:
            traced = torch.jit.trace(model, example.to(rm.device))
            torch.jit.save(traced, str(tmp))
    os.replace(tmp, out)
    from engine.runs.folder import atomic_write_json

    atomic_write_json(card_path(out), model_card(pred, fmt, ref))
    return out


def model_card(pred, fmt: str, ref: str) -> dict:
    """What a consumer needs to use the file without Loupe: inputs, outputs, classes and the decision rule."""
    from engine.runs.folder import Run, now_iso

    rm = pred.rm
    activation = "sigmoid" if rm.task == "multilabel" else "softmax"
    probabilities = f"{activation}(logits / {pred.temperature:g})" if pred.temperature else f"{activation}(logits)"
    header, summary = {}, {}
    if not ref.startswith("builtin:"):
        run = Run(ref)
        header, summary = run.config(), run.summary() or {}
    return {
        "name": pred.name,
        "run": rm.run_id,
        "format": fmt,
        "created_at": now_iso(),
        "input": {
            "name": "pixels",
            "dtype": "float32",
            "layout": "NCHW",
            "range": [0.0, 1.0],
            "shape": ["batch", rm.channels, rm.image_size, rm.image_size],
            "note": "normalisation is inside the model; resize the shorter side and centre-crop to the input size",
        },
        "output": {
            "name": "logits",
            "activation": activation,
            "note": f"probabilities = {probabilities}; the thresholds below apply to these probabilities"
            + (
                "; test-time flip is inside the graph (these logits give the mean of the probabilities of the "
                "image and its mirror image)"
                if rm.tta_hflip
                else ""
            ),
        },
        "tta_hflip": rm.tta_hflip,
        "classes": list(rm.classes),
        "image_size": rm.image_size,
        "channels": rm.channels,
        "task": rm.task,
        "positive_class": rm.positive if rm.task == "binary" else None,
        "decision": decision_recipe(pred, probabilities),
        "thresholds": card_thresholds(pred),
        "temperature": pred.temperature,
        "metrics": summary.get("final") or {},
        "dataset_fingerprint": header.get("dataset_fingerprint"),
        "model": (header.get("config") or {}).get("model"),
    }


def card_thresholds(pred) -> dict:
    """The saved thresholds on the scale the card tells people to compute (activation(logits / temperature)):
    `pred.decision_threshold()`, the same mapping `predict` uses, so following the card literally gives
    `predict`'s decisions. The thresholds as tuned (on probabilities without the temperature) stay beside
    them as `raw`, for whoever skips the temperature."""
    out = {k: v for k, v in pred.thresholds.items() if k not in ("binary", "multilabel", "temperature")}
    if pred.task in ("binary", "multilabel"):
        out[pred.task] = pred.decision_threshold()
        out["raw"] = pred.raw_threshold().tolist() if pred.task == "multilabel" else pred.raw_threshold()
        out["positive_class"] = pred.positive if pred.task == "binary" else None
        out["applies_to"] = "probabilities after the temperature" if pred.temperature else "probabilities"
    return {k: v for k, v in out.items() if v is not None}


def decision_recipe(pred, probabilities: str) -> str:
    """The decision rule in words, literally followable with the card's own numbers (`engine.metrics.core.decide`)."""
    c = pred.classes
    if pred.task == "binary":
        pos = pred.positive
        return (
            f"p = {probabilities}; predict '{c[pos]}' (index {pos}) when p[:, {pos}] >= thresholds.binary "
            f"({pred.decision_threshold():.6g}), else '{c[1 - pos]}' (index {1 - pos})"
        )
    if pred.task == "multilabel":
        return f"p = {probabilities}; label j is present when p[:, j] >= thresholds.multilabel[j]"
    return f"p = {probabilities}; predict the class with the highest probability (argmax)"

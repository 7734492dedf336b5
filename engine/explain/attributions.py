"""Attributions for one image (Captum plus our Grad-CAM): which pixels drove the model's score.

All methods explain the target class's *logit*, not its probability: softmax saturates, and a
saturated probability has near-zero gradients everywhere, which makes gradient maps look empty for
exactly the confident predictions people ask about. Integrated Gradients' completeness therefore holds
in logit space (`params["delta"]` reports its error).

The model is a shared, cached one (`engine.predict.run_model`), so `explain` takes its lock, keeps parameter
gradients off, and checks that no hook outlives the call. Cost caps keep one 224 px request on a CPU
to a few seconds: sample counts are capped in proportion to the pixel count, occlusion to 16 x 16
window positions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import LoupeError
from engine.explain.gradcam import gradcam, gradcam_layer, guided_gradcam, hook_counts, no_inplace_relu
from engine.explain.render import deletion_curve, heatmap_image, make_baseline, overlay  # noqa: F401 (public API)
from engine.predict.run_model import RunModel, predict_tensor

METHODS: dict[str, str] = {
    "saliency": "Gradient of the class score w.r.t. each pixel: fast, noisy.",
    "integrated_gradients": "Gradients averaged along a path from a baseline image; attributions add up to the score change.",
    "smoothgrad": "Gradients averaged over noisy copies of the image: less speckle than plain saliency.",
    "gradient_shap": "Expected gradients from random baselines and noise: a SHAP-value estimate.",
    "occlusion": "Score drop when a sliding patch is replaced by the baseline: model-agnostic, coarse.",
    "gradcam": "Class-weighted activation map of the last spatial layer, upsampled: coarse regions.",
    "guided_gradcam": "Guided backprop times Grad-CAM: fine edges inside the Grad-CAM regions.",
}
BASELINES = ("black", "blur", "noise")
#: per-request budget in pixel-evaluations: 16 forward+backward passes at 224 x 224 (~4 s for resnet18 on 2 cores)
BUDGET = 16 * 224 * 224
MAX_OCCLUSION_POSITIONS = 16  # per axis, at small sizes; fewer at large ones (see occlusion_geometry)


class ExplainError(LoupeError):
    """An explanation that cannot be made as asked (unknown method, target or baseline)."""


@dataclass
class Explanation:
    method: str
    target: int
    heatmap: np.ndarray  # (H, W) float32; signed for gradient methods, >= 0 for Grad-CAM
    seconds: float
    params: dict = field(default_factory=dict)


def sample_cap(h: int, w: int, asked: int, floor: int = 4) -> int:
    """At most `asked`, and at most what the budget allows at this resolution (never below `floor`)."""
    return int(max(floor, min(asked, BUDGET // max(1, h * w))))


def occlusion_geometry(h: int, w: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """Window (default 1/8 of the side) and stride (default half the window, widened to cap positions)."""
    side = min(h, w)
    window = int(min(side, max(2, window or side // 8)))
    stride = int(max(1, stride or window // 2))
    # forward-only passes cost ~1/3 of forward+backward, so allow 3x the budget in window positions
    per_axis = int(min(MAX_OCCLUSION_POSITIONS, max(4, math.sqrt(3 * BUDGET / max(1, h * w)))))
    need = math.ceil((side - window) / (per_axis - 1)) if side > window else 1
    stride = max(stride, need)
    return max(window, stride), stride  # Captum needs stride <= window: widen the window with the stride


def _attribute(
    rm: RunModel,
    x: torch.Tensor,
    method: str,
    target: int,
    base: torch.Tensor,
    n_steps: int,
    ibs: int,
    window: int | None,
    stride: int | None,
    params: dict,
) -> torch.Tensor:
    from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    model = rm.model
    h, w = x.shape[-2:]
    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=False)
    if method == "integrated_gradients":
        steps = sample_cap(h, w, n_steps)
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=base, target=target, n_steps=steps, internal_batch_size=ibs, return_convergence_delta=True
        )
        params.update(n_steps=steps, delta=float(delta.abs().max()))
        return attr
    if method == "smoothgrad":
        n = sample_cap(h, w, 16)
        params.update(nt_samples=n, stdevs=0.15)
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=n, stdevs=0.15, nt_samples_batch_size=ibs, target=target, abs=False
        )
    if method == "gradient_shap":
        n = sample_cap(h, w, 16)
        refs = torch.cat([base, make_baseline(x, "black"), make_baseline(x, "noise", seed=1)])
        params.update(n_samples=n, stdevs=0.09)
        return GradientShap(model).attribute(x, baselines=refs, n_samples=n, stdevs=0.09, target=target)
    if method == "occlusion":
        win, st = occlusion_geometry(h, w, window, stride)
        c = x.shape[1]
        params.update(window=win, stride=st)
        return Occlusion(model).attribute(
            x,
            sliding_window_shapes=(c, win, win),
            strides=(c, st, st),
            baselines=base,
            target=target,
            perturbations_per_eval=ibs,
        )
    layer = gradcam_layer(model)
    params["layer"] = next((n for n, m in model.named_modules() if m is layer), "")
    if method == "gradcam":
        return gradcam(model, layer, x, target, info=params).unsqueeze(1)
    return guided_gradcam(model, layer, x, target, info=params)


def explain(
    rm: RunModel,
    x: torch.Tensor,
    method: str,
    target: int | None = None,
    baseline: str = "black",
    n_steps: int = 32,
    internal_batch_size: int = 16,
    window: int | None = None,
    stride: int | None = None,
) -> Explanation:
    """Attribution map of one image `x` (1, C, H, W) in [0, 1] for `target` (default: the predicted class)."""
    if method not in METHODS:
        raise ExplainError(f"Unknown explanation method '{method}'; choose one of {', '.join(METHODS)}.")
    if baseline not in BASELINES:
        raise ExplainError(f"Unknown baseline '{baseline}'; choose one of {', '.join(BASELINES)}.")
    x = x[:1].detach().to(rm.device).float()
    with rm.lock:
        t0 = time.perf_counter()
        probs = predict_tensor(rm, x)[0]
        if target is None:
            target = int(np.argmax(probs))
        if not 0 <= int(target) < len(rm.classes):
            raise ExplainError(f"Target class {target} is out of range; this model has {len(rm.classes)} classes.")
        target = int(target)
        params: dict = {
            "baseline": baseline,
            "internal_batch_size": internal_batch_size,
            "probability": float(probs[target]),
        }
        flags = [p.requires_grad for p in rm.model.parameters()]
        hooks = hook_counts(rm.model)
        was_training = rm.model.training
        try:
            rm.model.eval()
            for p in rm.model.parameters():
                p.requires_grad_(False)
            with torch.enable_grad(), no_inplace_relu(rm.model):
                base = make_baseline(x, baseline)
                attr = _attribute(
                    rm,
                    x.clone().requires_grad_(True),
                    method,
                    target,
                    base,
                    n_steps,
                    internal_batch_size,
                    window,
                    stride,
                    params,
                )
        finally:
            for p, f in zip(rm.model.parameters(), flags):
                p.requires_grad_(f)
            rm.model.train(was_training)
        if hook_counts(rm.model) != hooks:
            raise RuntimeError(f"explain({method}) left hooks on the model: {hook_counts(rm.model)} vs {hooks}")
        heat = attr.detach().float().sum(1)[0].cpu().numpy().astype(np.float32)
        heat = np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0)
        return Explanation(method, target, heat, time.perf_counter() - t0, params)

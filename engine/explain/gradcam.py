"""Grad-CAM for CNNs and ViTs, with hooks that never outlive the call: which layer to read
(`gradcam_layer`), the map itself (`gradcam`, `guided_gradcam`) and the hook bookkeeping.

Why our own instead of Captum's `LayerGradCam`: a ViT block's output is (N, tokens, dim), which
LayerGradCam would average over the wrong axis; here the token axis is reshaped to the patch grid
first, so one code path serves every model `gradcam_layer` can name. The layer choice lives here, not
in the model factory, because only explanations need it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.models.classifier import ImageClassifier


def gradcam_layer(model: ImageClassifier) -> nn.Module:
    """Layer whose activations Grad-CAM uses: the last spatial conv for CNNs, the last block's norm1 for ViTs."""
    bb = model.backbone
    blocks = getattr(bb, "blocks", None)
    if hasattr(bb, "patch_embed") and blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1
    found = None
    for name, child in bb.named_children():
        if name in ("global_pool", "head", "fc", "classifier", "embed"):
            break  # modules after pooling see no spatial map
        for m in child.modules():
            if isinstance(m, nn.Conv2d):
                found = m
    if found is None:
        raise ModelError(
            "This model has no convolution or transformer block for Grad-CAM; choose another attribution method."
        )
    return found


def hook_counts(model: nn.Module) -> tuple[int, int, int]:
    """Forward, forward-pre and backward hooks on every module: equal before and after an explanation."""
    fwd = pre = bwd = 0
    for m in model.modules():
        fwd += len(m._forward_hooks)
        pre += len(m._forward_pre_hooks)
        bwd += len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
    return fwd, pre, bwd


@contextmanager
def no_inplace_relu(model: nn.Module):
    """Guided backprop hooks ReLU modules, which breaks on in-place ReLUs; switch them off for the call."""
    changed = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


def _vit_grid(model: nn.Module) -> tuple[int, int, int] | None:
    """(prefix tokens, grid h, grid w) for a timm ViT backbone, else None."""
    bb = getattr(model, "backbone", model)
    pe = getattr(bb, "patch_embed", None)
    if pe is None or not hasattr(pe, "grid_size"):
        return None
    gh, gw = pe.grid_size
    return int(getattr(bb, "num_prefix_tokens", 1)), int(gh), int(gw)


def _as_map(act: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Layer output as (N, C, h, w): conv maps as they are, ViT tokens reshaped to the patch grid."""
    if act.dim() == 4:
        return act
    grid = _vit_grid(model)
    if act.dim() == 3 and grid is not None:
        prefix, gh, gw = grid
        tokens = act[:, prefix:, :]
        return tokens.transpose(1, 2).reshape(act.shape[0], act.shape[2], gh, gw)
    raise ValueError(f"Grad-CAM cannot read a layer output of shape {tuple(act.shape)}")


#: a feature map this small (per side) says little: upsampled, 2 x 2 cells are an almost uniform square
COARSE_SIDE = 2


def gradcam(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, forward=None, info: dict | None = None
) -> torch.Tensor:
    """ReLU(sum_c mean(dy/dA_c) * A_c), upsampled bilinearly to the input size: (N, H, W).

    `info` (when given) receives `feature_map`: the (h, w) of the map before upsampling (see `coarse_warning`)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_m, _inp, out):
        captured["act"] = out

    handle = layer.register_forward_hook(keep)
    x = x.detach().clone().requires_grad_(True)  # frozen parameters: the input is what makes a graph
    try:
        with torch.enable_grad():
            out = (forward or model)(x)
            act = captured["act"]
            grads = torch.autograd.grad(out[:, target].sum(), act)[0]
    finally:
        handle.remove()
    a, g = _as_map(act.detach(), model), _as_map(grads, model)
    if info is not None:
        info["feature_map"] = [int(a.shape[-2]), int(a.shape[-1])]
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0]


def coarse_warning(feature_map: list[int] | tuple[int, int] | None, image_size: int | None = None) -> str | None:
    """One sentence when a Grad-CAM feature map is too small to mean anything (a side of `COARSE_SIDE` cells or
    fewer), else None. Grad-CAM weighs the channels of the last spatial layer and upsamples the h x w result:
    at 2 x 2 or 1 x 1 the map can only say which quarter of the image (or nothing at all) mattered, and it
    looks like an almost uniform square."""
    if not feature_map:
        return None
    h, w = (int(v) for v in feature_map)
    if min(h, w) > COARSE_SIDE:
        return None
    at = f" for a {image_size} px input" if image_size else ""
    what = (
        "one uniform square that says nothing about where the model looked"
        if h * w == 1
        else f"an almost uniform square that can only say which of {h * w} cells mattered"
    )
    return (
        f"Grad-CAM read a {h}x{w} feature map{at}: upsampled, it is {what}. Use saliency, integrated "
        "gradients or occlusion instead, or train at a bigger input size."
    )


def guided_gradcam(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, forward=None, info: dict | None = None
) -> torch.Tensor:
    """Guided backprop (Captum) times the upsampled Grad-CAM map: (N, C, H, W), fine detail inside the CAM."""
    from captum.attr import GuidedBackprop

    with no_inplace_relu(model):
        gb = GuidedBackprop(model).attribute(x, target=target)
    cam = gradcam(model, layer, x, target, forward, info)
    return gb * cam.unsqueeze(1)

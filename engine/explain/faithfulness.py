"""Captum's faithfulness scores for an explanation: infidelity, and max-sensitivity where it is cheap.

Infidelity (Yeh et al. 2019): how well the map predicts the change of the target logit under small
random perturbations (lower is better); computed on the map normalised by Captum, so methods with
different scales compare. Max-sensitivity: how much the map itself changes when the input moves a
little (lower is more stable); it re-runs the explanation several times, so only the fast gradient
and Grad-CAM methods get it.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.predict.run_model import RunModel

CHEAP_FOR_SENSITIVITY = ("saliency", "gradcam")
NOISE = 0.003  # pixel units: small against the 1/255 quantisation step of the images


def _logit(rm: RunModel):
    return lambda inp: rm.model(inp)


def faithfulness(
    rm: RunModel, x: torch.Tensor, heatmap: np.ndarray, method: str, target: int, samples: int = 8, seed: int = 0
) -> dict[str, float | None]:
    """{'infidelity': float, 'max_sensitivity': float | None} for one image and its map."""
    from captum.metrics import infidelity, sensitivity_max

    x = x[:1].detach().to(rm.device).float()
    c = x.shape[1]
    # the map is per pixel; spread it evenly over the channels to match the input's shape
    attr = torch.from_numpy(np.asarray(heatmap, dtype=np.float32)).to(x.device)[None, None].expand(1, c, -1, -1) / c
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def perturb(inputs: torch.Tensor):
        noise = (torch.randn(inputs.shape, generator=gen) * NOISE).to(inputs.device)
        return noise, inputs - noise

    with rm.lock, torch.no_grad():
        rm.model.eval()
        infid = float(
            infidelity(
                _logit(rm), perturb, x, attr.contiguous(), target=target, n_perturb_samples=samples, normalize=True
            )
        )
    sens = None
    if method in CHEAP_FOR_SENSITIVITY:
        from engine.explain.attributions import explain

        def explanation_func(inputs, **kwargs):
            batch = inputs[0] if isinstance(inputs, tuple) else inputs  # Captum passes a tuple of inputs
            maps = [
                torch.from_numpy(explain(rm, batch[i : i + 1], method, target=target).heatmap)
                for i in range(len(batch))
            ]
            out = torch.stack(maps)[:, None].expand(-1, c, -1, -1) / c
            return (out,) if isinstance(inputs, tuple) else out

        sens = float(sensitivity_max(explanation_func, x, perturb_radius=0.02, n_perturb_samples=4))
    return {"infidelity": infid, "max_sensitivity": sens}

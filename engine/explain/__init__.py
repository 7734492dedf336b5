"""Explaining and probing a trained model: Captum attributions, Grad-CAM, faithfulness figures, rendering,
and adversarial attacks with epsilon sweeps (the Explain page hosts both)."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "attributions": ["BASELINES", "METHODS", "ExplainError", "Explanation", "explain"],
        "gradcam": ["gradcam", "gradcam_layer", "guided_gradcam"],
        "render": ["deletion_curve", "heatmap_image", "make_baseline", "overlay"],
        "faithfulness": ["faithfulness"],
        "attacks": [
            "ATTACKS",
            "AttackError",
            "epsilon_sweep",
            "fgsm",
            "minimal_epsilon",
            "perturbation_image",
            "pgd",
            "run_attack",
            "stratified_sample",
        ],
    },
)

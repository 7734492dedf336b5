"""Models: the registry and factory (any timm name plus Loupe's small CNNs), the classifier wrapper that
takes [0, 1] pixels with its heads and transfer strategies, the built-in small CNNs, and offline
pretrained-weight resolution.

Import order inside the package is one way: `factory` -> `classifier`, `small_cnns`, `weights`; none of
them imports the factory. The errors live in `engine.errors` and are re-exported here so `from engine.models import ...` keeps
working; `gradcam_layer` serves Grad-CAM and lives in `engine.explain.gradcam` (a model package that
re-exported it would point upward).
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "factory": [
            "BUILTIN_MODELS",
            "CURATED",
            "ImageSizeError",
            "build_model",
            "check_image_size",
            "check_model_name",
            "min_image_size",
        ],
        "classifier": [
            "ImageClassifier",
            "ModelInfo",
            "ScaledLinear",
            "apply_strategy",
            "make_head",
            "probs_from_logits",
            "set_train_mode",
        ],
        "small_cnns": ["FaceNet", "SmallCNN"],
        "weights": [
            "WEIGHT_PACKAGES",
            "hub_online",
            "load_state",
            "package_weights",
            "read_safetensors",
            "timm_pretrained",
        ],
        "..errors": ["ModelError", "PretrainedUnavailable", "WeightsError"],
    },
)

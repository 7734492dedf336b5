"""Models: the registry and factory (any timm name plus Loupe's small CNNs), the classifier wrapper that
takes [0, 1] pixels, and offline pretrained-weight resolution."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "factory": ["BUILTIN_MODELS", "CURATED", "ImageSizeError", "apply_strategy", "build_model", "check_image_size",
                "check_model_name", "gradcam_layer", "min_image_size", "set_train_mode"],
    "classifier": ["FaceNet", "ImageClassifier", "ModelError", "ModelInfo", "PretrainedUnavailable", "SmallCNN",
                   "WeightsError", "probs_from_logits"],
    "weights": ["WEIGHT_PACKAGES", "hub_online", "package_weights"],
})

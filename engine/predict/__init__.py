"""Prediction: a run's (or the built-in) model with its preprocessing and saved thresholds, applied to new
images; and export to ONNX/TorchScript with a model card."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "run_model": ["RunModel", "RunModelError", "load_run_model", "predict_tensor", "prepare_image"],
        "predictor": [
            "BUILTIN_IMAGENET",
            "PredictError",
            "Predictor",
            "builtin_models",
            "csv_cell",
            "predict_folder",
        ],
        "labels": ["LabelSubset", "LabelSubsetError", "NAMED", "imagenet_classes", "resolve_labels"],
        "export": ["ExportError", "export", "model_card"],
        "unsure": ["DEFAULT_MARGIN", "decision_margin", "is_unsure"],
    },
)

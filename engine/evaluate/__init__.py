"""Evaluation of a finished run from its saved predictions: reports, thresholds tuned on val and
reported on test, top losses and likely mislabelled images. Nothing here re-runs the model."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "report": ["EvaluateError", "Predictions", "RULES", "SPLITS", "binary_curves", "evaluate_run", "fit_temperature",
               "likely_mislabelled", "load_predictions", "load_thresholds", "metrics_at", "save_thresholds",
               "splits_available", "top_losses", "tune_thresholds"],
})

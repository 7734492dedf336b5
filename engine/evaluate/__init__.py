"""Evaluation of a finished run from its saved predictions: reports, thresholds tuned on val and
reported on test, top losses and likely mislabelled images. Nothing here re-runs the model.

`predictions` reads predictions/<split>.npz; `thresholds` tunes, saves and loads thresholds.json;
`report` builds the report on both. Names are re-exported lazily (`engine.lazy`).
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "predictions": [
            "EvaluateError",
            "Predictions",
            "SPLITS",
            "coarse_predictions",
            "load_predictions",
            "splits_available",
        ],
        "thresholds": ["RULES", "load_thresholds", "save_thresholds", "tune_predictions", "tune_thresholds"],
        "report": [
            "coarse_report",
            "evaluate_run",
            "likely_mislabelled",
            "metrics_at",
            "most_confused",
            "report_at",
            "top_losses",
        ],
    },
)

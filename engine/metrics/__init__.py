"""Every metric and threshold search (numpy, vectorised, sort-based), with the exact definitions in the
docstrings (ARCHITECTURE.md lists them and where each lives).

Split by concern, all building on `core` and never on each other: `core` (the decision rule `decide`,
`cumulative_counts`, FAR/FRR, the confusion matrix and the single-label summaries training reports),
`binary` (FAR/FRR/HTER sweeps, EER, ROC/DET/PR), `multilabel`, `calibration` and `bootstrap`; `display` writes a metric for people (one format per metric).
Arguments are (labels, scores or probs), as in scikit-learn.

Names are re-exported lazily (`engine.lazy`), like the other engine packages; engine modules import
from the defining module.
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "core": [
            "MetricsError",
            "average_precision",
            "balanced_accuracy",
            "check_scores",
            "confusion_matrix",
            "cumulative_counts",
            "decide",
            "f1_averages",
            "gap_midpoint",
            "far_frr",
            "log_loss",
            "multilabel_summary",
            "normalise_cm",
            "ovr_auc",
            "per_class",
            "roc_auc",
            "summarize",
            "top_k_accuracy",
        ],
        "binary": ["Sweep", "binary_report", "choose_threshold", "curves", "probit", "sweep"],
        "multilabel": ["f1_thresholds", "multilabel_report"],
        "calibration": ["apply_temperature", "fit_temperature", "nll", "reliability"],
        "hierarchy": ["coarse_decide", "coarse_labels", "coarse_probs"],
        "bootstrap": ["confusion_bootstrap", "multilabel_bootstrap"],
        "display": ["format_delta", "format_metric"],
    },
)

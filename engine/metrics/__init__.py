"""Every metric and threshold search (numpy, vectorised, sort-based); see DESIGN.md for the exact definitions.

Split by concern: `core` (confusion matrix and single-label summaries, used by training), `binary`
(FAR/FRR/HTER sweeps, EER, ROC/DET/PR), `multilabel`, `calibration` and `bootstrap`.
"""

from engine.metrics.binary import (Sweep, binary_report, choose_threshold, cumulative_counts, curves, probit,
                                   sweep)
from engine.metrics.bootstrap import confusion_bootstrap, multilabel_bootstrap
from engine.metrics.calibration import apply_temperature, fit_temperature, nll, reliability
from engine.metrics.core import (MetricsError, average_precision, balanced_accuracy, check_scores,
                                 confusion_matrix, f1_averages, far_frr, log_loss, multilabel_summary,
                                 normalise_cm, ovr_auc, per_class, roc_auc, summarize, top_k_accuracy)
from engine.metrics.multilabel import f1_thresholds, multilabel_report

__all__ = [
    "MetricsError", "Sweep", "apply_temperature", "average_precision", "balanced_accuracy", "binary_report",
    "check_scores", "choose_threshold", "confusion_bootstrap", "confusion_matrix", "cumulative_counts", "curves",
    "f1_averages", "f1_thresholds", "far_frr", "fit_temperature", "log_loss", "multilabel_bootstrap",
    "multilabel_report", "multilabel_summary", "nll", "normalise_cm", "ovr_auc", "per_class", "probit",
    "reliability", "roc_auc", "summarize", "sweep", "top_k_accuracy",
]

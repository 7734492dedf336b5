"""How a metric is written for people: one format per metric, used by every page and the CLI.

Why one home: the same HTER shown as "0.094" on one card and "10.59%" on another reads as two numbers.
Rates (a share of items: accuracy, FAR, FRR, HTER, EER, precision, recall, F1 ...) are percentages with
two decimals; scores that are not shares of items (AUC, average precision, log loss, ECE, temperature)
are plain numbers with four decimals; thresholds carry four decimals, the precision they are saved and
applied at in the UI. A missing or non-finite value is "n/a", never "None" or "nan".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

MISSING = "n/a"
NONE = "(none)"  # an empty label set, written so (a blank reads as a missing value)

# Shares of items, written as percentages. Matched on the metric's name without a split prefix
# ("val_hter" -> "hter") and without a "_mean"/"_std" suffix.
RATES = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "top1_accuracy",
        "top5_accuracy",
        "subset_accuracy",
        "far",
        "frr",
        "hter",
        "eer",
        "min_hter",
        "precision",
        "recall",
        "f1",
        "macro_f1",
        "micro_f1",
        "macro_f1_tuned",
        "weighted_f1",
        "samples_f1",
        "hamming_loss",
        "frr_at_far",
        "far_at_frr",
        "share",
        "minority_share",
        "top3_accuracy",
        "best_f1",
    }
)
THRESHOLDS = frozenset({"threshold", "eer_threshold", "min_hter_threshold", "f1_threshold"})

# Human names for the metric keys the engine writes.
LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "subset_accuracy": "subset accuracy",
    "macro_f1": "macro F1",
    "micro_f1": "micro F1",
    "macro_f1_tuned": "macro F1 (per-label thresholds)",
    "weighted_f1": "weighted F1",
    "samples_f1": "samples F1",
    "far": "FAR",
    "frr": "FRR",
    "hter": "HTER",
    "eer": "EER",
    "min_hter": "min HTER",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "map": "mAP",
    "log_loss": "log loss",
    "ece": "ECE",
    "hamming_loss": "Hamming loss",
    "loss": "loss",
    "threshold": "threshold",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


def base_name(name: str) -> str:
    """`val_hter` -> `hter`, `balanced_accuracy_mean` -> `balanced_accuracy`."""
    for prefix in ("val_", "test_", "train_", "oof_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    for suffix in ("_mean", "_std"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def is_rate(name: str) -> bool:
    """True when the metric is a share of items (shown as a percentage)."""
    return base_name(name) in RATES


def label(name: str) -> str:
    """A metric's name for people ("val_hter" -> "val HTER")."""
    base = base_name(name)
    prefix = name[: len(name) - len(base)] if name.endswith(base) else ""
    return prefix.replace("_", " ") + LABELS.get(base, base.replace("_", " "))


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def percent(value: object, digits: int = 2) -> str:
    """0.07234 -> "7.23%"; missing or non-finite -> "n/a"."""
    return f"{float(value) * 100:.{digits}f}%" if finite(value) else MISSING


def number(value: object, digits: int = 4) -> str:
    """0.273914 -> "0.2739"; missing or non-finite -> "n/a"."""
    return f"{float(value):.{digits}f}" if finite(value) else MISSING


def threshold(value: object) -> str:
    """A decision threshold at the precision Loupe shows and applies in the UI (4 decimals)."""
    return number(value, 4)


def format_metric(name: str, value: object) -> str:
    """`value` written the one way metric `name` is written everywhere (see the module docstring)."""
    base = base_name(name)
    if base in THRESHOLDS:
        return threshold(value)
    if base in RATES:
        return percent(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return number(value)


def interval(name: str, bounds: object) -> str:
    """A confidence interval in the metric's own format, the unit written once: "72.90–80.10%", "0.7290–0.8010".

    Missing bounds (None, a non-pair, a non-finite end) read "n/a": an interval is shown whole or not at all.
    """
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or not all(finite(b) for b in bounds):
        return MISSING
    lo, hi = (format_metric(name, float(b)) for b in bounds)
    if lo.endswith("%") and hi.endswith("%"):
        lo = lo[:-1]
    return f"{lo}–{hi}"


def format_delta(name: str, delta: object) -> str:
    """A signed difference in the metric's own unit: rates in percentage points ("+1.20 pp")."""
    if not finite(delta):
        return MISSING
    d = float(delta)
    if is_rate(name):
        return f"{d * 100:+.2f} pp"
    return f"{d:+.4f}"


__all__ = [
    "MISSING",
    "RATES",
    "base_name",
    "finite",
    "format_delta",
    "format_metric",
    "interval",
    "is_rate",
    "label",
    "number",
    "percent",
    "threshold",
]


def label_probs(entries: Sequence[dict], name: Callable[[str], str] = str) -> str:
    """'dog 12.00%, cat 81.00%' for a multi-label item's missed or extra labels (`{"label", "prob"}` each),
    NONE when there are none; `name` lets a page make long labels breakable."""
    return ", ".join(f"{name(e['label'])} {percent(e['prob'])}" for e in entries) or NONE


def setting(value: object) -> str:
    """A config value as people read it (a sweep's searched learning rate, batch size, optimiser): floats to 3
    significant digits ("0.00123", "1.5e-05"), booleans "true"/"false", names as they are; missing "n/a"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else MISSING
    if value is None:
        return MISSING
    return str(value)

"""When a prediction is "unsure": the one rule the Predict page, the CLI (its output and CSV) and `Predictor` use.

Why not "top probability below 0.5": a binary model's top class always has at least 0.5, so a 55% prediction
passed as confident, and a multi-class top-1 of 0.45 against a runner-up of 0.05 is not in doubt at all. What
makes a prediction worth a second look is how close it is to going the other way, so the rule measures a
margin on the probability scale the user sees (after the run's temperature, where one is saved):

- binary: the distance of the positive class's score from the run's decision threshold (the saved one, 0.5
  when none is saved);
- multi-class: the top-1 probability minus the top-2 probability;
- multi-label: the smallest distance of any label's score from that label's threshold.

A prediction is unsure when its margin is below `DEFAULT_MARGIN` (or the margin the user chose). A
multi-label prediction that names no label at all is unsure as well: there is nothing to act on. A threshold
at or below 0, or above 1, fixes its decision (every score passes, or none does): such a decision cannot
change, so it counts as the largest margin, 1. Margins are rounded to 6 decimals before the comparison, so
float32 noise does not decide a case that sits exactly on the margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_MARGIN = 0.1  # probability units: a binary score within 0.1 of its threshold, top two within 10 points
FIXED = 1.0  # the margin of a decision no score can change (a threshold at or below 0, or above 1)

RULE = {
    "binary": "the positive score is within the margin of the decision threshold",
    "multiclass": "the top two probabilities differ by less than the margin",
    "multilabel": "some label's score is within the margin of its threshold, or no label passes",
}


def decision_margin(
    probs: Sequence[float] | np.ndarray, task: str, threshold: float | Sequence[float] | None = None, positive: int = 1
) -> float:
    """How far one image's probabilities (C,) are from changing the decision (see the module docstring).

    `threshold` is the binary threshold, or one per label for multi-label (0.5 when None), on the same scale
    as `probs`.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if task == "binary":
        t = 0.5 if threshold is None else float(threshold)
        return float(abs(p[positive] - t)) if 0 < t <= 1 else FIXED
    if task == "multilabel":
        t = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, dtype=np.float64), p.shape)
        open_ = (t > 0) & (t <= 1)  # labels whose decision a score can change
        return float(np.min(np.abs(p - t)[open_])) if open_.any() else FIXED
    if len(p) < 2:
        return float(p[0]) if len(p) else 0.0
    top2 = np.partition(p, -2)[-2:]
    return float(top2[1] - top2[0])


def is_unsure(
    margin: float | None, limit: float = DEFAULT_MARGIN, task: str = "multiclass", labels: Sequence[str] | None = None
) -> bool:
    """True when the prediction is within `limit` of changing (or, multi-label, names no label); a missing
    margin (an image that could not be read) is unsure."""
    if margin is None or not np.isfinite(margin):
        return True
    if task == "multilabel" and labels is not None and len(labels) == 0:
        return True
    return bool(round(float(margin), 6) < float(limit))


def describe(task: str, limit: float = DEFAULT_MARGIN) -> str:
    """The rule in one sentence for people (UI help, CLI help)."""
    return f"unsure when {RULE.get(task, RULE['multiclass'])} (margin {limit:g})"


__all__ = ["DEFAULT_MARGIN", "FIXED", "RULE", "decision_margin", "describe", "is_unsure"]

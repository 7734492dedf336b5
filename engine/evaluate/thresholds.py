"""A run's decision thresholds: tuned on one split's stored predictions, saved to thresholds.json, read back.

Protocol (ARCHITECTURE.md): thresholds and the temperature are tuned on `val` and applied to `test`.
Binary: one threshold on P(positive), picked by a rule (min-HTER, EER or best F1); multi-label: one
threshold per label maximising that label's F1; the temperature minimises validation NLL. The saved
file is what Predict and export read, so every consumer decides with `engine.metrics.core.decide` at
the same thresholds Evaluate reported.
"""

from __future__ import annotations

import json

from engine.evaluate.predictions import EvaluateError, Predictions, load_predictions
from engine.metrics.binary import choose_threshold
from engine.metrics.calibration import fit_temperature
from engine.metrics.multilabel import f1_thresholds
from engine.runs.folder import Run, atomic_write_json

RULES = ("min_hter", "f1", "eer")
FILE = "thresholds.json"


def tune_predictions(pred: Predictions, rule: str) -> dict:
    """The thresholds (and temperature) `rule` picks on these predictions, in the thresholds.json format."""
    if pred.task == "binary":
        if rule not in RULES:
            raise EvaluateError(f"Unknown threshold rule '{rule}'; use one of {', '.join(RULES)}.")
        t = choose_threshold(pred.labels == pred.positive, pred.probs[:, pred.positive], rule)
        out = {"binary": t, "positive_class": pred.positive, "rule": rule, "tuned_on": pred.split}
    elif pred.task == "multilabel":
        out = {"multilabel": f1_thresholds(pred.labels, pred.probs).tolist(), "rule": "f1", "tuned_on": pred.split}
    else:
        out = {"tuned_on": pred.split}
    out["temperature"] = fit_temperature(pred.labels, pred.probs)
    return out


def tune_thresholds(run: Run, rule: str = "min_hter", split: str = "val") -> dict:
    """The thresholds (and temperature) a rule picks on `split`, in the thresholds.json format."""
    return tune_predictions(load_predictions(run, split), rule)


def save_thresholds(run: Run, thresholds: dict) -> None:
    """Write thresholds.json atomically (Predict and export pick it up on their next load), and the same
    thresholds, with where they were tuned (`tuned_on`), into summary.json: one truth in both files."""
    atomic_write_json(run.path / FILE, thresholds)
    run.record_thresholds(thresholds)


def load_thresholds(run: Run) -> dict:
    """thresholds.json, else summary.json's "thresholds" (training's defaults), else {}.

    An unreadable or damaged thresholds.json counts as absent, as it did before (the run still opens).
    """
    try:
        saved = json.loads((run.path / FILE).read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict):
        return saved
    return dict((run.summary() or {}).get("thresholds") or {})

"""A run's decision thresholds: tuned on one split's stored predictions, saved to thresholds.json, read back.

Protocol (ARCHITECTURE.md): thresholds and the temperature are tuned on `val` and applied to `test`.
Binary: one threshold on P(positive), picked by a rule (min-HTER, EER or best F1); multi-label: one
threshold per label maximising that label's F1; the temperature minimises validation NLL. The saved
file is what Predict and export read, so every consumer decides with `engine.metrics.core.decide` at
the same thresholds Evaluate reported.
"""

from __future__ import annotations

import json
import math

from engine.errors import excerpt
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

    An unreadable thresholds.json counts as absent, as it did before (the run still opens); one that
    parses but holds a value no decision can use (a string, NaN, inf) is one
    sentence naming the file, the key and the value.
    """
    path = run.path / FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if saved is None:
        return dict((run.summary() or {}).get("thresholds") or {})
    return check_thresholds(saved, str(path))


def check_thresholds(saved: object, where: str) -> dict:
    """`saved` if it is a thresholds mapping every consumer can use, else `EvaluateError` naming `where`."""

    def bad(key: str, value: object, allowed: str) -> EvaluateError:
        return EvaluateError(
            f"'{where}' holds {excerpt(value)} for '{key}'; it must be {allowed}. Delete the file or save the "
            "thresholds again (evaluate --save-thresholds)."
        )

    def real(value: object) -> bool:  # a threshold above 1 is legitimate (no score reaches it); NaN and inf are not
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(saved, dict):
        raise bad("thresholds", saved, 'a mapping such as {"binary": 0.5}')
    if "binary" in saved and not real(saved["binary"]):
        raise bad("binary", saved["binary"], "a finite number")
    ml = saved.get("multilabel")
    if ml is not None and not (isinstance(ml, list) and all(real(v) for v in ml)):
        raise bad("multilabel", ml, "a list of finite numbers, one per label")
    temp = saved.get("temperature")
    if temp is not None and not (
        isinstance(temp, (int, float)) and not isinstance(temp, bool) and math.isfinite(temp) and temp > 0
    ):
        raise bad("temperature", temp, "a positive number")
    pos = saved.get("positive_class")
    if pos is not None and not (isinstance(pos, int) and not isinstance(pos, bool) and pos in (0, 1)):
        raise bad("positive_class", pos, "0 or 1")
    return saved

"""A run's stored predictions (predictions/<split>.npz) as one typed object, the input of all evaluation.

Why a module of its own: threshold tuning (`thresholds`) and the report (`report`) both start from
these files, and neither should import the other to read them. The npz layout (ids, indices, labels,
probs) is part of the run-folder contract in ARCHITECTURE.md; nothing here re-runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import LoupeError
from engine.runs.folder import Run

SPLITS = ("val", "test", "oof")


class EvaluateError(LoupeError):
    """A run that cannot be evaluated as asked (missing predictions, unknown split or rule)."""


@dataclass
class Predictions:
    """One split's stored predictions plus what is needed to read them."""

    ids: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    task: str
    positive: int
    split: str = ""


def _task_and_positive(run: Run, labels: np.ndarray, n_classes: int) -> tuple[str, int]:
    header = run.config()
    task = header.get("task") or header.get("config", {}).get("task")
    if task not in ("binary", "multiclass", "multilabel"):
        task = "multilabel" if labels.ndim == 2 else ("binary" if n_classes == 2 else "multiclass")
    positive = int(header.get("config", {}).get("positive_class", 1)) if task == "binary" else 0
    return task, positive


def load_predictions(run: Run, split: str) -> Predictions:
    """predictions/<split>.npz as a `Predictions`; a clear error when the file is missing."""
    if split not in SPLITS:
        raise EvaluateError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    path = run.predictions / f"{split}.npz"
    if not path.exists():
        raise EvaluateError(
            f"The run '{run.id}' has no {split} predictions ({path} is missing); train it to completion first."
        )
    with np.load(path, allow_pickle=False) as z:
        probs = np.asarray(z["probs"], np.float64)
        labels = np.asarray(z["labels"])
        ids = z["ids"].astype(str) if "ids" in z else np.arange(len(labels)).astype(str)
        indices = z["indices"] if "indices" in z else np.arange(len(labels))
    classes = run.classes() or [str(i) for i in range(probs.shape[1])]
    task, positive = _task_and_positive(run, labels, probs.shape[1])
    return Predictions(ids, indices, labels, probs, list(classes), task, positive, split)


def splits_available(run: Run) -> list[str]:
    """The splits whose predictions the run has stored, in SPLITS order."""
    return [s for s in SPLITS if (run.predictions / f"{s}.npz").exists()]

"""A run's stored predictions (predictions/<split>.npz) as one typed object, the input of all evaluation.

Why a module of its own: threshold tuning (`thresholds`) and the report (`report`) both start from
these files, and neither should import the other to read them. The npz layout (ids, indices, labels,
probs) is part of the run-folder contract in ARCHITECTURE.md; nothing here re-runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.data.hierarchy import Hierarchy
from engine.errors import LoupeError, excerpt
from engine.files import FileRefused, open_npz
from engine.metrics.hierarchy import coarse_labels, coarse_probs
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
    hierarchy: Hierarchy | None = None  # two-level runs: the fine -> coarse mapping saved with the run
    level: str = "fine"  # "coarse" for the view `coarse_predictions` derives


def coarse_predictions(pred: Predictions) -> Predictions:
    """The same images at the coarse level: probabilities summed over each coarse class's fine members and
    labels mapped to their coarse class (`engine.metrics.hierarchy`), so every report and page figure that
    reads a multi-class `Predictions` works on the coarse level unchanged."""
    h = pred.hierarchy
    if h is None:
        raise EvaluateError("This run has no coarse level; train it on a dataset with two-level labels.")
    return replace(
        pred,
        labels=coarse_labels(pred.labels, h.parent),
        probs=coarse_probs(pred.probs, h.parent),
        classes=list(h.coarse),
        task="multiclass",
        positive=0,
        hierarchy=None,
        level="coarse",
    )


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
    probs, labels, ids, indices = _read_arrays(path)
    classes = run.classes() or [str(i) for i in range(probs.shape[1])]
    if probs.shape[1] != len(classes):
        raise EvaluateError(
            f"'{path}' holds probabilities for {probs.shape[1]} classes but the run's classes.json names "
            f"{len(classes)}; the run folder is damaged: retrain the run."
        )
    task, positive = _task_and_positive(run, labels, probs.shape[1])
    hierarchy = run.hierarchy() if task == "multiclass" else None
    return Predictions(ids, indices, labels, probs, list(classes), task, positive, split, hierarchy)


def load_pool(run: Run) -> Predictions | None:
    """predictions/pool.npz (the run's probabilities on its dataset's unlabelled pool, written at the end of
    training by `engine.train.records.save_pool_predictions`) as a `Predictions` whose `ids` are the pool's file
    ids and whose `labels` mean nothing; None when the run has none (no pool, or trained before there was one)."""
    path = run.predictions / "pool.npz"
    if not path.exists():
        return None
    probs, labels, ids, indices = _read_arrays(path)
    classes = run.classes() or [str(i) for i in range(probs.shape[1])]
    if probs.shape[1] != len(classes):
        raise EvaluateError(f"'{path}' does not match the run's classes.json; retrain the run.")
    task, positive = _task_and_positive(run, labels, probs.shape[1])
    return Predictions(ids, indices, labels, probs, list(classes), task, positive, "pool")


def _read_arrays(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probs, labels, ids, indices) of a predictions file, each checked where it enters.

    A run folder is outside input too: a truncated or hand-edited file, an object array, a missing
    member or non-finite probabilities get one sentence naming the file, never a traceback.
    """

    def damaged(what: str) -> EvaluateError:
        return EvaluateError(f"'{path}' {what}; the run folder is damaged: retrain the run or restore the file.")

    try:
        with open_npz(path) as z:
            missing = [k for k in ("probs", "labels") if k not in z.files]
            if missing:
                raise damaged(f"has no {' or '.join(repr(m) for m in missing)} array")
            probs, labels = z["probs"], z["labels"]
            ids = z["ids"] if "ids" in z.files else None
            indices = z["indices"] if "indices" in z.files else None
    except FileRefused as e:
        raise damaged(f"cannot be used ({e})") from None
    except LoupeError:  # damaged() above, or an EnvError from the caps
        raise
    except Exception as e:  # a truncated or non-zip file, an object array (refused unpickled), a bad header
        raise damaged(f"is not a readable predictions file ({type(e).__name__}: {excerpt(str(e))})") from None
    if probs.dtype.kind not in "fiu" or probs.ndim != 2 or probs.shape[1] < 1:
        raise damaged(f"holds 'probs' of {probs.dtype} {probs.shape}; it must be numbers, one row per image")
    probs = np.asarray(probs, np.float64)
    if not np.isfinite(probs).all() or probs.min(initial=0) < -1e-6 or probs.max(initial=0) > 1 + 1e-6:
        raise damaged("holds probabilities that are not numbers between 0 and 1")
    n = probs.shape[0]
    if labels.dtype.kind not in "biu" or labels.shape[:1] != (n,) or labels.ndim not in (1, 2):
        raise damaged(f"holds 'labels' of {labels.dtype} {labels.shape}; it must be {n} whole-number labels")
    if labels.ndim == 2 and labels.shape[1] != probs.shape[1]:
        raise damaged(f"holds {labels.shape[1]} label columns but {probs.shape[1]} probability columns")
    if labels.ndim == 1 and n and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise damaged(f"holds class ids outside 0..{probs.shape[1] - 1}")
    ids = np.arange(n).astype(str) if ids is None else ids
    indices = np.arange(n) if indices is None else indices
    if ids.shape != (n,) or ids.dtype.kind not in "USiu" or indices.shape != (n,) or indices.dtype.kind not in "iu":
        raise damaged(f"holds 'ids' or 'indices' that do not list its {n} images")
    return probs, labels, ids.astype(str), indices


def splits_available(run: Run) -> list[str]:
    """The splits whose predictions the run has stored, in SPLITS order."""
    return [s for s in SPLITS if (run.predictions / f"{s}.npz").exists()]

"""The label queue: which images a person should label (or check) next, from one run's stored predictions.

Two kinds of item, pool images first:
- `pool`: unlabelled images (predictions/pool.npz), ranked by how little the model is sure of them (multi-class:
  top-1 minus top-2 probability; multi-label: the smallest |p_j - 0.5| over labels), taken round-robin over the
  predicted classes so a page of the queue covers every class rather than the one hardest boundary (the
  class-balanced diversity of active learning's "margin sampling with stratification");
- `mislabelled`: labelled images cleanlab flags (`engine.evaluate.report.label_issues`) on out-of-sample
  probabilities: the k-fold run's out-of-fold ones, else the validation split's (held out from that model).

Images already labelled or confirmed in `labels.loupe.csv` leave the queue (the source given is the dataset as
resolved, with that file applied). Nothing here re-runs the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.data.labels_file import in_force, labels_path, read_changes
from engine.data.source import Source
from engine.evaluate.predictions import load_pool, load_predictions, splits_available
from engine.evaluate.report import label_issues
from engine.runs.folder import Run, list_runs


@dataclass
class QueueItem:
    """One row of the queue; `suggested` are the model's labels (one, or a set for multi-label)."""

    rank: int
    id: str
    kind: str  # 'pool' | 'mislabelled'
    suggested: list[str]
    confidence: float  # the probability of the top suggestion (multi-label: of the least sure label's side)
    margin: float  # how far from changing its mind: smaller is more useful to label
    given: list[str] | None = None  # mislabelled items: the label the dataset gives

    def to_dict(self) -> dict:
        return asdict(self)


def uncertainty_margin(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """Per image: top-1 minus top-2 probability, or multi-label's smallest |p_j - 0.5| (0: a coin toss)."""
    if len(probs) == 0:
        return np.zeros(0)
    if multilabel:
        return np.abs(probs - 0.5).min(axis=1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def rank_pool(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """Row order of the queue: each predicted class's images smallest margin first, then round-robin over the
    classes (the class with the least sure image leads each round). Deterministic: ties keep row order."""
    margin = uncertainty_margin(probs, multilabel)
    if len(margin) == 0:
        return np.zeros(0, np.int64)
    group = np.abs(probs - 0.5).argmin(axis=1) if multilabel else probs.argmax(axis=1)
    queues = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        queues.append(members[np.argsort(margin[members], kind="stable")])
    queues.sort(key=lambda q: (margin[q[0]], q[0]))
    order = []
    for k in range(max(len(q) for q in queues)):
        order += [int(q[k]) for q in queues if k < len(q)]
    return np.asarray(order, np.int64)


def label_queue(run: Run, source: Source, n: int | None = None, issues: int = 50) -> list[QueueItem]:
    """The queue for `source` (resolved with its labels file) from `run`: pool images still unlabelled, ranked
    (`rank_pool`), then up to `issues` likely mislabelled images not yet confirmed or relabelled. `n` caps it."""
    path = labels_path(source)
    reviewed = set(in_force(read_changes(path))) if path is not None else set()
    items: list[QueueItem] = []
    pool = load_pool(run)
    if pool is not None:
        waiting = set(source.pool_files)
        multilabel = pool.task == "multilabel"
        margin = uncertainty_margin(pool.probs, multilabel)
        for i in rank_pool(pool.probs, multilabel):
            if pool.ids[i] not in waiting:
                continue
            p = pool.probs[i]
            if multilabel:
                suggested = [pool.classes[j] for j in np.flatnonzero(p >= 0.5)]
                confidence = float(0.5 + margin[i])
            else:
                suggested, confidence = [pool.classes[int(p.argmax())]], float(p.max())
            items.append(QueueItem(0, str(pool.ids[i]), "pool", suggested, confidence, float(margin[i])))
    items += _issues(run, source, reviewed, issues)
    for k, item in enumerate(items):
        item.rank = k + 1
    return items[:n] if n is not None else items


def _issues(run: Run, source: Source, reviewed: set[str], n: int) -> list[QueueItem]:
    """cleanlab's likely mislabelled images of the run's out-of-sample split, minus those already reviewed."""
    split = "oof" if "oof" in splits_available(run) else "val" if "val" in splits_available(run) else None
    if split is None or n <= 0:
        return []
    pred = load_predictions(run, split)
    idx, _ = label_issues(pred.labels, pred.probs)
    files = set(source.files or [])
    out = []
    for i in idx:
        image = str(pred.ids[i])
        if image in reviewed or image not in files:
            continue
        p = pred.probs[i]
        if pred.task == "multilabel":
            given = [pred.classes[j] for j in np.flatnonzero(pred.labels[i])]
            suggested = [pred.classes[j] for j in np.flatnonzero(p >= 0.5)]
            confidence = float(np.abs(p - pred.labels[i]).max())
            margin = float(np.abs(p - 0.5).min())
        else:
            y = int(pred.labels[i])
            other = p.copy()
            other[y] = -np.inf
            s = int(other.argmax())
            given, suggested, confidence = [pred.classes[y]], [pred.classes[s]], float(p[s])
            margin = float(p[s] - p[y])
        out.append(QueueItem(0, image, "mislabelled", suggested, confidence, margin, given))
        if len(out) >= n:
            break
    return out


def queue_runs(spec: str, root: str | None = None) -> list[Run]:
    """The completed runs trained on `spec` that can feed the queue (they hold pool predictions or an
    out-of-sample split), newest first: the CLI's default and the Dataset page's choice."""
    out = []
    for run in list_runs(root):
        if run.config().get("config", {}).get("dataset") != spec or run.status().get("state") != "completed":
            continue
        if (run.predictions / "pool.npz").exists() or "oof" in splits_available(run):
            out.append(run)
    return out

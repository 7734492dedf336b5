"""Bootstrap confidence intervals, vectorised over resamples.

For single-label tasks every metric we bootstrap (HTER, balanced accuracy, macro F1) is a function of
the confusion matrix alone, and resampling N items with replacement makes the cell counts exactly
Multinomial(N, cm / N). So B resamples are one `rng.multinomial` call on C*C cells instead of B*N
index draws: exact, and independent of N. Multi-label draws per-item weights in chunks instead.
HTER here is the same definition as in `core`: FAR = false accepts / negatives, FRR = false rejects /
positives, averaged. Arguments are (labels, decisions), as in scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return [float(lo), float(hi)]


def _batched_metrics(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Balanced accuracy and macro F1 of a (B, C, C) stack of confusion matrices."""
    cms = cms.astype(np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    support, predicted = cms.sum(axis=2), cms.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / support
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        denom = precision + np.nan_to_num(recall)
        f1 = np.where(denom > 0, 2 * precision * np.nan_to_num(recall) / denom, 0.0)
        used = (support + predicted) > 0
        return {
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "macro_f1": (f1 * used).sum(axis=1) / used.sum(axis=1),
        }


def confusion_bootstrap(
    cm: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95, binary_positive: int | None = None
) -> dict[str, list[float] | None]:
    """95% percentile intervals for balanced accuracy, macro F1 (and HTER when `binary_positive` is set)."""
    total = int(cm.sum())
    if n <= 0 or total == 0:
        return {}
    c = cm.shape[0]
    rng = np.random.default_rng(seed)
    cms = rng.multinomial(total, (cm / total).ravel(), size=n).reshape(n, c, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _batched_metrics(cms)
        if binary_positive is not None:
            p, q = binary_positive, 1 - binary_positive
            far = cms[:, q, p] / cms[:, q, :].sum(axis=1)
            frr = cms[:, p, q] / cms[:, p, :].sum(axis=1)
            out["hter"] = (far + frr) / 2
    return {k: _interval(v, level) for k, v in out.items()}


def multilabel_bootstrap(
    y: np.ndarray, pred: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95, chunk: int = 100
) -> dict[str, list[float] | None]:
    """Macro F1 interval for multi-label predictions: multinomial item weights, one matrix product per chunk."""
    if n <= 0 or len(y) == 0:
        return {}
    rng = np.random.default_rng(seed)
    pred, y = pred.astype(bool), y.astype(bool)
    cells = [(pred & y), (pred & ~y), (~pred & y)]
    values = []
    for start in range(0, n, chunk):
        w = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=min(chunk, n - start)).astype(np.float64)
        tp, fp, fn = (w @ m for m in cells)
        denom = 2 * tp + fp + fn
        values.append(np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0).mean(axis=1))
    return {"macro_f1": _interval(np.concatenate(values), level)}

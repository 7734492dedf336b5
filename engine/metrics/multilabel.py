"""Multi-label metrics: one threshold per label chosen to maximise that label's F1 (an exact definition,
see ARCHITECTURE.md), and the micro/macro/sample F1, Hamming loss and subset accuracy those thresholds give.

Builds on `core` only (the counts at every threshold and the decision rule); arguments are (labels, probs).
"""

from __future__ import annotations

import numpy as np

from engine.metrics.core import MetricsError, check_scores, cumulative_counts, decide, gap_midpoint


def f1_thresholds(labels: np.ndarray, probs: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-label F1-optimal thresholds (each from one sort, in the middle of the gap below the optimal
    score: `engine.metrics.core.gap_midpoint`); a label with no positives keeps `default`,
    since every threshold gives F1 = 0 there and the highest would silently switch the label off."""
    p = check_scores(probs, "probabilities")
    y = np.asarray(labels).astype(bool)
    if p.ndim != 2 or y.shape != p.shape:
        raise MetricsError(
            f"Multi-label probabilities and labels must both be (items, labels); got {p.shape} and {y.shape}."
        )
    out = np.full(p.shape[1], default, np.float64)
    for c in range(p.shape[1]):  # a loop over labels, never over thresholds
        n_pos = int(y[:, c].sum())
        if n_pos == 0:
            continue
        thr, tp, fp = cumulative_counts(y[:, c], p[:, c])  # descending: the gap below point i is thr[i + 1]
        best = int(np.argmax(2 * tp / (tp + fp + n_pos)))
        out[c] = gap_midpoint(thr[::-1], len(thr) - 1 - best)
    return out


def multilabel_report(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
    """Micro/macro/sample F1, Hamming loss, subset accuracy and per-label P/R/F1/support at `thresholds`."""
    y = np.asarray(labels).astype(bool)
    pred = decide(probs, "multilabel", threshold=thresholds)
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0).astype(np.float64)
    fn = (~pred & y).sum(axis=0).astype(np.float64)
    support = y.sum(axis=0)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    micro = 2 * tp.sum() / denom.sum() if denom.sum() else 0.0
    # samples F1: per item, over its labels; an item with nothing true and nothing predicted scores 0 (as sklearn)
    tp_i = (pred & y).sum(axis=1)
    d_i = pred.sum(axis=1) + y.sum(axis=1)
    samples = np.divide(2 * tp_i, d_i, out=np.zeros(len(y)), where=d_i > 0)
    return {
        "micro_f1": float(micro),
        "macro_f1": float(f1.mean()),
        "samples_f1": float(samples.mean()),
        "hamming_loss": float((pred != y).mean()),
        "subset_accuracy": float((pred == y).all(axis=1).mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "confusion": np.stack([np.stack([(~pred & ~y).sum(0), fp], -1), np.stack([fn, tp], -1)], 1).astype(np.int64),
    }

"""Classification metrics on predicted probabilities (numpy, vectorised, sort-based).

Definitions follow DESIGN.md ("Definitions that must be exact"): balanced accuracy is the mean of
per-class recall; FAR/FRR divide by the number of negatives/positives (never by the batch size);
binary decisions are `score >= threshold` with score = P(positive class).
"""

from __future__ import annotations

import numpy as np

from engine.errors import LoupeError


class MetricsError(LoupeError):
    """Inputs a metric cannot be computed on (empty, NaN, wrong shape, a single class where two are needed)."""


def check_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """Float64 view of `scores`, refusing empty or non-finite input (a NaN would silently poison every sort)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise MetricsError(f"The {name} are empty; there is nothing to evaluate.")
    if not np.isfinite(s).all():
        raise MetricsError(f"The {name} contain NaN or infinite values; check the predictions file.")
    return s


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = items of true class i predicted as j."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the true labels."""
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean()) if present.any() else 0.0


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC AUC via the rank statistic (ties count one half); None with a single class."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s), np.float64)
    # average ranks over tied runs, vectorised: start/end of each run of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def far_frr(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """FAR = false accepts / negatives, FRR = false rejects / positives, accepting when score >= t."""
    y = np.asarray(y_true).astype(bool)
    accept = np.asarray(scores) >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    far = float((accept & ~y).sum() / n_neg) if n_neg else 0.0
    frr = float((~accept & y).sum() / n_pos) if n_pos else 0.0
    return far, frr


def summarize(probs: np.ndarray, labels: np.ndarray, task: str, positive: int = 1, threshold: float = 0.5) -> dict[str, float | None]:
    """The per-epoch validation metrics: accuracy, balanced accuracy, macro F1 (+ AUC, HTER for binary).

    `probs` are (N, C) probabilities (softmax for single-label, sigmoid for multi-label); `labels`
    are (N,) class indices or (N, C) multi-hot.
    """
    if task == "multilabel":
        return multilabel_summary(probs, labels, threshold)
    num_classes = probs.shape[1]
    if task == "binary":
        score = probs[:, positive]
        y_pos = labels == positive
        pred = np.where(score >= threshold, positive, 1 - positive)
    else:
        pred = probs.argmax(axis=1)
    cm = confusion_matrix(labels, pred, num_classes)
    pc = per_class(cm)
    out: dict[str, float | None] = {
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": float(pc["f1"][pc["support"] > 0].mean()) if (pc["support"] > 0).any() else 0.0,
    }
    if task == "binary":
        far, frr = far_frr(y_pos, score, threshold)
        out.update(auc=roc_auc(y_pos, score), far=far, frr=frr, hter=(far + frr) / 2)
    return out


def multilabel_summary(probs: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """Micro/macro F1, subset accuracy and Hamming loss at per-label thresholds."""
    y = np.asarray(labels).astype(bool)
    pred = probs >= np.asarray(threshold)
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0).astype(np.float64)
    fn = (~pred & y).sum(axis=0).astype(np.float64)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    present = y.sum(axis=0) > 0
    return {
        "accuracy": float((pred == y).all(axis=1).mean()),  # subset accuracy
        "balanced_accuracy": _multilabel_balanced_accuracy(pred, y),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom else 0.0,
        "hamming_loss": float((pred != y).mean()),
    }


def _multilabel_balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Per label, the mean of the recall on positives and on negatives; then the mean over labels."""
    pos, neg = y.sum(axis=0), (~y).sum(axis=0)
    tpr = np.divide((pred & y).sum(axis=0), pos, out=np.full(y.shape[1], np.nan), where=pos > 0)
    tnr = np.divide((~pred & ~y).sum(axis=0), neg, out=np.full(y.shape[1], np.nan), where=neg > 0)
    per_label = np.nanmean(np.stack([tpr, tnr]), axis=0)
    return float(np.nanmean(per_label)) if np.isfinite(per_label).any() else 0.0


# --- single-label summaries beyond the training ones ------------------------------------------------


def normalise_cm(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (each true class sums to 1; rows of absent classes stay 0)."""
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)


def f1_averages(cm: np.ndarray) -> dict[str, float]:
    """Macro, micro and weighted F1 from one confusion matrix.

    Macro averages over classes that occur in the true *or* predicted labels (scikit-learn's default),
    so a class nobody predicts and nobody has does not drag the mean to 0.
    """
    pc = per_class(cm)
    used = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    total = cm.sum()
    return {
        "macro_f1": float(pc["f1"][used].mean()) if used.any() else 0.0,
        "micro_f1": float(np.trace(cm) / total) if total else 0.0,  # single-label: micro F1 == accuracy
        "weighted_f1": float((pc["f1"] * pc["support"]).sum() / total) if total else 0.0,
    }


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of items whose true class is among the k highest probabilities (ties resolved in its favour)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    true_p = p[np.arange(len(y)), y]
    return float(((p > true_p[:, None]).sum(axis=1) < k).mean())


def log_loss(probs: np.ndarray, labels: np.ndarray, multilabel: bool = False) -> float:
    """Mean negative log-likelihood; rows renormalised and clipped at machine epsilon like scikit-learn."""
    eps = np.finfo(np.float64).eps
    p = np.asarray(probs, np.float64)
    if multilabel:
        y = np.asarray(labels).astype(bool)
        q = np.clip(p, eps, 1 - eps)
        return float(-(np.where(y, np.log(q), np.log1p(-q))).mean())
    p = p / p.sum(axis=1, keepdims=True)
    y = np.asarray(labels, np.int64)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps)).mean())


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the PR curve as the step sum  sum_n (R_n - R_{n-1}) P_n  over distinct scores (= sklearn)."""
    y = np.asarray(y_true).astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    from engine.metrics.binary import cumulative_counts

    _, tp, fp = cumulative_counts(y, scores)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def ovr_auc(probs: np.ndarray, labels: np.ndarray, kind: str = "roc") -> float | None:
    """Macro one-vs-rest ROC AUC or average precision over classes that have both positives and negatives."""
    y = np.asarray(labels)
    fn = roc_auc if kind == "roc" else average_precision
    if y.ndim == 1:
        y = y[:, None] == np.arange(probs.shape[1])[None, :]
    values = [fn(y[:, c], probs[:, c]) for c in range(probs.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean(values)) if values else None

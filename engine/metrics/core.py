"""The exact definitions every other metric builds on, and the single-label summaries training reports.

Why one module: a number on the Train page, on Evaluate, under an attack and in Predict must mean the
same thing, so the rules they share live here once (see ARCHITECTURE.md, "Definitions that must be
exact"), and `binary`, `multilabel`, `calibration` and `bootstrap` import from this module, never the
reverse:

- decision rule (`decide`): binary score = P(positive class), decided positive when score >= t;
  multi-label: each label on when its probability >= that label's threshold; multiclass: argmax;
- counts at every threshold from one sort (`cumulative_counts`), ties never split;
- FAR = false accepts / negatives, FRR = false rejects / positives (never / batch size), HTER = their mean;
- balanced accuracy = mean of per-class recall over the classes present.

Argument order follows scikit-learn: labels first, then scores/probabilities (`f(labels, probs)`).
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


def cumulative_counts(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, true accepts, false accepts) when accepting `score >= threshold`.

    One stable sort and one cumulative sum: the counts at each distinct score include the whole run of
    scores tied with it, so a threshold never splits a tie.
    """
    s = check_scores(scores)
    y = np.asarray(y).astype(bool)
    if y.shape != s.shape:
        raise MetricsError(f"Labels and scores differ in length ({y.size} vs {s.size}).")
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    tp_all = np.cumsum(y[order], dtype=np.int64)
    # the last item of each run of equal scores: the counts there include the whole tie
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = tp_all[last]
    return s_sorted[last], tp, (last + 1) - tp


def gap_midpoint(ascending: np.ndarray, i: int) -> float:
    """THE threshold of an operating point: the middle of the gap below the i-th of the distinct `ascending`
    thresholds of a sweep (bob.measure's placement).

    Accepting `score >= ascending[i]` gives the same counts as any threshold in (ascending[i - 1],
    ascending[i]], so a tuned threshold is put in the middle of that gap instead of on a validation score,
    where the least change in held-out scores would flip a decision. The lowest point (accept everything)
    keeps the lowest score, and the last point of a sweep (reject everything, just above the top score) stays
    where it is: neither has a gap on both sides."""
    a = np.asarray(ascending, np.float64)
    if i <= 0:
        return float(a[0])
    mid = (a[i - 1] + a[i]) / 2
    return float(mid if a[i - 1] < mid <= a[i] else a[i])  # two adjacent floats have no middle


def decide(probs: np.ndarray, task: str, positive: int = 1, threshold: float | np.ndarray | None = None) -> np.ndarray:
    """THE decision rule: probabilities (N, C), or one item's (C,), -> decisions.

    - binary with a threshold t: score = P(positive), decided `positive` when score >= t (a score of
      exactly t is positive), else the other class `1 - positive`; without a threshold: argmax;
    - multilabel: a boolean per label, probs >= t, where t is one threshold or one per label (default 0.5);
    - multiclass: argmax (the first class wins a tie).
    """
    p = np.asarray(probs)
    if task == "multilabel":
        return p >= np.asarray(0.5 if threshold is None else threshold, dtype=np.float64)
    if task == "binary" and threshold is not None:
        return np.where(p[..., positive] >= float(threshold), positive, 1 - positive)
    return p.argmax(axis=-1)


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
    """Balanced accuracy = mean of per-class recall, over the classes present in the true labels."""
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
    """FAR = false accepts / negatives, FRR = false rejects / positives, accepting when score >= t.

    Divided by the class counts, never by the number of items (that would be wrong under imbalance); a
    rate whose class is absent is 0."""
    y = np.asarray(y_true).astype(bool)
    accept = np.asarray(scores) >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    far = float((accept & ~y).sum() / n_neg) if n_neg else 0.0
    frr = float((~accept & y).sum() / n_pos) if n_pos else 0.0
    return far, frr


def summarize(
    labels: np.ndarray, probs: np.ndarray, task: str, positive: int = 1, threshold: float = 0.5
) -> dict[str, float | None]:
    """The per-epoch validation metrics: accuracy, balanced accuracy, macro F1 (+ AUC, FAR/FRR/HTER for binary).

    `labels` are (N,) class indices or (N, C) multi-hot; `probs` are (N, C) probabilities (softmax for
    single-label, sigmoid for multi-label). Decisions follow `decide` at `threshold` (binary, multi-label).
    """
    if task == "multilabel":
        return multilabel_summary(labels, probs, threshold)
    num_classes = probs.shape[1]
    pred = decide(probs, task, positive, threshold if task == "binary" else None)
    if task == "binary":
        score = probs[:, positive]
        y_pos = labels == positive
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


def multilabel_summary(labels: np.ndarray, probs: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """Micro/macro F1, subset accuracy ("accuracy") and Hamming loss at per-label thresholds (`decide`'s multi-label
    rule), and mAP (the macro average precision, which no threshold changes)."""
    y = np.asarray(labels).astype(bool)
    pred = decide(probs, "multilabel", threshold=threshold)
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
        "map": ovr_auc(y, probs, "pr"),  # mean average precision over labels: threshold-free
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


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of items whose true class is among the k highest probabilities (ties resolved in its favour)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    true_p = p[np.arange(len(y)), y]
    return float(((p > true_p[:, None]).sum(axis=1) < k).mean())


def log_loss(labels: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> float:
    """Mean negative log-likelihood of the true class, -mean log p[i, y_i]; rows renormalised and clipped at
    machine epsilon like scikit-learn (multi-label: mean binary cross-entropy over every item and label)."""
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
    _, tp, fp = cumulative_counts(y, scores)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def ovr_auc(labels: np.ndarray, probs: np.ndarray, kind: str = "roc") -> float | None:
    """Macro one-vs-rest ROC AUC or average precision over classes that have both positives and negatives."""
    y = np.asarray(labels)
    fn = roc_auc if kind == "roc" else average_precision
    if y.ndim == 1:
        y = y[:, None] == np.arange(probs.shape[1])[None, :]
    values = [fn(y[:, c], probs[:, c]) for c in range(probs.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean(values)) if values else None

"""Calibration: reliability-diagram bins, expected calibration error, and temperature scaling.

Temperature scaling works on the stored probabilities (the run keeps no logits): log p is a logit up to a
per-row constant, which softmax ignores, so softmax(log(p) / T) is exactly temperature scaling of the
model's logits. For multi-label (sigmoid) outputs the logit is log(p / (1 - p)).

ECE = sum over bins b of n_b / N * |accuracy_b - confidence_b| (equal-width confidence bins). Arguments
are (labels, probs), as everywhere in `engine.metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from engine.metrics.core import check_scores

EPS = 1e-12


def top_label(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs: the top class for single-label; every (item, label) cell for multi-label."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    if y.ndim == 2:
        return p.ravel(), y.astype(bool).ravel().astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Equal-width confidence bins {lo, hi, confidence, accuracy, count} and ECE = sum_b n_b/N |acc_b - conf_b|."""
    conf, correct = top_label(labels, check_scores(probs, "probabilities"))
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, conf, minlength=n_bins)
    acc_sum = np.bincount(b, correct, minlength=n_bins)
    nz = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(n_bins), where=nz)
    mean_acc = np.divide(acc_sum, count, out=np.zeros(n_bins), where=nz)
    ece = float(np.sum(count * np.abs(mean_acc - mean_conf)) / max(1, count.sum()))
    edges = np.linspace(0, 1, n_bins + 1)
    bins = [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "confidence": float(mean_conf[i]),
            "accuracy": float(mean_acc[i]),
            "count": int(count[i]),
        }
        for i in range(n_bins)
    ]
    return {"bins": bins, "ece": ece}


def _logits(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p) if multilabel else np.log(p)


def apply_temperature(probs: np.ndarray, temperature: float, multilabel: bool = False) -> np.ndarray:
    """Probabilities after dividing the logits by `temperature`."""
    z = _logits(probs, multilabel) / temperature
    if multilabel:
        return 1 / (1 + np.exp(-z))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Negative log-likelihood of the labels (multi-hot labels: mean binary cross-entropy)."""
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels)
    if y.ndim == 2:
        return float(-np.where(y.astype(bool), np.log(p), np.log1p(-p)).mean())
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def fit_temperature(labels_val: np.ndarray, probs_val: np.ndarray) -> float:
    """Scalar T > 0 minimising validation NLL of softmax(log(p) / T), searched over log T in [1/20, 20]."""
    p = check_scores(probs_val, "probabilities")
    y = np.asarray(labels_val)
    multilabel = y.ndim == 2
    z = _logits(p, multilabel)

    def loss(log_t: float) -> float:
        zt = z / np.exp(log_t)
        if multilabel:
            yb = y.astype(bool)
            return float(np.mean(np.logaddexp(0, -zt) * yb + np.logaddexp(0, zt) * ~yb))
        zt = zt - zt.max(axis=1, keepdims=True)
        lse = np.log(np.exp(zt).sum(axis=1))
        return float(np.mean(lse - zt[np.arange(len(y)), y]))

    res = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))

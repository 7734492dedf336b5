"""Binary threshold sweeps: FAR/FRR/HTER over every distinct score, EER, min-HTER, F1-optimal, ROC/DET/PR.

One sort and two cumulative sums give the counts at every threshold at once, so the whole sweep is
O(n log n) with no Python loop over thresholds. Thresholds are the distinct scores (ties are never
split: a threshold between two equal scores does not exist), plus one value just above the highest
score where everything is rejected, so both ends of the FAR/FRR trade-off are on the curve. A threshold a
rule chooses (EER, min-HTER, F1) is put in the middle of the gap below its operating point's score
(`core.gap_midpoint`, as bob.measure does), so it never sits on a validation score.
Decisions are `score >= t`; FAR = false accepts / negatives; FRR = false rejects / positives;
HTER = (FAR + FRR) / 2; EER = (FAR + FRR) / 2 at the threshold minimising |FAR - FRR|. The counting
itself (`cumulative_counts`) and the decision rule live in `core`, which this module builds on.
Arguments are (labels, scores), as in scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from engine.metrics.core import MetricsError, check_scores, cumulative_counts, gap_midpoint


@dataclass
class Sweep:
    """FAR/FRR/HTER at every threshold (ascending), and the counts the curves are built from."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def hter(self) -> np.ndarray:
        """HTER = (FAR + FRR) / 2 at each threshold."""
        return (self.far + self.frr) / 2

    def threshold_at(self, i: int) -> float:
        """The threshold that puts operating point i in force: the middle of the gap below `thresholds[i]`
        (`engine.metrics.core.gap_midpoint`), never on a score."""
        return gap_midpoint(self.thresholds, i)

    def eer(self) -> tuple[float, float]:
        """(EER, threshold): at the operating point minimising |FAR - FRR|, EER = (FAR + FRR) / 2 (the lowest
        such point); the threshold is the middle of the gap below it."""
        i = int(np.argmin(np.abs(self.far - self.frr)))
        return float((self.far[i] + self.frr[i]) / 2), self.threshold_at(i)

    def min_hter(self) -> tuple[float, float]:
        """(lowest HTER, its threshold, in the middle of its gap); the lowest operating point wins a tie."""
        h = self.hter
        i = int(np.argmin(h))
        return float(h[i]), self.threshold_at(i)

    def f1_optimal(self) -> tuple[float, float]:
        """(best F1 of the positive class, its threshold, in the middle of its gap); F1 = 2TP / (TP + FP + P)."""
        f1 = 2 * self.tp / (self.tp + self.fp + self.n_pos)
        i = int(np.argmax(f1))
        return float(f1[i]), self.threshold_at(i)

    def frr_at_far(self, target: float) -> tuple[float, float]:
        """Lowest FRR with FAR <= target, and its threshold (reject-all always qualifies)."""
        ok = np.flatnonzero(self.far <= target + 1e-12)
        i = int(ok[0])  # FRR is non-decreasing in t, so the lowest qualifying threshold is best
        return float(self.frr[i]), self.threshold_at(i)

    def far_at_frr(self, target: float) -> tuple[float, float]:
        """Lowest FAR with FRR <= target, and its threshold (accept-all always qualifies)."""
        ok = np.flatnonzero(self.frr <= target + 1e-12)
        i = int(ok[-1])  # FAR is non-increasing in t, so the highest qualifying threshold is best
        return float(self.far[i]), self.threshold_at(i)


def sweep(y_pos: np.ndarray, scores: np.ndarray) -> Sweep:
    """The full sweep; a clear error unless both classes are present (FAR or FRR would be 0/0)."""
    check_scores(scores)
    y = np.asarray(y_pos).astype(bool)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise MetricsError(
            f"FAR/FRR curves need both classes, but only {'negatives' if n_pos == 0 else 'positives'} are present."
        )
    thr_desc, tp_desc, fp_desc = cumulative_counts(y, scores)
    above = np.nextafter(thr_desc[0], np.inf)  # just above the top score: reject everything
    thresholds = np.r_[thr_desc[::-1], above]
    tp = np.r_[tp_desc[::-1], 0]
    fp = np.r_[fp_desc[::-1], 0]
    return Sweep(thresholds, fp / n_neg, (n_pos - tp) / n_pos, tp, fp, n_pos, n_neg)


def probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate for DET axes; 0 and 1 map to +-inf, so they are clipped to +-8.5 sigma (finite for JSON)."""
    return np.clip(ndtri(np.asarray(p, np.float64)), -8.5, 8.5)


def curves(y_pos: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """All chart arrays from one sweep, ascending threshold: FAR/FRR/HTER, ROC (tpr/fpr), PR, DET (probit)."""
    sw = sweep(y_pos, scores)
    predicted = sw.tp + sw.fp
    precision = np.divide(sw.tp, predicted, out=np.ones(len(predicted)), where=predicted > 0)
    return {
        "thresholds": sw.thresholds,
        "far": sw.far,
        "frr": sw.frr,
        "hter": sw.hter,
        "fpr": sw.far,
        "tpr": 1 - sw.frr,
        "precision": precision,
        "recall": sw.tp / sw.n_pos,
        "det_x": probit(sw.far),
        "det_y": probit(sw.frr),
    }


def binary_report(y_pos: np.ndarray, scores: np.ndarray, targets: tuple[float, ...] = (0.01, 0.001)) -> dict:
    """Threshold-free figures of one split: EER, min-HTER, F1-optimal and the operating points."""
    sw = sweep(y_pos, scores)
    eer, eer_t = sw.eer()
    mh, mh_t = sw.min_hter()
    f1, f1_t = sw.f1_optimal()
    return {
        "eer": eer,
        "eer_threshold": eer_t,
        "min_hter": mh,
        "min_hter_threshold": mh_t,
        "best_f1": f1,
        "f1_threshold": f1_t,
        "frr_at_far": {str(x): sw.frr_at_far(x)[0] for x in targets},
        "far_at_frr": {str(x): sw.far_at_frr(x)[0] for x in targets},
    }


def choose_threshold(y_pos: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """The threshold a rule picks on (validation) scores: 'min_hter', 'eer' or 'f1'."""
    sw = sweep(y_pos, scores)
    rules = {"min_hter": sw.min_hter, "eer": sw.eer, "f1": sw.f1_optimal}
    if rule not in rules:
        raise MetricsError(f"Unknown threshold rule '{rule}'; use one of {', '.join(rules)}.")
    return rules[rule]()[1]

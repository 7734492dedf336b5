"""Tuned thresholds sit in the middle of the gap below their operating point, as bob.measure puts them
(issue 14, item 16): binary EER / min-HTER / F1 and per-label F1 thresholds, one home
(`engine.metrics.core.gap_midpoint`).

bob.measure cannot be a test dependency (its pins would downgrade numpy and Pillow), so parity is checked
against a re-implementation of its documented threshold search (`bob.measure._library._minimizing_threshold`:
walk the sorted negatives and positives from the lowest score, evaluate the criterion at each distinct
score, put each threshold half-way to the next higher score), on score files built here with hand-checked
plateaus; the library test runs where bob.measure is installed. Checked once by hand with bob.measure 6.1.1
in a separate environment: identical EER and min-HTER thresholds (and EER values) on 400 random rounded
score sets and on pyeer's three example experiments. pyeer (installed) pins the curves:
tests/test_metrics_pyeer.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import choose_threshold, f1_thresholds, sweep


def bob_threshold(negatives: np.ndarray, positives: np.ndarray, criterion: str) -> float:
    """bob.measure's `_minimizing_threshold` as documented: 'eer' minimises |FAR - FRR|, 'min_hter'
    (bob's weighted error at cost 0.5) minimises (FAR + FRR) / 2; a later threshold wins a tie (`<=`)."""
    neg, pos = np.sort(negatives), np.sort(positives)

    def crit(far: float, frr: float) -> float:
        return abs(far - frr) if criterion == "eer" else 0.5 * far + 0.5 * frr

    far, frr, best, best_t = 1.0, 0.0, np.inf, np.inf
    i = j = 0
    t = min(neg[0], pos[0])
    while i < len(neg) and j < len(pos):
        if crit(far, frr) <= best:
            best, best_t = crit(far, frr), t
        if pos[j] >= neg[i]:
            t = neg[i]
            i, far = i + 1, far - 1 / len(neg)
        else:
            t = pos[j]
            j, frr = j + 1, frr + 1 / len(pos)
        while i < len(neg) and neg[i] == t:
            i, far = i + 1, far - 1 / len(neg)
        while j < len(pos) and pos[j] == t:
            j, frr = j + 1, frr + 1 / len(pos)
        if i < len(neg) or j < len(pos):
            following = min(neg[i] if i < len(neg) else np.inf, pos[j] if j < len(pos) else np.inf)
            t = (t + following) / 2
    if crit(far, frr) < best:
        best, best_t = crit(far, frr), t
    if (i < len(neg) or j < len(pos)) and crit(0.0, 1.0) < best:
        top = neg[-1] if i < len(neg) else pos[-1]
        best_t = np.nextafter(top, top + 1)
    return float(best_t)


def loupe(negatives: np.ndarray, positives: np.ndarray, rule: str) -> float:
    y = np.r_[np.zeros(len(negatives), bool), np.ones(len(positives), bool)]
    return choose_threshold(y, np.r_[negatives, positives], rule)


def test_a_hand_checked_plateau_puts_each_threshold_in_the_middle_of_its_gap():
    # negatives 0.10 0.20 0.30 0.60, positives 0.40 0.70 0.80 0.90 (sorted: n n n p n p p p)
    neg, pos = np.array([0.1, 0.2, 0.3, 0.6]), np.array([0.4, 0.7, 0.8, 0.9])
    # min HTER 1/8 on the plateau (0.30, 0.40]: FAR 1/4, FRR 0 -> threshold 0.35, not the score 0.40
    assert loupe(neg, pos, "min_hter") == pytest.approx(0.35) == bob_threshold(neg, pos, "min_hter")
    # EER: |FAR - FRR| = 0 only on (0.40, 0.60] (FAR 1/4, FRR 1/4) -> 0.50, not the score 0.60
    assert loupe(neg, pos, "eer") == pytest.approx(0.5) == bob_threshold(neg, pos, "eer")
    # best F1 (6/7) on the min-HTER plateau too
    assert loupe(neg, pos, "f1") == pytest.approx(0.35)
    # the operating point is unchanged: the same counts as at the score bounding the gap from above
    sw = sweep(np.r_[np.zeros(4, bool), np.ones(4, bool)], np.r_[neg, pos])
    assert sw.min_hter()[0] == pytest.approx(0.125) and sw.eer()[0] == pytest.approx(0.25)


def test_separable_scores_get_the_middle_of_the_margin_and_ties_are_never_split():
    neg, pos = np.array([0.05, 0.2, 0.2, 0.45]), np.array([0.55, 0.55, 0.8])
    assert loupe(neg, pos, "min_hter") == pytest.approx(0.5) == bob_threshold(neg, pos, "min_hter")
    # a tie across the classes (a negative and a positive at 0.3) cannot be split: the best plateau is
    # (0.3, 0.6] (FAR 0, FRR 1/4), so the threshold is 0.45, above the whole tie
    neg, pos = np.array([0.1, 0.3]), np.array([0.3, 0.6, 0.7, 0.8])
    assert loupe(neg, pos, "min_hter") == pytest.approx(0.45) == bob_threshold(neg, pos, "min_hter")


@pytest.mark.parametrize("seed", range(20))
def test_parity_with_bob_measures_search_on_overlapping_score_files(seed):
    rng = np.random.default_rng(seed)
    # 53 negatives and 37 positives (coprime counts: no two operating points share an HTER, so the optimum is unique)
    neg = np.round(rng.normal(0.35, 0.15, 53), 3)  # rounded: ties inside and across the classes
    pos = np.round(rng.normal(0.6, 0.15, 37), 3)
    compared: list[str] = []
    for rule in ("min_hter", "eer"):
        y = np.r_[np.zeros(53, bool), np.ones(37, bool)]
        sw = sweep(y, np.r_[neg, pos])
        value = np.abs(sw.far - sw.frr) if rule == "eer" else sw.hter
        if np.sum(np.isclose(value, value.min(), atol=1e-12)) > 1:
            continue  # two optimal points: bob keeps the higher, Loupe the lower (documented), both correct
        compared.append(rule)
        assert loupe(neg, pos, rule) == pytest.approx(bob_threshold(neg, pos, rule), abs=1e-12), rule
    assert "min_hter" in compared  # coprime counts: min-HTER's optimum is always unique


def test_bob_measure_itself_when_it_is_installed():
    bob = pytest.importorskip("bob.measure", reason="bob.measure is not installed (a test-only dependency)")
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0.35, 0.15, 53), rng.normal(0.6, 0.15, 37)
    assert loupe(neg, pos, "eer") == pytest.approx(bob.eer_threshold(neg, pos))
    assert loupe(neg, pos, "min_hter") == pytest.approx(bob.min_hter_threshold(neg, pos))


def test_per_label_f1_thresholds_sit_in_the_gap_below_the_optimal_score():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], bool)
    p = np.array([[0.9, 0.2], [0.7, 0.8], [0.4, 0.6], [0.3, 0.1], [0.6, 0.3]])
    t = f1_thresholds(y, p)
    # label 0: positives 0.9 0.7 0.6, negatives 0.4 0.3 -> F1 1 on (0.4, 0.6]; label 1: positives 0.8 0.6,
    # negatives 0.3 0.2 0.1 -> F1 1 on (0.3, 0.6]
    assert t.tolist() == pytest.approx([0.5, 0.45])
    assert not np.isin(t, p).any()


def test_gap_midpoint_keeps_the_ends_of_a_sweep():
    from engine.metrics import gap_midpoint

    a = np.array([0.2, 0.4, np.nextafter(0.4, 1)])
    assert gap_midpoint(a, 0) == 0.2  # accept everything: the lowest score
    assert gap_midpoint(a, 1) == pytest.approx(0.3)
    assert gap_midpoint(a, 2) == np.nextafter(0.4, 1)  # reject everything: just above the top score

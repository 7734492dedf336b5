"""Parity with pyeer (a biometrics evaluation library, test-only dependency) on its own example score files.

pyeer ships three experiments of genuine (positive) and impostor (negative) similarity scores. On each,
Loupe's sweep must give the same FAR (pyeer's FMR) and FRR (FNMR) at every threshold pyeer evaluates
(decisions `score >= t` in both), and the same ROC AUC. The EER is *defined* differently: pyeer reports the
FVC2000 interval midpoint, Loupe (like bob.measure) (FAR + FRR) / 2 at the operating point minimising
|FAR - FRR|; the test pins that Loupe's point is that minimiser on pyeer's own curve and that both EERs lie
within one operating-point step of each other. Threshold placement (the middle of the gap, bob.measure's
rule) is pinned in tests/test_thresholds_gap.py; pyeer puts thresholds on scores, so it is not compared.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from engine.metrics.binary import sweep

pyeer_stats = pytest.importorskip("pyeer.eer_stats")  # eer_stats alone: pyeer.eer_info needs pkg_resources
EXPERIMENTS = ("exp1", "exp2", "exp3")


def scores(experiment: str) -> tuple[np.ndarray, np.ndarray]:
    folder = importlib.resources.files("pyeer") / "example_files" / "non_hist"
    return np.loadtxt(folder / f"{experiment}_true.txt"), np.loadtxt(folder / f"{experiment}_false.txt")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_far_and_frr_equal_pyeers_at_every_threshold(experiment):
    genuine, impostor = scores(experiment)
    thresholds, fmr, fnmr = pyeer_stats.calculate_roc(genuine, impostor)
    sw = sweep(np.r_[np.ones(len(genuine)), np.zeros(len(impostor))], np.r_[genuine, impostor])
    at = np.searchsorted(sw.thresholds, thresholds)
    assert np.array_equal(sw.thresholds[at], thresholds)  # the same operating points (distinct scores)
    np.testing.assert_allclose(sw.far[at], fmr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sw.frr[at], fnmr, rtol=0, atol=1e-12)
    assert len(sw.thresholds) == len(thresholds) + 1  # plus Loupe's reject-everything point above the top score


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_eer_is_the_crossing_of_pyeers_curves(experiment):
    genuine, impostor = scores(experiment)
    _, fmr, fnmr = pyeer_stats.calculate_roc(genuine, impostor)
    sw = sweep(np.r_[np.ones(len(genuine)), np.zeros(len(impostor))], np.r_[genuine, impostor])
    eer, _ = sw.eer()
    i = int(np.argmin(np.abs(fmr - fnmr)))  # Loupe's definition, computed on pyeer's curve
    assert eer == pytest.approx((fmr[i] + fnmr[i]) / 2, abs=1e-12)
    _, low, high, pyeer_eer = pyeer_stats.get_eer_values(fmr, fnmr)
    step = 1 / len(genuine) + 1 / len(impostor)  # FAR + FRR can move by at most this between neighbours
    assert abs(eer - pyeer_eer) <= (high - low) / 2 + step

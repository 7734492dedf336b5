"""engine.metrics against scikit-learn and direct counts, plus properties of the binary sweep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from engine import metrics as M


def _multiclass(seed: int, n: int = 600, c: int = 5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[rng.integers(0, c, n)]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.where(rng.random(n) < 0.7, probs.argmax(1), rng.integers(0, c, n))
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_label_metrics_match_sklearn(seed):
    probs, y = _multiclass(seed)
    pred = probs.argmax(1)
    cm = M.confusion_matrix(y, pred, 5)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y, pred, labels=range(5)))
    np.testing.assert_allclose(
        M.normalise_cm(cm), sk.confusion_matrix(y, pred, labels=range(5), normalize="true"), atol=1e-12
    )
    assert M.balanced_accuracy(cm) == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-9)
    f1 = M.f1_averages(cm)
    for avg in ("macro", "micro", "weighted"):
        assert f1[f"{avg}_f1"] == pytest.approx(sk.f1_score(y, pred, average=avg), abs=1e-9)
    pc = M.per_class(cm)
    p, r, f, s = sk.precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose(pc["precision"], p, atol=1e-9)
    np.testing.assert_allclose(pc["recall"], r, atol=1e-9)
    np.testing.assert_allclose(pc["f1"], f, atol=1e-9)
    np.testing.assert_array_equal(pc["support"], s)
    assert M.ovr_auc(y, probs, "roc") == pytest.approx(sk.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-9)
    ap = sk.average_precision_score(np.eye(5)[y], probs, average="macro")
    assert M.ovr_auc(y, probs, "pr") == pytest.approx(ap, abs=1e-9)
    assert M.log_loss(y, probs) == pytest.approx(sk.log_loss(y, probs), abs=1e-9)
    for k in (1, 3):
        assert M.top_k_accuracy(y, probs, k) == pytest.approx(sk.top_k_accuracy_score(y, probs, k=k), abs=1e-9)


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_binary_metrics_match_sklearn_and_direct_counts(decimals):
    rng = np.random.default_rng(3)
    y = rng.random(2000) < 0.3
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    if decimals is not None:  # heavy ties
        s = np.round(s, decimals)
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
    assert M.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-9)
    sw = M.sweep(y, s)
    for i in rng.integers(0, len(sw.thresholds), 25):
        t = sw.thresholds[i]
        assert sw.far[i] == pytest.approx(((s >= t) & ~y).sum() / (~y).sum(), abs=1e-12)
        assert sw.frr[i] == pytest.approx(((s < t) & y).sum() / y.sum(), abs=1e-12)
        assert M.far_frr(y, s, t) == pytest.approx((sw.far[i], sw.frr[i]), abs=1e-12)
    # DET: every sklearn point is ours at the same threshold
    fpr, fnr, thr = sk.det_curve(y, s, drop_intermediate=False)
    c = M.curves(y, s)
    thr = np.where(np.isinf(thr), c["thresholds"][-1], thr)  # sklearn's reject-all point is our top threshold
    at = np.searchsorted(c["thresholds"], thr)
    np.testing.assert_array_equal(c["thresholds"][at], thr)
    np.testing.assert_allclose(c["far"][at], fpr, atol=1e-12)
    np.testing.assert_allclose(c["frr"][at], fnr, atol=1e-12)
    from scipy.special import ndtri

    ok = (fpr > 0) & (fpr < 1)
    np.testing.assert_allclose(c["det_x"][at][ok], ndtri(fpr[ok]), atol=1e-12)
    # ROC and PR points agree too
    fpr2, tpr2, thr2 = sk.roc_curve(y, s, drop_intermediate=False)
    at2 = np.searchsorted(c["thresholds"], thr2[1:])
    np.testing.assert_allclose(c["tpr"][at2], tpr2[1:], atol=1e-12)
    prec, rec, thr3 = sk.precision_recall_curve(y, s)
    at3 = np.searchsorted(c["thresholds"], thr3)
    np.testing.assert_allclose(c["precision"][at3], prec[:-1], atol=1e-12)


def test_hter_divides_by_class_counts_not_batch_size():
    """88 negatives / 12 positives: the wrong (batch-size) HTER and the right one differ; we give the right one."""
    y = np.r_[np.zeros(88, bool), np.ones(12, bool)]
    s = np.r_[np.full(80, 0.1), np.full(8, 0.9), np.full(9, 0.9), np.full(3, 0.1)]  # 8 false accepts, 3 false rejects
    far, frr = M.far_frr(y, s, 0.5)
    assert far == pytest.approx(8 / 88) and frr == pytest.approx(3 / 12)
    right = (8 / 88 + 3 / 12) / 2
    wrong = (8 / 100 + 3 / 100) / 2
    assert abs(right - wrong) > 0.1
    assert M.summarize(y.astype(int), np.c_[1 - s, s], "binary", threshold=0.5)["hter"] == pytest.approx(right)
    sw = M.sweep(y, s)
    assert sw.hter[np.searchsorted(sw.thresholds, 0.9)] == pytest.approx(right)


def test_eer_min_hter_operating_points_on_a_small_case():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    rep = M.binary_report(y, s)
    # t=0.4: FAR 1/4, FRR 0; t=0.6: FAR 1/4, FRR 1/4 (|FAR-FRR| = 0); t=0.7: FAR 0, FRR 1/4; each threshold
    # is put in the middle of the gap below its operating point's score (0.6 -> 0.5, 0.4 -> 0.35)
    assert (rep["eer"], rep["eer_threshold"]) == (pytest.approx(0.25), pytest.approx(0.5))
    assert (rep["min_hter"], rep["min_hter_threshold"]) == (pytest.approx(0.125), pytest.approx(0.35))
    assert rep["frr_at_far"]["0.01"] == pytest.approx(0.25)  # FAR 0 reachable at t=0.7, losing one positive
    assert M.choose_threshold(y, s, "f1") == pytest.approx(0.35)
    with pytest.raises(M.MetricsError):
        M.choose_threshold(y, s, "bogus")


scores = st.lists(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]) | st.floats(0, 1), min_size=2, max_size=60
)


@settings(max_examples=50, deadline=None)
@given(scores, st.data())
def test_sweep_properties(s, data):
    s = np.array(s)
    y = np.array(data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s))))
    if y.all() or not y.any():
        with pytest.raises(M.MetricsError):
            M.sweep(y, s)
        return
    sw = M.sweep(y, s)
    h = sw.hter
    assert np.isfinite(h).all() and (h >= 0).all() and (h <= 1).all()
    assert (np.diff(sw.thresholds) > 0).all()  # distinct thresholds only, ascending
    assert (np.diff(sw.far) <= 0).all() and (np.diff(sw.frr) >= 0).all()
    eer, _ = sw.eer()
    assert h.min() - 1e-12 <= eer <= h.max() + 1e-12
    perm = np.random.default_rng(len(s)).permutation(len(s))
    sw2 = M.sweep(y[perm], s[perm])
    np.testing.assert_array_equal(sw.thresholds, sw2.thresholds)
    np.testing.assert_array_equal(sw.far, sw2.far)
    assert M.binary_report(y, s) == M.binary_report(y[perm], s[perm])
    c = M.curves(y, s)
    assert all(np.isfinite(v).all() for v in c.values())


def test_degenerate_inputs_are_defined_or_clear_errors():
    y = np.array([0, 1, 0, 1], bool)
    const = np.full(4, 0.5)
    sw = M.sweep(y, const)  # all ties: accept all, or reject all (nothing in between)
    assert len(sw.thresholds) == 2 and sw.eer()[0] == 0.5 and sw.min_hter()[0] == 0.5
    assert M.roc_auc(y, const) == 0.5
    assert M.roc_auc(np.ones(4, bool), const) is None
    with pytest.raises(M.MetricsError, match="both classes"):
        M.sweep(np.ones(3, bool), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(M.MetricsError, match="NaN"):
        M.sweep(y, np.array([0.1, np.nan, 0.3, 0.4]))
    with pytest.raises(M.MetricsError, match="empty"):
        M.sweep(np.array([], bool), np.array([]))
    tiny = M.sweep(np.array([False, True]), np.array([0.3, 0.7]))
    assert tiny.min_hter() == (0.0, 0.5)  # the middle of the gap between 0.3 and 0.7
    ml = M.f1_thresholds(np.array([[0, 1], [0, 0]]), np.array([[0.2, 0.9], [0.8, 0.1]]))
    assert ml.tolist() == [0.5, 0.5]  # a label with no positives keeps the default; 0.5 is between 0.1 and 0.9


def test_multilabel_report_matches_sklearn():
    rng = np.random.default_rng(5)
    y = rng.random((300, 4)) < [0.5, 0.2, 0.1, 0.4]
    p = np.clip(0.35 * y + rng.random((300, 4)) * 0.65, 0, 1)
    t = M.f1_thresholds(y, p)
    pred = p >= t
    rep = M.multilabel_report(y, p, t)
    for avg in ("micro", "macro", "samples"):
        assert rep[f"{avg}_f1"] == pytest.approx(sk.f1_score(y, pred, average=avg, zero_division=0), abs=1e-9)
    assert rep["hamming_loss"] == pytest.approx(sk.hamming_loss(y, pred))
    assert rep["subset_accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    for c in range(4):  # each threshold is the F1 optimum over that label's distinct scores
        best = max(sk.f1_score(y[:, c], p[:, c] >= u) for u in np.unique(p[:, c]))
        assert rep["f1"][c] == pytest.approx(best, abs=1e-12)


def test_calibration_and_temperature():
    probs, _ = _multiclass(7, n=3000)
    rng = np.random.default_rng(8)
    y = (rng.random((len(probs), 1)) > probs.cumsum(1)).sum(1)  # labels drawn from probs: calibrated by construction
    sharp = M.apply_temperature(probs, 0.3)  # over-confident
    t = M.fit_temperature(y, sharp)
    assert 2.5 < t < 4.2  # undoes the sharpening (logits x 1/0.3)
    after = M.apply_temperature(sharp, t)
    assert M.nll(y, after) < M.nll(y, sharp)
    rel_before, rel_after = M.reliability(y, sharp), M.reliability(y, after)
    assert rel_after["ece"] < rel_before["ece"]
    assert sum(b["count"] for b in rel_before["bins"]) == len(y)


def test_bootstrap_intervals_cover_the_point_estimate_and_are_seeded():
    probs, y = _multiclass(9, n=800, c=2)
    cm = M.confusion_matrix(y, probs.argmax(1), 2)
    ci = M.confusion_bootstrap(cm, 1000, seed=1, binary_positive=1)
    again = M.confusion_bootstrap(cm, 1000, seed=1, binary_positive=1)
    assert ci == again
    sw_far, sw_frr = cm[0, 1] / cm[0].sum(), cm[1, 0] / cm[1].sum()
    assert ci["hter"][0] <= (sw_far + sw_frr) / 2 <= ci["hter"][1]
    assert ci["balanced_accuracy"][0] <= M.balanced_accuracy(cm) <= ci["balanced_accuracy"][1]
    assert 0 < ci["macro_f1"][1] - ci["macro_f1"][0] < 0.15


# --- the decision rule and the argument order -------------------------------------------------------


def test_decide_binary_accepts_a_score_of_exactly_t_and_argmax_without_a_threshold():
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_array_equal(M.decide(probs, "binary", positive=1, threshold=0.4), [0, 1, 1, 1])  # 0.4 >= 0.4
    np.testing.assert_array_equal(M.decide(probs, "binary", positive=1, threshold=0.41), [0, 0, 1, 1])
    # positive class 0: its score is column 0, and rejecting means class 1
    np.testing.assert_array_equal(M.decide(probs, "binary", positive=0, threshold=0.6), [0, 0, 1, 1])
    np.testing.assert_array_equal(M.decide(probs, "binary", positive=0, threshold=0.61), [0, 1, 1, 1])
    # no threshold: argmax, the first class winning the 0.5/0.5 tie (as the attacks and argmax did before)
    np.testing.assert_array_equal(M.decide(probs, "binary", positive=1), [0, 0, 0, 1])
    # one item (C,) as the Predictor decides it: a scalar decision, the same rule
    assert int(M.decide(probs[1], "binary", positive=1, threshold=0.4)) == 1
    assert int(M.decide(probs[1], "binary", positive=0, threshold=0.61)) == 1


def test_decide_multiclass_is_argmax_and_multilabel_is_per_label():
    probs = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(M.decide(probs, "multiclass"), [1, 0, 2])
    ml = np.array([[0.2, 0.5, 0.9], [0.6, 0.1, 0.3]])
    out = M.decide(ml, "multilabel")  # default 0.5 for every label, 0.5 itself counts as on
    assert out.dtype == bool and out.shape == ml.shape
    np.testing.assert_array_equal(out, [[False, True, True], [True, False, False]])
    per_label = M.decide(ml, "multilabel", threshold=np.array([0.2, 0.6, 0.3]))
    np.testing.assert_array_equal(per_label, [[True, False, True], [True, False, True]])
    np.testing.assert_array_equal(M.decide(ml[0], "multilabel", threshold=[0.2, 0.6, 0.3]), [True, False, True])


def test_summaries_decide_with_the_same_rule():
    """summarize and multilabel_summary/report count exactly the decisions `decide` makes."""
    rng = np.random.default_rng(11)
    s = np.round(rng.random(300), 1)  # many scores exactly on the threshold
    y = (rng.random(300) < 0.4).astype(int)
    for positive in (0, 1):
        probs = np.c_[1 - s, s] if positive == 1 else np.c_[s, 1 - s]
        pred = M.decide(probs, "binary", positive, 0.5)
        acc = float((pred == y).mean())
        assert M.summarize(y, probs, "binary", positive=positive, threshold=0.5)["accuracy"] == pytest.approx(acc)
    ml_y = rng.random((200, 3)) < 0.5
    ml_p = np.round(rng.random((200, 3)), 1)
    t = np.array([0.3, 0.5, 0.7])
    pred = M.decide(ml_p, "multilabel", threshold=t)
    assert M.multilabel_summary(ml_y, ml_p, t)["hamming_loss"] == pytest.approx(float((pred != ml_y).mean()))
    assert M.multilabel_report(ml_y, ml_p, t)["subset_accuracy"] == pytest.approx(float((pred == ml_y).all(1).mean()))


def test_labels_come_first_everywhere():
    """Every metric taking labels and scores/probabilities names them `labels`/`probs` (or `y...`/`scores`), labels first."""
    import inspect

    for name in M.__all__:
        fn = getattr(M, name)
        if not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters)
        label_pos = [i for i, p in enumerate(params) if p in ("labels", "labels_val", "y", "y_pos", "y_true")]
        score_pos = [i for i, p in enumerate(params) if p in ("probs", "probs_val", "scores", "pred")]
        if label_pos and score_pos:
            assert label_pos[0] < score_pos[0], f"{name}{inspect.signature(fn)} takes scores before labels"


def test_core_builds_on_nothing_else_in_metrics():
    """core is the base of the metrics package: it never imports binary (or any sibling), not even in a function."""
    import ast
    import pathlib

    import engine.metrics.core as core

    tree = ast.parse(pathlib.Path(core.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("engine.metrics")}, imported

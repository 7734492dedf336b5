"""Numbers at the threshold in force, counted by hand: `engine.evaluate.report_at` (what the Evaluate page's
cards show when the slider moves) and the CLI's text report, written in the one format per metric of
`engine.metrics.display` (HTER is "10.59%" everywhere, never "0.1059" in one place and "10.59%" in another)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import evaluate as E
from engine.cli.evaluate import format_text
from engine.metrics import display
from tests.test_evaluate import binary_split, make_run, multiclass_split


def by_hand(labels: np.ndarray, score: np.ndarray, t: float) -> dict:
    """FAR, FRR, HTER, accuracy, balanced accuracy and macro F1 at `t`, counted item by item."""
    accept = score >= t
    pos, neg = labels == 1, labels == 0
    fa, fr = int((accept & neg).sum()), int((~accept & pos).sum())
    ta, tr = int((accept & pos).sum()), int((~accept & neg).sum())
    far, frr = fa / neg.sum(), fr / pos.sum()
    f1_pos = 2 * ta / (2 * ta + fa + fr)
    f1_neg = 2 * tr / (2 * tr + fr + fa)
    return {
        "far": far,
        "frr": frr,
        "hter": (far + frr) / 2,
        "accuracy": (ta + tr) / len(labels),
        "balanced_accuracy": 1 - (far + frr) / 2,
        "macro_f1": (f1_pos + f1_neg) / 2,
    }


@pytest.mark.parametrize("t", [0.05, 0.3, 0.5, 0.8123])
def test_report_at_counts_every_threshold_dependent_metric_at_the_given_threshold(tmp_path, t):
    run = make_run(tmp_path, "binary", ["reject", "accept"], {"val": binary_split(1), "test": binary_split(2)})
    pred = E.load_predictions(run, "test")
    got = E.report_at(pred, {"binary": t}, bootstrap=200)
    want = by_hand(pred.labels, pred.probs[:, 1], t)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["threshold"] == t
    lo, hi = got["ci"]["hter"]
    assert lo <= got["hter"] <= hi  # the interval is the one of these decisions
    # the full report at the same threshold agrees to the last digit
    full = E.evaluate_run(run, thresholds={"binary": t}, bootstrap=200)
    assert {k: full[k] for k in want} == {k: got[k] for k in want} and full["ci"] == got["ci"]


def test_cli_text_report_writes_each_metric_as_the_app_does(tmp_path):
    run = make_run(tmp_path, "binary", ["reject", "accept"], {"val": binary_split(1), "test": binary_split(2)})
    res = E.evaluate_run(run, bootstrap=100)
    text = format_text(res, E.top_losses(E.load_predictions(run, "test"), n=3), [])
    line = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ") and ln.split()}
    for key in ("hter", "far", "frr", "accuracy", "balanced_accuracy", "eer"):
        assert f" {display.format_metric(key, res[key])}" in line[key], line[key]
        assert line[key].split()[1].endswith("%")
    for key in ("roc_auc", "log_loss", "threshold"):
        assert line[key].split()[1] == display.format_metric(key, res[key])
    assert f"(95% CI {display.interval('hter', res['ci']['hter'])})" in line["hter"]
    assert "nan" not in text.lower() and "None" not in text


def test_cli_text_report_for_multiclass_per_class_rows_in_percent(tmp_path):
    run = make_run(
        tmp_path, "multiclass", [f"c{i}" for i in range(6)], {"val": multiclass_split(1), "test": multiclass_split(2)}
    )
    res = E.evaluate_run(run, bootstrap=0)
    text = format_text(res, [], [])
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("c0 "))
    pc = res["per_class"][0]
    assert row.split()[1:4] == [
        display.percent(pc["precision"]),
        display.percent(pc["recall"]),
        display.percent(pc["f1"]),
    ]
    assert f"top-3 accuracy       {display.percent(res['top_k']['3'])}" in text


def test_interval_is_written_in_the_metric_unit_once():
    assert display.interval("hter", [0.1897, 0.2712]) == "18.97–27.12%"
    assert display.interval("roc_auc", (0.81, 0.9)) == "0.8100–0.9000"
    assert display.interval("hter", None) == display.MISSING
    assert display.interval("hter", [0.1, float("nan")]) == display.MISSING

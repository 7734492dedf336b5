"""One format per metric (engine/metrics/display.py): the pages and the CLI write each metric the same way."""

import math

from engine.metrics.display import format_delta, format_metric, label, percent


def test_rates_are_percentages_with_two_decimals_whatever_the_split_prefix():
    assert format_metric("hter", 0.10594) == "10.59%"
    assert format_metric("val_hter", 0.10594) == "10.59%"
    assert format_metric("balanced_accuracy_mean", 0.9) == "90.00%"
    assert format_metric("macro_f1", 0.8163) == "81.63%"


def test_scores_and_thresholds_are_plain_numbers_with_four_decimals():
    assert format_metric("roc_auc", 0.97312) == "0.9731"
    assert format_metric("log_loss", 0.28413) == "0.2841"
    assert format_metric("threshold", 0.58941) == "0.5894"


def test_missing_and_non_finite_values_read_na_never_none_or_nan():
    for v in (None, math.nan, math.inf, "x"):
        assert format_metric("hter", v) == "n/a"
        assert format_metric("log_loss", v) == "n/a"
    assert percent(None) == "n/a"


def test_deltas_are_in_the_metric_unit():
    assert format_delta("accuracy", 0.012) == "+1.20 pp"
    assert format_delta("log_loss", -0.0213) == "-0.0213"
    assert format_delta("hter", None) == "n/a"


def test_labels_for_people():
    assert label("val_hter") == "val HTER"
    assert label("balanced_accuracy") == "balanced accuracy"

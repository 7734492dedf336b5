"""engine.evaluate (predictions, thresholds, report) on hand-built run folders: protocol, thresholds,
calibration, item lists and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import evaluate as E
from engine import metrics as M
from engine.runs.folder import Run, atomic_write_json, write_npz

ROOT = Path(__file__).resolve().parents[1]


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def make_run(root: Path, task: str, classes: list[str], splits: dict[str, tuple], positive: int = 1) -> Run:
    """A completed run folder with only what evaluation reads: config, classes and predictions."""
    path = root / f"run-{task}"
    atomic_write_json(path / "config.json", {"task": task, "config": {"positive_class": positive, "task": "auto"}})
    atomic_write_json(path / "classes.json", classes)
    for split, (labels, probs) in splits.items():
        n = len(labels)
        write_npz(
            path / "predictions" / f"{split}.npz",
            ids=np.array([f"{split}/{i}.png" for i in range(n)]),
            indices=np.arange(n),
            labels=labels,
            probs=probs,
        )
    return Run(path)


def binary_split(seed: int, n: int = 400, pos_rate: float = 0.12):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(np.int64)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.2 * y - 1.5)))
    return y, np.c_[1 - score, score]


def multiclass_split(seed: int, n: int = 500, c: int = 6, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return y, _softmax(scale * (rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y]))


def test_binary_tuned_on_val_reported_on_test_and_thresholds_round_trip(tmp_path):
    run = make_run(tmp_path, "binary", ["reject", "accept"], {"val": binary_split(1), "test": binary_split(2)})
    assert E.splits_available(run) == ["val", "test"]
    res = E.evaluate_run(run, rule="min_hter", bootstrap=200)
    json.dumps(res, allow_nan=False)
    assert (res["tuned_on"], res["reported_on"], res["optimistic"]) == ("val", "test", False)
    val = E.load_predictions(run, "val")
    expected_t = M.curves(val.labels == 1, val.probs[:, 1])
    # the middle of the gap below the min-HTER operating point's score (bob.measure's placement)
    best = int(np.argmin(expected_t["hter"]))
    assert res["threshold"] == pytest.approx(M.gap_midpoint(expected_t["thresholds"], best))
    assert expected_t["thresholds"][best - 1] < res["threshold"] < expected_t["thresholds"][best]
    test = E.load_predictions(run, "test")
    y, s = test.labels == 1, test.probs[:, 1]
    far = ((s >= res["threshold"]) & ~y).sum() / (~y).sum()
    frr = ((s < res["threshold"]) & y).sum() / y.sum()
    assert (res["far"], res["frr"], res["hter"]) == pytest.approx((far, frr, (far + frr) / 2))
    for key in ("eer", "eer_threshold", "auc", "min_hter", "min_hter_threshold", "f1_threshold", "roc_auc", "pr_auc"):
        assert isinstance(res[key], float), key
    assert set(res["frr_at_far"]) == {"0.01", "0.001"} and set(res["far_at_frr"]) == {"0.01", "0.001"}
    assert res["ci"]["hter"][0] <= res["hter"] <= res["ci"]["hter"][1]
    assert res["top_k"] == {"1": res["top_k"]["1"]}  # k=3, 5 are not < 2 classes
    tuned = E.tune_thresholds(run, rule="eer")
    assert (
        tuned["rule"] == "eer"
        and tuned["tuned_on"] == "val"
        and tuned["positive_class"] == 1
        and tuned["temperature"] > 0
    )
    assert E.load_thresholds(run) == {}
    E.save_thresholds(run, tuned)
    assert E.load_thresholds(run) == tuned
    again = E.evaluate_run(run, thresholds=E.load_thresholds(run), bootstrap=0)
    assert again["threshold"] == tuned["binary"] and again["rule"] == "eer" and again["ci"] == {}
    curves = M.curves(y, s)
    assert set(curves) == {"thresholds", "far", "frr", "hter", "tpr", "fpr", "precision", "recall", "det_x", "det_y"}
    quick = E.metrics_at(test.labels, test.probs, "binary", 1, res["threshold"])
    assert quick["hter"] == pytest.approx(res["hter"])


def test_thresholds_fall_back_to_summary(tmp_path):
    run = make_run(tmp_path, "binary", ["a", "b"], {"val": binary_split(1)})
    atomic_write_json(run.path / "summary.json", {"thresholds": {"binary": 0.5, "positive_class": 1, "tuned_on": None}})
    assert E.load_thresholds(run)["binary"] == 0.5


def test_multiclass_keys_and_no_test_split_is_optimistic(tmp_path):
    classes = [f"c{i}" for i in range(6)]
    run = make_run(tmp_path, "multiclass", classes, {"val": multiclass_split(3)})
    res = E.evaluate_run(run, split="test", bootstrap=100)
    json.dumps(res, allow_nan=False)
    assert (res["tuned_on"], res["reported_on"], res["optimistic"]) == ("val", "val", True)
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "log_loss",
        "roc_auc",
        "pr_auc",
    ):
        assert 0 <= res[key] <= (10 if key == "log_loss" else 1), key
    assert set(res["top_k"]) == {"1", "3", "5"} and res["top_k"]["1"] == pytest.approx(res["accuracy"])
    assert np.array(res["confusion_matrix"]).shape == (6, 6)
    assert np.allclose(np.array(res["confusion_matrix_normalised"]).sum(1), 1)
    assert [r["class"] for r in res["per_class"]] == classes
    counts = [m["count"] for m in res["most_confused"]]
    assert counts == sorted(counts, reverse=True) and len(counts) <= 10
    assert set(res["ci"]) == {"balanced_accuracy", "macro_f1"}
    assert "far" not in res and len(res["calibration"]["bins"]) == 10


def test_missing_split_is_a_clear_error(tmp_path):
    run = make_run(tmp_path, "multiclass", ["a", "b", "c"], {"test": multiclass_split(3, c=3)})
    with pytest.raises(E.EvaluateError, match="no val predictions"):
        E.load_predictions(run, "val")
    with pytest.raises(E.EvaluateError, match="no val predictions"):
        E.evaluate_run(run)


def test_multilabel_per_label_thresholds(tmp_path):
    rng = np.random.default_rng(4)

    def split(n):
        y = (rng.random((n, 3)) < [0.5, 0.2, 0.1]).astype(np.int64)
        return y, np.clip(0.3 * y + 0.7 * rng.random((n, 3)) * [1.0, 0.6, 0.9], 0, 1)

    run = make_run(tmp_path, "multilabel", ["cat", "dog", "bird"], {"val": split(300), "test": split(300)})
    res = E.evaluate_run(run, bootstrap=100)
    json.dumps(res, allow_nan=False)
    val = E.load_predictions(run, "val")
    from engine.metrics import f1_thresholds

    assert list(res["thresholds"].values()) == pytest.approx(f1_thresholds(val.labels, val.probs).tolist())
    assert len(set(res["thresholds"].values())) > 1  # genuinely per label
    for key in ("micro_f1", "macro_f1", "samples_f1", "hamming_loss", "subset_accuracy"):
        assert 0 <= res[key] <= 1
    assert [r["class"] for r in res["per_label"]] == ["cat", "dog", "bird"]
    assert res["ci"]["macro_f1"][0] <= res["macro_f1"] <= res["ci"]["macro_f1"][1]
    tuned = E.tune_thresholds(run)
    assert len(tuned["multilabel"]) == 3 and tuned["tuned_on"] == "val"


def test_temperature_scaling_lowers_nll_on_miscalibrated_val(tmp_path):
    from engine.metrics import nll

    y, p = multiclass_split(5, n=1500, scale=4.0)  # logits x4: badly over-confident
    yt, pt = multiclass_split(6, n=1500, scale=4.0)
    run = make_run(tmp_path, "multiclass", list("abcdef"), {"val": (y, p), "test": (yt, pt)})
    t = M.fit_temperature(y, p)
    assert t > 1.5
    from engine.metrics import apply_temperature

    assert nll(y, apply_temperature(p, t)) < nll(y, p)
    cal = E.evaluate_run(run, bootstrap=0)["calibration"]
    assert (
        cal["temperature"] == pytest.approx(t)
        and cal["nll_after"] < cal["nll_before"]
        and cal["ece_after"] < cal["ece"]
    )


def test_top_losses_ordering(tmp_path):
    y = np.array([0, 1, 2, 0])
    p = np.array([[0.9, 0.05, 0.05], [0.98, 0.01, 0.01], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    run = make_run(tmp_path, "multiclass", ["a", "b", "c"], {"val": (y, p)})
    top = E.top_losses(E.load_predictions(run, "val"), n=3)
    # val/2.png (true c, predicted c at 0.5) is right: "most confidently wrong" never lists it, whatever its loss
    assert [t["id"] for t in top] == ["val/1.png", "val/3.png"]
    assert top[0]["true"] == "b" and top[0]["predicted"] == "a" and top[0]["confidence"] == pytest.approx(0.98)
    assert [t["loss"] for t in top] == sorted((t["loss"] for t in top), reverse=True)


def test_likely_mislabelled_finds_planted_flips(tmp_path):
    rng = np.random.default_rng(8)
    y, p = multiclass_split(9, n=600, c=4, scale=2.0)
    y = np.where(p.max(1) > 0.0, p.argmax(1), y)  # start from clean labels
    flipped = rng.choice(np.flatnonzero(p.max(1) > 0.9), 12, replace=False)
    y_noisy = y.copy()
    y_noisy[flipped] = (y[flipped] + 1) % 4
    run = make_run(tmp_path, "multiclass", list("abcd"), {"val": (y, p)})
    assert E.likely_mislabelled(run) == []  # no oof.npz: not a k-fold run
    write_npz(
        run.predictions / "oof.npz",
        ids=np.array([f"img{i}" for i in range(600)]),
        indices=np.arange(600),
        labels=y_noisy,
        probs=p,
    )
    found = E.likely_mislabelled(run, n=12)
    assert {f["index"] for f in found} == set(flipped.tolist())
    assert [f["margin"] for f in found] == sorted((f["margin"] for f in found), reverse=True)
    assert all(f["given_prob"] < f["class_threshold"] for f in found)


def _cli(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, LOUPE_RUNS_DIR=str(env_root))
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_evaluate_json_and_errors(tmp_path):
    run = make_run(tmp_path, "binary", ["reject", "accept"], {"val": binary_split(1), "test": binary_split(2)})
    proc = _cli(
        "evaluate",
        str(run.path),
        "--json",
        "--rule",
        "f1",
        "--save-thresholds",
        "--bootstrap",
        "100",
        env_root=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "log_loss",
        "top_k",
        "confusion_matrix",
        "confusion_matrix_normalised",
        "per_class",
        "roc_auc",
        "pr_auc",
        "ci",
        "tuned_on",
        "reported_on",
        "optimistic",
        "most_confused",
        "far",
        "frr",
        "hter",
        "threshold",
        "rule",
        "eer",
        "eer_threshold",
        "auc",
        "min_hter",
        "min_hter_threshold",
        "f1_threshold",
        "frr_at_far",
        "far_at_frr",
        "calibration",
        "top_losses",
        "likely_mislabelled",
    ):
        assert key in res, key
    assert res["rule"] == "f1" and json.loads((run.path / "thresholds.json").read_text())["binary"] == res["threshold"]
    text = _cli("evaluate", run.id, "--bootstrap", "0", env_root=tmp_path)
    assert text.returncode == 0 and "hter" in text.stdout and "reported on test" in text.stdout
    missing = _cli("evaluate", "no-such-run", "--json", env_root=tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    err = missing.stderr.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and "Traceback" not in err


def test_single_class_test_split_gives_defined_results(tmp_path):
    y, p = binary_split(2)
    neg = y == 0
    run = make_run(tmp_path, "binary", ["reject", "accept"], {"val": binary_split(1), "test": (y[neg], p[neg])})
    res = E.evaluate_run(run, bootstrap=100)
    json.dumps(res, allow_nan=False)  # no NaN anywhere
    assert res["frr"] == 0.0 and res["eer"] is None and res["auc"] is None and res["ci"]["hter"] is None


def test_most_confused_is_public_and_ranks_off_diagonal_cells():
    cm = np.array([[9, 3, 0], [5, 7, 3], [1, 0, 4]])
    assert E.most_confused(cm, ["a", "b", "c"]) == [
        {"true": "b", "predicted": "a", "count": 5},
        {"true": "a", "predicted": "b", "count": 3},  # ties: row-major order
        {"true": "b", "predicted": "c", "count": 3},
        {"true": "c", "predicted": "a", "count": 1},
    ]
    assert E.most_confused(cm.tolist(), ["a", "b", "c"], n=1) == [{"true": "b", "predicted": "a", "count": 5}]
    assert E.most_confused(np.diag([3, 4]), ["a", "b"]) == []


def test_binary_positive_class_0_and_a_score_exactly_at_the_threshold(tmp_path):
    """Report, slider and decide agree: the score is P(class 0), and a score equal to t is accepted."""
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p0 = np.array([0.9, 0.6, 0.3, 0.6, 0.2, 0.1, 0.6, 0.4])  # P(positive = class 0); three items sit exactly on 0.6
    probs = np.c_[p0, 1 - p0]
    run = make_run(tmp_path, "binary", ["cat", "dog"], {"val": (y, probs), "test": (y, probs)}, positive=0)
    res = E.evaluate_run(run, thresholds={"binary": 0.6, "positive_class": 0}, bootstrap=0)
    decided = M.decide(probs, "binary", positive=0, threshold=0.6)
    np.testing.assert_array_equal(decided, [0, 0, 1, 0, 1, 1, 0, 1])
    assert res["confusion_matrix"] == M.confusion_matrix(y, decided, 2).tolist() == [[3, 1], [1, 3]]
    # positives are class 0 (4 items), negatives class 1: one false accept (item 3), one false reject (item 2)
    assert (res["far"], res["frr"]) == (pytest.approx(1 / 4), pytest.approx(1 / 4))
    assert res["positive_class"] == "cat"
    quick = E.metrics_at(y, probs, "binary", positive=0, threshold=0.6)
    assert quick["confusion_matrix"] == res["confusion_matrix"] and quick["hter"] == pytest.approx(res["hter"])


def test_metrics_at_decides_at_the_given_threshold_even_at_zero():
    """t = 0 accepts everything; the summary (FAR/FRR) and the confusion matrix must both use it, not 0.5."""
    y, probs = binary_split(3, n=200)
    at0 = E.metrics_at(y, probs, "binary", positive=1, threshold=0.0)
    assert (at0["far"], at0["frr"]) == (1.0, 0.0)
    assert np.asarray(at0["confusion_matrix"])[:, 0].sum() == 0  # nothing decided negative
    assert at0["accuracy"] == pytest.approx(float(y.mean()))
    default = E.metrics_at(y, probs, "binary", positive=1, threshold=None)
    assert default == E.metrics_at(y, probs, "binary", positive=1, threshold=0.5)


def test_cli_top_losses_of_a_multilabel_run_name_the_wrong_labels(tmp_path, capsys):
    """Issue 14, item 7 in the CLI: a multi-label top loss names its missed and extra labels with their
    probabilities, "(none)" for an empty set, instead of one "p%"."""
    from engine.cli.main import main

    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 10)
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.9], [0.1, 0.1]] * 10, dtype=float)
    p[0] = [0.05, 0.1]  # item 0: 'cat' missed, nothing extra
    run = make_run(tmp_path, "multilabel", ["cat", "dog"], {"val": (y, p), "test": (y, p)})
    assert main(["evaluate", str(run.path), "--bootstrap", "0", "--runs-dir", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "top loss:" in line]
    assert lines and "missed: cat 5.00%; extra: (none)" in lines[0]

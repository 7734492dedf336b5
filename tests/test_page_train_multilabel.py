"""The Train page for multi-label data and runs of several tasks (issue 14, items 6 and 7): the loss named for
what it is, the monitor choices each task records (micro F1 and mAP for multi-label, no HTER), subset accuracy
by its name, a best-metric card named the same from the start, the two losses labelled, the step count said
per epoch and in all, and a comparison of runs that warns when their tasks differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import RunConfig
from engine.runs.folder import Run, atomic_write_json
from tests.conftest import write_image
from tests.test_page_train import fake_run, open_train

TAGS = ["sand", "sea", "sky"]


def multilabel_csv(root: Path, n: int = 60, unlabelled: int = 4) -> Path:
    """n noise images tagged from TAGS (the last `unlabelled` without a tag; `sky` rare), and a labels.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        write_image(root / f"img{i}.png", seed=i)
        tags = [] if i >= n - unlabelled else [t for t, p in zip(TAGS, (0.6, 0.5, 0.15)) if rng.random() < p]
        rows.append(f"img{i}.png,{' '.join(tags or ([] if i >= n - unlabelled else ['sand']))}")
    path = root / "labels.csv"
    path.write_text("filename,labels\n" + "\n".join(rows) + "\n")
    return path


def as_task(run: Run, task: str, keys: dict[str, float] | None = None) -> Run:
    """A fake run made a run of `task` (config.json's resolved task), its records given extra keys."""
    cfg = run.config()
    atomic_write_json(run.path / "config.json", {**cfg, "task": task})
    if keys:
        lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
        (run.path / "metrics.jsonl").write_text("".join(json.dumps({**r, **keys}) + "\n" for r in lines))
    return run


# --- the form --------------------------------------------------------------------------------------------


def test_loss_help_says_it_once_and_names_bce_for_multilabel(tmp_path: Path):
    from app.train.form import _help
    from app.train.values import FIELDS

    assert "loss`: loss:" not in _help(FIELDS["loss"])
    at = open_train(str(multilabel_csv(tmp_path / "tags")))
    assert not at.exception
    loss = at.selectbox(key="train.f.loss")
    assert loss.value == "ce"
    shown = loss.proto.options
    assert shown[0] == "bce: binary cross-entropy per label", shown
    monitor = at.selectbox(key="train.f.monitor")
    assert {"val_micro_f1", "val_map"} <= set(monitor.proto.options)
    assert "val_hter" not in monitor.proto.options and "val_auc" not in monitor.proto.options
    assert "val_subset_accuracy (exact match)" in monitor.proto.options
    assert "val_accuracy" not in monitor.proto.options  # called subset accuracy, not "accuracy"


def test_single_label_form_keeps_its_choices():
    at = open_train("builtin:digits")
    assert at.selectbox(key="train.f.loss").proto.options[0] == "ce: cross-entropy"
    options = at.selectbox(key="train.f.monitor").proto.options
    assert "val_hter" not in options and "val_map" not in options  # multi-class: no HTER, no mAP


# --- the engine: what the monitor can pick ------------------------------------------------------------


def test_multilabel_validation_records_carry_map_and_the_monitor_is_checked_per_task():
    from engine.metrics import multilabel_summary, ovr_auc
    from engine.train.records import monitor_name

    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.1]])
    rec = multilabel_summary(y, p)
    assert rec["map"] == pytest.approx(ovr_auc(y, p, "pr"))
    assert monitor_name(RunConfig(monitor="val_map"), "multilabel") == "val_map"
    assert monitor_name(RunConfig(monitor="val_micro_f1"), "multilabel") == "val_micro_f1"
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="val_hter"):
        monitor_name(RunConfig(monitor="val_hter"), "multilabel")


# --- the live panel --------------------------------------------------------------------------------------


def test_best_card_named_from_the_start_losses_labelled_and_subset_accuracy(tmp_path: Path):
    run = as_task(fake_run("tags", state="running", scores=(), epochs=3), "multilabel")
    run.write_status(state="running", epoch=0, step=4, total_steps=33, pid=__import__("os").getpid())
    at = open_train("builtin:digits", run=run.id)
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "Best macro F1" in labels, labels  # the multi-label 'auto' monitor before any record says so
    assert any(
        "step 4 of 11 in this epoch · 4 of 33 steps in all" in t for t in [p.proto.text for p in at.get("progress")]
    )
    # after the first epoch: the same name, and the curves say which loss is which
    done = as_task(fake_run("tags-done", scores=(0.5, 0.6)), "multilabel", {"micro_f1": 0.5, "map": 0.6})
    cfg = done.config()
    cfg["config"].update(imbalance="weighted_loss", monitor="val_accuracy")
    atomic_write_json(done.path / "config.json", cfg)
    summary = json.loads((done.path / "summary.json").read_text())
    atomic_write_json(done.path / "summary.json", {**summary, "monitor": "val_accuracy"})
    at = open_train("builtin:digits", run=done.id)
    labels = [m.label for m in at.metric]
    assert "Best subset acc." in labels, labels
    figs = {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")
    }
    loss = next(f for t, f in figs.items() if t.startswith("Loss"))
    names = [t["name"] for t in loss["data"]]
    assert "train (weighted BCE)" in names and "val (log loss, unweighted)" in names
    assert "val" in loss["layout"]["yaxis"]["title"]["text"] and "train" in loss["layout"]["yaxis"]["title"]["text"]
    metrics = next(f for t, f in figs.items() if t.startswith("Validation"))
    assert "subset accuracy" in [t["name"] for t in metrics["data"]]


def test_multilabel_metric_chart_draws_macro_f1_at_half_and_tuned_not_subset_or_balanced_accuracy():
    """Issue 16 item 5 on the live panel: the validation chart of a multi-label run (monitor 'auto': macro F1)
    draws macro F1 at 0.5 and at tuned thresholds, and micro F1; not exact-set or balanced accuracy."""
    from app.train import charts

    recs = [
        {
            "epoch": e,
            "split": "val",
            "loss": 0.3,
            "accuracy": 0.1 * e,
            "balanced_accuracy": 0.6,
            "macro_f1": 0.5 + e / 10,
        }
        | {"macro_f1_tuned": 0.6 + e / 10, "micro_f1": 0.55, "map": 0.7}
        for e in (1, 2)
    ]
    fig = charts.metric_curves(recs, "val_macro_f1", epochs=2, task="multilabel")
    names = [t.name for t in fig.data]
    assert names[:3] == ["macro F1", "macro F1 (per-label thresholds)", "micro F1"], names
    assert "subset accuracy" not in names and "balanced accuracy" not in names, names


# --- comparing runs ---------------------------------------------------------------------------------------


def test_comparing_runs_of_different_tasks_warns_and_the_metric_follows_the_task():
    binary = as_task(fake_run("bin", scores=(0.5, 0.6)), "binary", {"hter": 0.3})
    at = open_train("builtin:digits")
    assert at.selectbox(key="train.runs.metric").value == "hter"  # a binary run is compared on HTER
    assert not any("different tasks" in w.value for w in at.warning)
    as_task(fake_run("tags", scores=(0.5, 0.6)), "multilabel", {"micro_f1": 0.5})
    at = open_train("builtin:digits")
    assert any("different tasks" in w.value and "binary" in w.value and "multilabel" in w.value for w in at.warning)
    assert binary.id in at.multiselect(key="train.runs.compare").value

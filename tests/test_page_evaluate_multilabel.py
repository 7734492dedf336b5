"""The Evaluate page on a multi-label run (issue 14, items 2, 3 and 7): one set of thresholds in force that the
cards, the Labels chart, the table and the line under it all follow; an explicit "edited, not saved" state;
saving writes thresholds.json and summary.json alike; the per-label confusion counts with their images; top
losses that name the missed and the extra labels.

The run is a folder with stored predictions only (no training): the page never re-runs the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine import evaluate as ev
from engine.metrics import display
from engine.runs.folder import Run, atomic_write_json
from tests.pagetools import open_page
from tests.test_evaluate import make_run

LABELS = ["cat", "dog", "bird"]


def multilabel_split(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.5, 0.25, 0.1]).astype(np.int64)
    return y, np.clip(0.35 * y + 0.65 * rng.random((n, 3)), 0, 1)


def ml_run(root: Path) -> Run:
    """A completed multi-label run with val and test predictions and training's summary.json (0.5 defaults)."""
    run = make_run(root, "multilabel", LABELS, {"val": multilabel_split(1), "test": multilabel_split(2)})
    atomic_write_json(run.path / "status.json", {"state": "completed"})
    atomic_write_json(
        run.path / "summary.json",
        {"best_epoch": 1, "monitor": "val_macro_f1", "thresholds": {"multilabel": [0.5] * 3, "tuned_on": None}},
    )
    return run


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    r = ml_run(tmp_path / "runs")
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(r.path.parent))
    return r


def k_thresholds(run: Run) -> str:
    return f"eval.ml_thresholds.{run.id}"


def edit(at: AppTest, run: Run, values: list[float]) -> AppTest:
    """What the table's on_change does with a typed edit: the thresholds in force, marked as edited by hand."""
    at.session_state[k_thresholds(run)] = values
    at.session_state[f"eval.ml_source.{run.id}"] = "hand"
    at.run()
    assert not at.exception, at.exception
    return at


def card(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def labels_chart(at: AppTest) -> dict:
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        if fig["layout"].get("title", {}).get("text", "").startswith("Per label"):
            return fig
    raise AssertionError("no per-label chart")


def test_every_view_follows_an_edited_threshold_and_says_it_is_not_saved(run: Run):
    at = open_page("pages/evaluation.py", "Evaluate", run)
    ts = [0.61234, 0.2, 0.87]
    edit(at, run, ts)
    want = ev.report_at(ev.load_predictions(run, "test"), {"multilabel": ts}, bootstrap=0)
    # the cards
    assert card(at, "Micro F1") == display.format_metric("micro_f1", want["micro_f1"])
    assert card(at, "Macro F1") == display.format_metric("macro_f1", want["macro_f1"])
    # the Labels chart: one F1 bar per label, at these thresholds
    fig = labels_chart(at)
    f1 = next(t for t in fig["data"] if t.get("name") == "F1")
    assert f1["y"] == pytest.approx([r["f1"] for r in want["per_label"]])
    # the line under the table
    line = next(c.value for c in at.caption if c.value.startswith("At these thresholds"))
    assert f"micro F1 {display.format_metric('micro_f1', want['micro_f1'])}" in line
    assert f"macro F1 {display.format_metric('macro_f1', want['macro_f1'])}" in line
    # an explicit state: the page counts at these, Predict and export do not until saved
    assert any("Edited, not saved" in w.value for w in at.warning)
    assert any("edited, not saved" in c.value for c in at.caption)


def test_saving_writes_thresholds_and_summary_consistently(run: Run):
    at = open_page("pages/evaluation.py", "Evaluate", run)
    ts = [0.61234, 0.2, 0.87]
    edit(at, run, ts)
    at.button(key="eval.ml_save").click().run()
    assert not at.exception and not at.error
    saved = json.loads((run.path / "thresholds.json").read_text())
    summary = json.loads((run.path / "summary.json").read_text())
    assert saved["multilabel"] == ts  # to the last digit: 0.61234, not 0.612
    assert saved["tuned_on"] == "manual" and saved["rule"] == "manual"  # edited by hand, not "tuned on val"
    assert summary["thresholds"]["multilabel"] == ts and summary["thresholds"]["tuned_on"] == "manual"
    assert summary["best_epoch"] == 1  # the rest of the summary kept
    assert not any("Edited, not saved" in w.value for w in at.warning)
    assert any("Saved with the run" in c.value for c in at.caption)


def test_saving_the_tuned_thresholds_records_where_they_were_tuned(run: Run):
    at = open_page("pages/evaluation.py", "Evaluate", run)
    at.button(key="eval.ml_tune").click().run()
    at.button(key="eval.ml_save").click().run()
    summary = json.loads((run.path / "summary.json").read_text())
    expected = ev.tune_thresholds(run, "f1", "val")["multilabel"]
    assert summary["thresholds"]["tuned_on"] == "val" and summary["thresholds"]["rule"] == "f1"
    assert summary["thresholds"]["multilabel"] == pytest.approx(expected, abs=1e-12)

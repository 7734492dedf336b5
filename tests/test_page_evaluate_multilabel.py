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


# --- item 7: top losses, calibration --------------------------------------------------------------------


def test_top_losses_list_only_wrong_decisions_for_every_task(tmp_path: Path):
    from tests.test_evaluate import binary_split, multiclass_split

    runs = {
        "binary": make_run(tmp_path / "b", "binary", ["no", "yes"], {"val": binary_split(3)}),
        "multiclass": make_run(tmp_path / "m", "multiclass", list("abcdef"), {"val": multiclass_split(3)}),
        "multilabel": make_run(tmp_path / "l", "multilabel", LABELS, {"val": multilabel_split(3)}),
    }
    for task, run in runs.items():
        pred = ev.load_predictions(run, "val")
        t = 0.3 if task == "binary" else [0.4, 0.5, 0.6] if task == "multilabel" else None
        top = ev.top_losses(pred, n=len(pred.labels), threshold=t)
        assert top, task
        for item in top:
            assert item["true"] != item["predicted"], (task, item)  # never a correct decision
        if task == "binary":
            wrong = int(((pred.probs[:, 1] >= 0.3).astype(int) != pred.labels).sum())
            assert len(top) == wrong


def test_multilabel_top_losses_name_missed_and_extra_labels_with_their_probabilities(tmp_path: Path):
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    p = np.array([[0.2, 0.9, 0.1], [0.1, 0.8, 0.05], [0.9, 0.8, 0.1]])  # the third is right at 0.5
    run = make_run(tmp_path, "multilabel", LABELS, {"val": (y, p)})
    top = ev.top_losses(ev.load_predictions(run, "val"), n=5, threshold=[0.5, 0.5, 0.5])
    assert [t["id"] for t in top] == ["val/0.png", "val/1.png"]
    first, second = top
    assert first["missed"] == [{"label": "cat", "prob": pytest.approx(0.2)}]
    assert first["extra"] == [{"label": "dog", "prob": pytest.approx(0.9)}]
    assert second["true"] == [] and second["missed"] == []
    from app.evaluate.gallery import caption

    text = caption(second, LABELS).replace("\u200b", "")
    assert text.startswith("(none) → dog")
    assert "missed: (none)" in text and "extra: dog 80.00%" in text
    assert "%)" not in text  # no single "p%" for a whole label set
    text = caption(first, LABELS).replace("\u200b", "")
    assert "missed: cat 20.00%" in text and "extra: dog 90.00%" in text


def test_calibration_text_does_not_claim_scaling_never_changes_a_thresholded_decision(run: Run):
    at = open_page("pages/evaluation.py", "Evaluate", run)
    text = " ".join(c.value for c in at.caption)
    assert "never the predicted class" not in text
    assert "can change the decision" in text


def test_compare_tab_leaves_out_runs_of_another_task_with_a_warning(run: Run):
    from tests.test_evaluate import multiclass_split

    other = make_run(
        run.path.parent, "multiclass", list("abc"), {"val": multiclass_split(1, c=3), "test": multiclass_split(2, c=3)}
    )
    atomic_write_json(other.path / "config.json", {**other.config(), "task": "multiclass"})
    atomic_write_json(run.path / "config.json", {**run.config(), "task": "multilabel"})
    at = open_page("pages/evaluation.py", "Evaluate", run)
    assert any("Left out 1 run" in w.value and "multiclass" in w.value for w in at.warning)


# --- item 3: confusion per label, the per-class table ---------------------------------------------------------


def test_labels_tab_counts_each_labels_confusion_and_shows_the_images_of_a_cell(run: Run):
    at = open_page("pages/evaluation.py", "Evaluate", run)
    ts = [0.61234, 0.2, 0.87]
    edit(at, run, ts)
    pred = ev.load_predictions(run, "test")
    y, d = pred.labels.astype(bool), pred.probs >= np.asarray(ts)
    table = next(t for t in at.table if "FN (missed)" in str(t.value.columns.tolist()))
    df = table.value
    for i in range(3):
        row = df.iloc[i]
        assert row["TP"] == f"{int((y[:, i] & d[:, i]).sum()):,}"
        assert row["FP (extra)"] == f"{int((~y[:, i] & d[:, i]).sum()):,}"
        assert row["FN (missed)"] == f"{int((y[:, i] & ~d[:, i]).sum()):,}"
        assert row["TN"] == f"{int((~y[:, i] & ~d[:, i]).sum()):,}"
        assert row["threshold"] == display.threshold(ts[i])
    at.selectbox(key=f"eval.ml_cell_label.{run.id}").set_value(0).run()
    at.radio(key=f"eval.ml_cell.{run.id}").set_value("FN").run()
    rows = np.flatnonzero(y[:, 0] & ~d[:, 0])
    assert len(rows) > 0
    assert any(f"**cat**, FN: {len(rows):,} image" in m.value for m in at.markdown)
    # the images behind the cell (no dataset here: their table, one row per image shown), most sure first
    want = [f"{i}.png" for i in rows[np.argsort(pred.probs[rows, 0], kind="mergesort")][:24]]
    assert any(df.value["image"].tolist() == want for df in at.dataframe if "image" in df.value.columns)


def test_multiclass_classes_tab_has_a_numeric_per_class_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.test_evaluate import multiclass_split

    run = make_run(
        tmp_path / "runs",
        "multiclass",
        list("abc"),
        {"val": multiclass_split(1, c=3), "test": multiclass_split(2, c=3)},
    )
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_page("pages/evaluation.py", "Evaluate", run)
    res = ev.evaluate_run(run, bootstrap=0)
    table = next(t for t in at.table if "support" in t.value.columns)
    rows = table.value.to_dict("records")
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    for r, want in zip(rows, res["per_class"]):
        assert r["precision"] == display.format_metric("precision", want["precision"])
        assert r["recall"] == display.format_metric("recall", want["recall"])
        assert r["F1"] == display.format_metric("f1", want["f1"])
        assert r["support"] == f"{want['support']:,}"

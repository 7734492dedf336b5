"""The Evaluate page, driven through Streamlit's AppTest on real tiny runs (trained here in seconds):
metric cards with intervals, the live threshold slider, the tuned-threshold buttons, saving the
threshold to the run, the confusion matrix with its images and per-class bars, and no runs at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import evaluate as ev
from engine.runs.folder import Run
from tests.conftest import FASHION_DIR
from tests.pagetools import open_page, train_tiny

HAS_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()


def _train(root: Path, dataset: str, image_size: int) -> Run:
    return train_tiny(root, dataset, image_size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> dict[str, Run]:
    """One binary (fashion-binary, when installed) and one multiclass (digits) run, shared by the tests."""
    root = tmp_path_factory.mktemp("eval-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        runs = {"digits": _train(root, "builtin:digits", 8)}
        if HAS_FASHION:
            runs["binary"] = _train(root, "builtin:fashion-binary", 28)
    return runs


def use_runs(monkeypatch: pytest.MonkeyPatch, *runs: Run, copy_to: Path | None = None) -> list[Run]:
    """Point LOUPE_RUNS_DIR at the runs (copied first when the test writes into them)."""
    if copy_to is None:
        monkeypatch.setenv("LOUPE_RUNS_DIR", str(runs[0].path.parent))
        return list(runs)
    copy_to.mkdir(parents=True, exist_ok=True)
    out = [Run(shutil.copytree(r.path, copy_to / r.id)) for r in runs]
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(copy_to))
    return out


def open_evaluate(run: Run | None = None) -> AppTest:
    return open_page("pages/evaluation.py", "Evaluate", run)


def metric(at: AppTest, label: str, nth: int = 0):
    found = [m for m in at.metric if m.label == label]
    assert len(found) > nth, f"no metric card '{label}' in {[m.label for m in at.metric]}"
    return found[nth]


def figures(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures by title (text before any ' (' or ' ·')."""
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        title = fig.get("layout", {}).get("title", {}).get("text", "")
        out[title] = fig
    return out


def threshold_slider(at: AppTest, run: Run):
    return at.slider(key=f"eval.threshold.{run.id}")


# --- no runs --------------------------------------------------------------------------------------


def test_no_runs_shows_a_friendly_pointer_to_the_train_page():
    at = open_evaluate()
    assert not at.error
    assert any("No trained run" in i.value and "Train" in i.value for i in at.info)
    assert not at.metric


# --- binary ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
def test_binary_cards_live_slider_and_tuned_threshold(trained, monkeypatch):
    (run,) = use_runs(monkeypatch, trained["binary"])
    at = open_evaluate(run)
    assert not at.error
    # cards with bootstrap intervals, tuned on val and reported on test (not optimistic)
    for label in ("Accuracy", "Balanced accuracy", "Macro F1", "ROC AUC", "HTER"):
        metric(at, label)
    assert metric(at, "Balanced accuracy").proto.delta.startswith("95% CI ")
    assert metric(at, "HTER").proto.delta.startswith("95% CI ")
    assert not any("Optimistic" in w.value for w in at.warning)
    assert any("tuned on **val**" in c.value and "reported on **test**" in c.value for c in at.caption)
    # moving the slider changes the FAR/FRR shown, live from the stored scores
    slider = threshold_slider(at, run)
    slider.set_value(0.05).run()
    low = (metric(at, "FAR").value, metric(at, "FRR").value)
    threshold_slider(at, run).set_value(0.95).run()
    high = (metric(at, "FAR").value, metric(at, "FRR").value)
    assert not at.exception
    assert low != high
    pred = ev.load_predictions(run, "test")
    m = ev.metrics_at(pred.labels, pred.probs, pred.task, pred.positive, 0.95)
    assert high == (f"{m['far']:.2%}", f"{m['frr']:.2%}")
    # "use min-HTER" puts the slider on the threshold tuned on val
    at.button(key="eval.use.min_hter").click().run()
    tuned = ev.tune_thresholds(run, rule="min_hter", split="val")["binary"]
    assert threshold_slider(at, run).value == pytest.approx(tuned)
    m = ev.metrics_at(pred.labels, pred.probs, pred.task, pred.positive, tuned)
    assert metric(at, "HTER", 1).value == f"{m['hter']:.2%}"  # the live card (the first HTER card is the report)
    assert {"FAR, FRR and HTER vs threshold", "DET curve"} <= set(figures(at))


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
def test_save_threshold_to_run_writes_thresholds_json(trained, monkeypatch, tmp_path):
    (run,) = use_runs(monkeypatch, trained["binary"], copy_to=tmp_path / "runs")
    assert not (run.path / "thresholds.json").exists()
    at = open_evaluate(run)
    threshold_slider(at, run).set_value(0.37).run()
    at.button(key="eval.save_threshold").click().run()
    assert not at.exception
    saved = ev.load_thresholds(run)
    assert (run.path / "thresholds.json").exists()
    assert saved["binary"] == pytest.approx(0.37) and saved["positive_class"] == 1 and saved["rule"] == "manual"
    # a tuned threshold is saved with its rule and split; a fresh session opens on the saved one
    at.button(key="eval.use.eer").click().run()
    at.button(key="eval.save_threshold").click().run()
    saved = ev.load_thresholds(run)
    assert saved["binary"] == pytest.approx(ev.tune_thresholds(run, rule="eer", split="val")["binary"])
    assert saved["rule"] == "eer" and saved["tuned_on"] == "val"
    again = open_evaluate(run)
    assert threshold_slider(again, run).value == pytest.approx(saved["binary"])
    assert any("Saved:" in c.value for c in again.caption)


# --- multiclass -----------------------------------------------------------------------------------


def test_multiclass_confusion_matrix_cell_images_and_per_class_bars(trained, monkeypatch):
    (run,) = use_runs(monkeypatch, trained["digits"])
    at = open_evaluate(run)
    assert not at.error
    for label in ("Accuracy", "Balanced accuracy", "Macro F1", "Log loss"):
        metric(at, label)
    assert not at.slider  # no threshold for a multiclass run
    figs = figures(at)
    cm_fig = next(f for t, f in figs.items() if t.startswith("Confusion matrix"))
    z = cm_fig["data"][0]["z"]
    pred = ev.load_predictions(run, "test")
    assert len(z) == 10 and all(len(r) == 10 for r in z)
    assert sum(map(sum, z)) == len(pred.labels)
    bars = next(f for t, f in figs.items() if t.startswith("Per class"))
    assert [tr["name"] for tr in bars["data"]] == ["precision", "recall", "F1"] and len(bars["data"][0]["x"]) == 10
    assert "(n=" in bars["data"][0]["x"][0]  # support in the class label
    # normalised: rows sum to 1
    at.toggle(key="eval.cm_normalised").set_value(True).run()
    z = next(f for t, f in figures(at).items() if t.startswith("Confusion matrix"))["data"][0]["z"]
    assert all(abs(sum(r) - 1) < 1e-6 for r in z if sum(r) > 0)
    # choosing a cell shows its images
    res = ev.evaluate_run(run, bootstrap=0)
    i = max(range(10), key=lambda c: res["confusion_matrix"][c][c])
    at.selectbox(key=f"eval.cell.{run.id}.test").set_value(f"{i},{i}").run()
    assert not at.exception
    assert any(f"{res['confusion_matrix'][i][i]:,} image" in m.value for m in at.markdown)
    assert len(at.image) >= 2  # the cell's gallery next to the top losses gallery
    assert not any("cannot be shown" in c.value for c in at.caption)
    # each gallery image links to the Explain page for that dataset image of this run
    links = [el.proto for el in at.main.get("page_link")]  # the gallery's, not the sidebar's navigation
    cell_indices = ev.load_predictions(run, "test").indices[
        (ev.load_predictions(run, "test").labels == i) & (ev.load_predictions(run, "test").probs.argmax(1) == i)
    ]
    assert links and all(f"run={run.id}" in link.query_string for link in links)
    linked = {int(link.query_string.split("image=")[1].split("&")[0]) for link in links}
    assert linked & set(int(v) for v in cell_indices)
    # reporting on val, where thresholds are tuned, is flagged as optimistic
    at.radio(key=f"eval.split.{run.id}").set_value("val").run()
    assert any("Optimistic" in w.value for w in at.warning)


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST is not installed")
def test_multilabel_thresholds_tuned_on_val_and_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_cache: Path
):
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(session_cache))
    run = _train(tmp_path / "runs", "builtin:fashion-multilabel", 28)
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(run.path.parent))
    at = open_evaluate(run)
    assert not at.error
    at.button(key="eval.ml_tune").click().run()
    at.button(key="eval.ml_save").click().run()
    assert not at.exception and not at.error
    saved = json.loads((run.path / "thresholds.json").read_text())
    expected = ev.tune_thresholds(run, "f1", "val")["multilabel"]
    assert saved["tuned_on"] == "val" and saved["multilabel"] == pytest.approx(expected, abs=1e-12)
    assert len(saved["multilabel"]) == 10 and ev.load_thresholds(run)["multilabel"] == saved["multilabel"]

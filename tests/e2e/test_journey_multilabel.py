"""The multi-label journey in a real browser (issue 14): open a small real multi-label CSV dataset (lfw faces with
four tags read off the pictures, a quarter of the images without tags; `tests/multilabel_faces.py`) -> train a
tiny run on the Train page -> Evaluate: edit one label's threshold and save it -> Explain: the decided set, the
true labels, the accepted labels side by side -> Predict an image whose most probable label its saved threshold
rejects: the headline must not name that label, its bar says "rejected", and the page says whether the image
looks like the training data.

The threshold's consistency across the Evaluate page's views is another item (issue 14, item 2); this journey
checks what Predict and Explain own: that they decide at the threshold the user saved. Its own server (the
binary journey counts the runs of the shared one). Screenshots `ml*.png` in the artifacts folder.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import (
    check_page,
    goto,
    metric,
    nav,
    new_page,
    set_number,
    settle,
    shot,
    start_server,
    type_threshold,
    wait_until_trained,
)
from tests.multilabel_faces import TAGS, make_faces_csv

TRAIN = {"Image size (px)": 32, "Training images (0: all)": 0, "Epochs": 4, "Batch size": 32}
TRAIN_TIMEOUT_S = 300
journey: dict = {}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, session_cache: Path, request: pytest.FixtureRequest):
    s = start_server(tmp_path_factory.mktemp("e2e-ml"), session_cache)
    journey["csv"] = make_faces_csv(s.data / "faces")  # the data dir is an allowed root
    failed_before = request.session.testsfailed
    yield s
    s.stop()
    if request.session.testsfailed > failed_before:
        print(f"\n--- streamlit server log ({s.log_path}) ---\n{s.log()}")


@pytest.fixture(scope="module")
def page(browser):
    p = new_page(browser)
    p.set_default_timeout(120_000)
    yield p
    p.context.close()


def shot_at(page, locator, artifacts: Path, name: str) -> None:
    """A viewport screenshot with `locator` scrolled into view (the app scrolls inside its main block, so a
    full-page shot shows only the top of a long page)."""
    locator.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / f"{name}.png"))


def run_dir(srv) -> Path:
    assert journey.get("run"), "needs the run trained by test_ml_train_a_tiny_run"
    return srv.runs / journey["run"]


def test_ml_open_the_dataset(page, srv, artifacts):
    goto(page, srv.url)
    page.locator('[data-testid="stButtonGroup"] button', has_text="Server path").click()
    settle(page)
    box = page.get_by_label("Path on the server (press Enter to open)", exact=True).and_(page.locator("input"))
    box.fill(str(journey["csv"]))
    box.press("Enter")
    page.wait_for_selector(f"text=Active dataset: {journey['csv']}")
    page.wait_for_selector('[data-testid="stMetric"]')
    settle(page)
    assert metric(page, "Images") == "200"
    assert metric(page, "Task") == "multilabel"
    check_page(page)
    shot(page, artifacts, "ml01-dataset")


def test_ml_train_a_tiny_run(page, srv, artifacts):
    nav(page, "Train")
    page.get_by_text(re.compile(r"^200 images · 4 (classes|labels) · multilabel")).first.wait_for()
    page.locator('[data-testid="stExpander"] summary', has_text="Stopping").click()
    for label, value in TRAIN.items():
        set_number(page, label, value)
    check_page(page)
    shot(page, artifacts, "ml02-train-form")
    page.get_by_role("button", name="Start training").click()
    journey["run"] = wait_until_trained(page, srv.runs, TRAIN_TIMEOUT_S)
    check_page(page)
    shot(page, artifacts, "ml03-train-completed")


def pick_rejected(folder: Path) -> tuple[int, int, float, float]:
    """(dataset index, label index, probability, threshold to save): the test image and label with the highest
    probability a threshold of at most 0.99 can still reject."""
    with np.load(folder / "predictions" / "test.npz") as z:
        probs, indices = z["probs"], z["indices"]
    ok = probs < 0.95
    assert (ok & (probs > 0.6)).any(), f"no label above 60% on any test image: {probs.max(0)}"
    row, col = np.unravel_index(np.argmax(np.where(ok, probs, -1)), probs.shape)
    p = float(probs[row, col])
    return int(indices[row]), int(col), p, min(0.99, round(p + 0.05, 2))


def test_ml_evaluate_edit_and_save_a_threshold(page, srv, artifacts):
    folder = run_dir(srv)
    classes = json.loads((folder / "classes.json").read_text())
    assert sorted(classes) == sorted(TAGS)
    index, label, p, new = pick_rejected(folder)
    journey.update(index=index, label=classes[label], prob=p, threshold=new)
    nav(page, "Evaluate")
    page.get_by_role("tab", name="Thresholds", exact=True).click()
    settle(page)
    grid = page.locator('[data-testid="stDataFrame"]').filter(
        has=page.locator('[role="gridcell"]', has_text=classes[label])
    )
    grid.locator("canvas").first.wait_for()
    page.wait_for_timeout(500)  # the grid lays out its rows after the canvas appears
    check_page(page)
    shot(page, artifacts, "ml04-evaluate-thresholds")
    cell = grid.locator(f"#glide-cell-1-{label}")  # the grid's accessible copy of the label's threshold cell
    type_threshold(page, grid, label, f"{new}")
    deadline = time.time() + 10
    while float(cell.inner_text()) != pytest.approx(new) and time.time() < deadline:
        page.wait_for_timeout(300)
    assert float(cell.inner_text()) == pytest.approx(new), "the edited threshold shows in the table"
    page.get_by_role("button", name="Save thresholds to run").click()
    settle(page)
    saved = json.loads((folder / "thresholds.json").read_text())
    assert saved["multilabel"][label] == pytest.approx(new)
    assert float(cell.inner_text()) == pytest.approx(new)  # the saved value shows
    check_page(page)
    shot_at(page, grid, artifacts, "ml05-evaluate-threshold-saved")


def test_ml_explain_shows_the_decided_set_and_the_truth(page, srv, artifacts):
    from engine.evaluate.thresholds import load_thresholds
    from engine.runs.folder import Run
    from tests.multilabel_faces import tags_of

    folder = run_dir(srv)
    index, name = journey["index"], journey["label"]
    nav(page, "Explain")
    page.get_by_label("Dataset index", exact=True).fill(str(index))
    page.get_by_label("Dataset index", exact=True).press("Enter")
    settle(page)
    predicted = page.locator(".st-key-expl-predicted")
    assert "Decided labels" in predicted.inner_text()
    decided = predicted.locator("h3").first.inner_text().strip()
    assert name not in decided.split(", "), f"{name} ({journey['prob']:.2f}) is under its saved threshold: {decided}"
    from skimage.data import lfw_subset

    truth = tags_of(lfw_subset())[index]
    classes = Run(folder).classes()
    shown = ", ".join(c for c in classes if c in truth) or "(none)"
    page.get_by_text(f"True labels: {shown}").first.wait_for()
    assert load_thresholds(Run(folder))["multilabel"][classes.index(name)] == pytest.approx(journey["threshold"])
    overlay = page.locator('[data-testid="stImage"]', has_text="overlay")
    overlay.first.wait_for()
    check_page(page)
    shot(page, artifacts, "ml06-explain")
    shot_at(page, predicted, artifacts, "ml06b-explain-decided-and-truth")
    shot_at(page, overlay.first, artifacts, "ml06c-explain-maps")


def test_ml_predict_does_not_name_the_rejected_label(page, srv, artifacts):
    run_dir(srv)
    index, name = journey["index"], journey["label"]
    files = sorted((srv.data / "faces" / "images").glob("*.png"))
    image = files[index]
    other = files[(index + 1) % len(files)]
    nav(page, "Predict")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(image), str(other)])
    heads = page.locator("h2")
    heads.first.wait_for()
    settle(page)
    page.locator('[data-testid="stPlotlyChart"]').first.locator(".main-svg").first.wait_for()
    first_card = page.locator(".st-key-pred-card-0")
    assert image.name in first_card.inner_text()
    head = first_card.locator("h2").first.inner_text().strip()
    assert name not in [h.strip() for h in head.split(",")], f"the headline names {name}, rejected by its threshold"
    assert not re.match(r"^\d{1,3}% ", head), head  # a decided set, not "98% <top label>"
    text = first_card.inner_text()
    assert "Decided labels" in text
    assert re.search(r"(looks unlike the training data|like the training data \(distance)", text), text
    bars = first_card.locator('[data-testid="stPlotlyChart"]').first.inner_text()
    assert f"threshold {journey['threshold']:.4f} · rejected" in bars, bars
    table = page.locator('[data-testid="stDataFrame"]').first
    table.locator("canvas").first.wait_for()
    check_page(page)
    shot(page, artifacts, "ml07-predict")
    shot_at(page, table, artifacts, "ml07b-predict-table")
    shot_at(page, first_card, artifacts, "ml07c-predict-card")

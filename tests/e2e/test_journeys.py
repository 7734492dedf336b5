"""The user's journeys through the real app in a real browser, in order, in one browser session:
open the app -> Dataset (fashion-binary) -> Train (a tiny run, watched live) -> Evaluate (move and save the
threshold) -> Explain (Grad-CAM, FGSM) -> Predict (a photo of a cat).

Each step takes a full-page screenshot into the artifacts folder and fails on any Streamlit exception box,
any unexpected error box and any dialog (such as "Page not found").
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import needs_fashion
from tests.e2e.conftest import (
    check_page,
    goto,
    metric,
    nav,
    nav_titles,
    new_page,
    open_tab,
    select_option,
    set_number,
    settle,
    shot,
)

pytestmark = [needs_fashion]

DATASET = "fashion-binary"
# big enough that the live panel (polling every 1.5 s) sees the bar between 0 and 100 on a quiet machine
TRAIN = {"Image size (px)": 28, "Training images (0: all)": 3000, "Epochs": 3, "Batch size": 32}
TRAIN_TIMEOUT_S = 120
journey: dict = {}  # what one step leaves for the next (the run id)


@pytest.fixture(scope="module")
def page(browser):
    p = new_page(browser)
    yield p
    p.context.close()


def run_dir(server) -> Path:
    assert journey.get("run"), "needs the run trained by test_train_a_tiny_run"
    return server.runs / journey["run"]


# --- the journeys ------------------------------------------------------------------------------------------


def test_open_the_app(page, server, artifacts):
    goto(page, server.url)
    page.wait_for_selector('h1:has-text("Dataset")')
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "Loupe" in sidebar.inner_text()
    assert nav_titles(page) == ["Dataset", "Train", "Evaluate", "Explain", "Predict"]
    check_page(page)
    shot(page, artifacts, "01-open")


def test_dataset_page_shows_counts_and_charts(page, server, artifacts):
    from engine.data import quick_stats
    from engine.metrics.display import percent

    expected = quick_stats(f"builtin:{DATASET}")
    select_option(page, "Built-in dataset", re.compile(rf"^{DATASET} "))
    page.wait_for_selector(f"text=Active dataset: builtin:{DATASET}")
    page.wait_for_selector('[data-testid="stMetric"]')
    settle(page)
    assert metric(page, "Images") == f"{expected['num_images']:,}"
    assert metric(page, "Classes") == str(len(expected["classes"]))
    assert metric(page, "Task") == "binary"
    assert metric(page, "Imbalance ratio") == f"{expected['imbalance_ratio']:.1f} : 1"
    assert metric(page, "Minority share") == percent(expected["minority_share"])  # the one format of a share
    charts = page.locator('[data-testid="stPlotlyChart"]')
    assert charts.count() >= 4, "class, split, size and aspect charts"
    charts.first.locator(".main-svg").first.wait_for()  # plotly drew it
    assert page.locator('[data-testid="stImage"]').count() > 0, "sample thumbnails"
    assert f"builtin:{DATASET}" in page.locator('[data-testid="stSidebar"]').inner_text()
    check_page(page)
    shot(page, artifacts, "02-dataset")


def test_train_a_tiny_run(page, server, artifacts):
    nav(page, "Train")
    assert f"builtin:{DATASET}" in page.locator('[data-testid="stSidebar"]').inner_text()
    page.get_by_text(re.compile(r"^[\d,]+ images · 2 classes · binary")).first.wait_for()  # the form's dataset line
    page.locator('[data-testid="stExpander"] summary', has_text="Stopping").click()  # collapsed at first
    for label, value in TRAIN.items():
        set_number(page, label, value)
    check_page(page)
    shot(page, artifacts, "03-train-form")
    page.get_by_role("button", name="Start training").click()
    bar = page.locator('[data-testid="stProgress"]').filter(has_text=re.compile(r"^(Queued|Running|Completed)"))
    bar.first.wait_for()
    values, deadline, shot_running = [], time.time() + TRAIN_TIMEOUT_S, False
    while time.time() < deadline:
        text = bar.first.inner_text(timeout=30_000)
        now = bar.first.locator('[role="progressbar"]').get_attribute("aria-valuenow")
        if now is not None and (not values or float(now) != values[-1]):
            values.append(float(now))
        if text.startswith("Running") and values and 0 < values[-1] < 100 and not shot_running:
            shot(page, artifacts, "04-train-running")
            shot_running = True
        if text.startswith("Completed"):
            break
        assert not text.startswith(("Failed", "Stopped")), text
        page.wait_for_timeout(300)  # the panel polls every 1.5 s; sample it faster than that
    else:
        pytest.fail(f"the run did not complete within {TRAIN_TIMEOUT_S}s; progress seen: {values}")
    inside = [v for v in values if 0 < v < 100]
    assert inside and any(b > a for a, b in zip(values, values[1:]) if a > 0), (
        f"the progress bar should advance while training: values seen {values}"
    )
    assert values[-1] == 100
    page.locator('[data-testid="stBadge"], span', has_text="completed").first.wait_for()
    settle(page)
    runs = [p for p in server.runs.iterdir() if (p / "status.json").exists()]
    assert len(runs) == 1
    status = json.loads((runs[0] / "status.json").read_text())
    assert status["state"] == "completed", status
    journey["run"] = runs[0].name
    assert journey["run"] in page.locator('[data-testid="stSidebar"]').inner_text()
    check_page(page)
    shot(page, artifacts, "05-train-completed")


def test_evaluate_move_and_save_threshold(page, server, artifacts):
    folder = run_dir(server)
    nav(page, "Evaluate")
    check_page(page)
    shot(page, artifacts, "06-evaluate")
    before = (folder / "thresholds.json").read_text() if (folder / "thresholds.json").exists() else None
    open_tab(page, "Threshold")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").first
    thumb = slider.get_by_role("slider", name="Threshold")
    shown = slider.locator('[data-testid="stSliderThumbValue"]')
    start = float(shown.inner_text())
    thumb.focus()
    key = "ArrowLeft" if start > 0.5 else "ArrowRight"
    for _ in range(25):
        thumb.press(key)
    settle(page)
    page.wait_for_function("([el, v]) => el.innerText.trim() !== v", arg=[shown.element_handle(), f"{start:.4f}"])
    settle(page)
    shown_now = float(shown.inner_text())
    assert shown_now != start, "the threshold slider should move with the arrow keys"
    caption = page.get_by_text(re.compile(r"^Threshold \d\.\d{4} \(chosen by hand\)")).first
    caption.wait_for()
    page.wait_for_function(  # the last of the key presses' reruns has drawn the metrics
        "([el, v]) => Math.abs(parseFloat(el.innerText.replace('Threshold ', '')) - v) < 6e-4",
        arg=[caption.element_handle(), shown_now],
    )
    settle(page)
    moved = float(re.search(r"Threshold (\d\.\d{4})", caption.inner_text()).group(1))
    assert moved == pytest.approx(shown_now, abs=6e-4), "the metrics follow the slider"
    page.get_by_role("button", name="Save threshold to run").click()
    page.get_by_text(f"Saved: {moved:.4f} (chosen by hand").first.wait_for()
    settle(page)
    saved = json.loads((folder / "thresholds.json").read_text())
    assert (folder / "thresholds.json").read_text() != before
    assert saved["binary"] == pytest.approx(moved, abs=1e-4)
    assert saved["rule"] == "manual"
    check_page(page)
    shot(page, artifacts, "07-evaluate-threshold-saved")


def test_explain_gradcam_and_fgsm(page, server, artifacts):
    run_dir(server)
    nav(page, "Explain")
    overlay = page.locator('[data-testid="stImage"]', has_text="gradcam · overlay")
    overlay.first.wait_for()
    overlay.first.locator("img").last.wait_for()
    loaded = overlay.first.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert loaded and all(loaded), "the Grad-CAM heatmap and overlay images should load"
    check_page(page)
    shot(page, artifacts, "08-explain-gradcam")
    open_tab(page, "Adversarial")
    adversarial = page.locator('[data-testid="stImage"]', has_text="adversarial:")
    adversarial.first.wait_for(state="visible")
    assert "FGSM" in page.locator('[data-testid="stRadio"]').filter(has_text="Attack").first.inner_text()
    assert page.locator('[data-testid="stImage"]', has_text="perturbation").count() == 1
    verdict = page.locator('[data-testid="stAlert"]', has_text=re.compile("Prediction (flipped|held)"))
    verdict.first.wait_for(state="visible")
    check_page(page, allow_errors=(r"^Prediction flipped",))  # a flipped prediction is shown as an error box
    shot(page, artifacts, "09-explain-fgsm")


def test_predict_a_photo(page, server, artifacts, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    nav(page, "Predict")
    select_option(page, "Model", re.compile(r"^builtin:imagenet"))
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    line = page.locator("h2", has_text=re.compile(r"^\d{1,3}% \S"))
    line.first.wait_for()
    settle(page)
    text = line.first.inner_text().strip()
    m = re.fullmatch(r"(\d{1,3})% (.+)", text)
    assert m and 0 < int(m.group(1)) <= 100, text
    assert re.search(r"cat|tabby|lynx", m.group(2), re.I), f"Chelsea is a tabby cat; the page says {text!r}"
    check_page(page)
    shot(page, artifacts, "10-predict")

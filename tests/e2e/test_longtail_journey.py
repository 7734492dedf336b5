"""The long-tail multi-class journey in a real browser (issue 14): a 3-class set with a long tail (Fashion-MNIST
Sneaker / Sandal / Ankle boot at 300 / 60 / 15 images, written as class folders of PNGs) -> Dataset (the
imbalance shown, the minority share in one format on the card and its chart) -> Train a tiny run -> Evaluate
(the per-class table beside the bars, balanced accuracy) -> Compare (two runs of the same data).

Its own server (the main journeys expect a runs folder with their run only). Screenshots go to the artifacts
folder as `longtail-*.png`."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FASHION_DIR, needs_fashion
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
    wait_until_trained,
)

pytestmark = [needs_fashion]

CLASSES = {"Sneaker": (7, 300), "Sandal": (5, 60), "Ankle boot": (9, 15)}  # name: (Fashion-MNIST label, images)
TRAIN_TIMEOUT_S = 180
journey: dict = {}


def fashion(kind: str) -> np.ndarray:
    """Fashion-MNIST's training images (N, 28, 28) or labels (N,), read from the idx files."""
    name, skip = {"images": ("train-images-idx3-ubyte.gz", 16), "labels": ("train-labels-idx1-ubyte.gz", 8)}[kind]
    with gzip.open(FASHION_DIR / name, "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8)[skip:]
    return raw.reshape(-1, 28, 28) if kind == "images" else raw


def write_longtail(root: Path) -> Path:
    from PIL import Image

    images, labels = fashion("images"), fashion("labels")
    for name, (label, n) in CLASSES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(labels == label)[:n]):
            Image.fromarray(images[i]).save(folder / f"{k:04d}.png")
    return root


@pytest.fixture(scope="module")
def lt_server(tmp_path_factory: pytest.TempPathFactory, session_cache):
    srv = start_server(tmp_path_factory.mktemp("e2e-longtail"), session_cache)
    journey["dataset"] = str(write_longtail(srv.data / "longtail"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(browser):
    p = new_page(browser)
    yield p
    p.context.close()


def test_dataset_page_shows_the_long_tail(lt_server, page, artifacts):
    from engine.metrics.display import percent

    goto(page, lt_server.url, f"?dataset={journey['dataset']}")
    page.wait_for_selector('[data-testid="stMetric"]')
    settle(page)
    assert metric(page, "Classes") == "3"
    assert metric(page, "Task") == "multiclass"
    assert metric(page, "Imbalance ratio") == "20.0 : 1"
    share = percent(15 / 375)
    assert metric(page, "Minority share") == share == "4.00%"
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.locator(".main-svg").first.wait_for()
    assert chart.get_by_text(f"minority · {share}").count() == 1  # the chart writes the share as the card does
    check_page(page)
    shot(page, artifacts, "longtail-01-dataset")


def test_train_a_tiny_run(lt_server, page, artifacts):
    nav(page, "Train")
    page.get_by_text(re.compile(r"^375 images · 3 classes · multiclass")).first.wait_for()
    page.locator('[data-testid="stExpander"] summary', has_text="Stopping").click()
    set_number(page, "Epochs", 2)
    set_number(page, "Batch size", 32)
    shot(page, artifacts, "longtail-02-train-form")
    page.get_by_role("button", name="Start training").click()

    def says_which_count(text: str) -> None:
        if "in this epoch" in text:  # the step count says which count it is
            assert re.search(r"step [\d,]+ of [\d,]+ in this epoch · [\d,]+ of [\d,]+ steps in all", text), text

    journey["run"] = wait_until_trained(page, lt_server.runs, TRAIN_TIMEOUT_S, check=says_which_count)
    check_page(page)
    shot(page, artifacts, "longtail-03-train-completed")


def test_evaluate_shows_the_per_class_table_and_balanced_accuracy(lt_server, page, artifacts):
    from engine.evaluate import evaluate_run
    from engine.metrics.display import format_metric
    from engine.runs.folder import Run

    assert journey.get("run"), "needs the run of test_train_a_tiny_run"
    res = evaluate_run(Run(lt_server.runs / journey["run"]), bootstrap=0)
    nav(page, "Evaluate")
    assert metric(page, "Balanced accuracy") == format_metric("balanced_accuracy", res["balanced_accuracy"])
    table = page.locator('[data-testid="stTable"]').filter(has_text="support").first
    table.wait_for()
    text = table.inner_text()
    for row in res["per_class"]:
        assert row["class"] in text
        assert format_metric("recall", row["recall"]) in text and f"{row['support']:,}" in text
    check_page(page)
    shot(page, artifacts, "longtail-04-evaluate")
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "longtail-04b-evaluate-per-class.png"))  # the bars and their table


def test_compare_two_runs_on_the_same_data(lt_server, page, artifacts):
    from engine.cli.main import main

    assert journey.get("run"), "needs the run of test_train_a_tiny_run"
    code = main(
        ["train", "--dataset", journey["dataset"], "--epochs", "1", "--batch-size", "32", "--seed", "1",
         "--runs-dir", str(lt_server.runs), "--no-progress"]
    )  # fmt: skip
    assert code in (0, None)
    page.reload()
    settle(page)
    page.get_by_role("tab", name="Compare runs", exact=True).click()
    grid = page.locator('[data-testid="stDataFrame"]:visible').first
    grid.wait_for()
    settle(page)
    assert page.get_by_text(re.compile("different task")).count() == 0  # one task: nothing left out
    check_page(page)
    shot(page, artifacts, "longtail-05-compare")

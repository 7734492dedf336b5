"""Editing a multi-label threshold in the real browser (issue 14, item 2): a value typed with select-all into
the table's cell is kept to its 4 decimals, a second edit keeps the first, the cards follow, and saving
writes exactly what is shown to thresholds.json and summary.json.

The run is a folder with stored predictions only (nothing is trained), in a server of this module's own."""

from __future__ import annotations

import json
import re

import pytest

from engine import evaluate as ev
from engine.metrics import display
from tests.e2e.conftest import check_page, goto, metric, new_page, settle, shot, start_server, type_threshold
from tests.test_page_evaluate_multilabel import ml_run


@pytest.fixture(scope="module")
def ml_server(tmp_path_factory: pytest.TempPathFactory, session_cache):
    srv = start_server(tmp_path_factory.mktemp("e2e-ml-thresholds"), session_cache)
    yield srv
    srv.stop()


@pytest.fixture
def page(browser):
    p = new_page(browser)
    yield p
    p.context.close()


def test_typed_thresholds_keep_their_decimals_and_every_view_follows(ml_server, page, artifacts):
    run = ml_run(ml_server.runs)
    goto(page, ml_server.url, f"evaluation?run={run.id}")
    page.get_by_role("tab", name="Thresholds", exact=True).click()
    grid = page.locator('[data-testid="stDataFrame"]:visible').first
    type_threshold(page, grid, 1, "0.8765")
    page.get_by_text(re.compile("edited by hand")).first.wait_for()
    type_threshold(page, grid, 0, "0.1234")  # a second edit must not lose the first
    settle(page)
    check_page(page)
    shot(page, artifacts, "ml-thresholds-edited")
    page.get_by_role("button", name="Save thresholds to run").click()
    page.get_by_text("Saved with the run").filter(visible=True).first.wait_for()  # a hidden tab holds one too
    settle(page)
    saved = json.loads((run.path / "thresholds.json").read_text())
    summary = json.loads((run.path / "summary.json").read_text())
    assert saved["multilabel"][:2] == [0.1234, 0.8765], saved
    assert summary["thresholds"]["multilabel"] == saved["multilabel"]
    assert saved["tuned_on"] == summary["thresholds"]["tuned_on"] == "manual"
    want = ev.report_at(ev.load_predictions(run, "test"), {"multilabel": saved["multilabel"]}, bootstrap=0)
    assert metric(page, "Micro F1") == display.format_metric("micro_f1", want["micro_f1"])
    check_page(page)
    shot(page, artifacts, "ml-thresholds-saved")

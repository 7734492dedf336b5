"""The sweep journey in a real browser: on the Train page, a tiny form config (digits, 40 images, 2 epochs), a
2-trial sweep started from the Sweep section as a background job, followed live until its trials table
shows both trials completed and Optuna's figures are drawn; then a second tab of figures."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from engine.runs.folder import pid_alive
from tests.e2e.conftest import check_page, goto, new_page, set_number, settle, shot, whole_shot

STUDY = "e2e-sweep"
SWEEP_TIMEOUT_S = 300  # two trials of 2 epochs on 40 images, plus the job's start, on a busy 2-core machine


def test_start_a_tiny_sweep_and_see_its_trials_and_figures(browser, server, artifacts):
    page = new_page(browser)
    status_file = server.runs / ".sweeps" / STUDY / "status.json"
    try:
        goto(page, server.url, "training?dataset=builtin:digits")
        page.get_by_role("heading", name="Sweep").wait_for()
        page.locator('[data-testid="stExpander"] summary', has_text="Stopping").click()
        set_number(page, "Training images (0: all)", 40)
        set_number(page, "Epochs", 2)
        new_sweep = page.locator('[data-testid="stExpander"]', has_text="New sweep")
        if not new_sweep.get_by_text("Start sweep").is_visible():
            new_sweep.locator("summary").click()
        set_number(page, "Trials", 2)
        name = page.get_by_label("Study name (optional; an existing one continues)")
        name.fill(STUDY)
        name.press("Enter")
        settle(page)
        check_page(page)
        page.get_by_role("button", name="Start sweep").click()
        settle(page)
        check_page(page)
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text="val balanced accuracy")
        deadline = time.time() + SWEEP_TIMEOUT_S
        while time.time() < deadline:
            status = json.loads(status_file.read_text()) if status_file.exists() else {}
            assert status.get("state") not in ("failed", "stopped"), status
            if status.get("state") == "completed" and status.get("done") == 2:
                break
            page.wait_for_timeout(1000)
        else:
            raise AssertionError(f"the sweep did not complete within {SWEEP_TIMEOUT_S}s: {status}")
        # the panel polls every 2 s while the sweep runs and once more when it has ended
        page.get_by_text(re.compile(r"^2 / 2 trials")).first.wait_for(timeout=30_000)
        settle(page)
        table.first.wait_for()
        assert page.get_by_text(re.compile(r"^Best: trial \d")).count() >= 1
        page.get_by_role("link", name="Evaluate the best trial").wait_for()
        history = page.locator('[data-testid="stPlotlyChart"]').first
        history.wait_for()
        check_page(page)
        whole_shot(page, artifacts, "sweep-01-completed")
        page.get_by_role("tab", name="Slices").click()
        settle(page)
        page.locator('[data-testid="stPlotlyChart"]').nth(3).wait_for(state="visible")
        check_page(page)
        shot(page, artifacts, "sweep-02-slices")
        runs = [json.loads(p.read_text()) for p in server.runs.glob("*/config.json")]
        assert sum((r.get("study") or {}).get("name") == STUDY for r in runs) == 2
    finally:
        status = json.loads(status_file.read_text()) if status_file.exists() else {}
        if pid_alive(status.get("pid")):  # the job runs in its own session: end it with the test
            os.kill(int(status["pid"]), signal.SIGKILL)
        page.context.close()

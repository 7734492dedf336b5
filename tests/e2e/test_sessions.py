"""Faults a real user causes: two browser sessions at once while a run trains, and page reloads (during
training, after and during an epsilon sweep). Each session is its own browser context, as two people (or two
tabs after a reload) are to the server.

Independent of test_journeys.py: the runs used here are started or trained by this module under the shared
server's runs folder, and the long one is stopped (and waited for) before the module ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from engine.runs.folder import Run, pid_alive
from tests.e2e.conftest import check_page, goto, metric, new_page, select_option, set_number, settle, shot

RUN_START_TIMEOUT_S = 90  # a training process starts cold (imports torch) on a shared 2-core machine
STOP_TIMEOUT_S = 20
COFFEE = re.compile(r"espresso|coffee|cup|mug|eggnog", re.I)
CAT = re.compile(r"cat|tabby|lynx", re.I)


# --- helpers -------------------------------------------------------------------------------------------------


def body_text(page) -> str:
    return page.locator('[data-testid="stApp"]').inner_text()


def live_bar(page):
    return page.locator('[data-testid="stProgress"]').filter(
        has_text=re.compile(r"^(Queued|Running|Completed|Stopped)")
    )


def bar_reading(page) -> tuple[str, float, int]:
    """The live panel's text, its progress value and the run's step it names ('N of M steps in all'; 0 before the
    first step). Not 'step N of' the epoch: that one starts again at 0 each epoch, and a reload across an epoch's
    end read as going back (once in CI)."""
    bar = live_bar(page).first
    text = bar.inner_text(timeout=30_000)
    now = float(bar.locator('[role="progressbar"]').get_attribute("aria-valuenow") or 0)
    step = re.search(r"([\d,]+) of [\d,]+ steps in all", text)
    return text, now, int(step.group(1).replace(",", "")) if step else 0


def status_of(run: Run) -> dict:
    return json.loads((run.path / "status.json").read_text())


def sweep_chart(page):
    return page.locator('[data-testid="stPlotlyChart"]', has_text="Accuracy vs epsilon")


def open_robustness(page) -> None:
    page.get_by_role("tab", name="Robustness", exact=True).click()
    page.get_by_label("Epsilons", exact=True).wait_for(state="visible")


def stop_run(run: Run) -> None:
    """Ask the run to stop, wait until it has; kill its process if it ignores the request."""
    from engine.runs.folder import RunError
    from engine.train import jobs

    try:
        jobs.stop(run)
    except RunError:
        pass  # already ended
    deadline = time.time() + STOP_TIMEOUT_S
    while time.time() < deadline and run.status()["display_state"] in ("running", "queued"):
        time.sleep(0.2)
    pid = run.raw_status().get("pid")
    if pid and run.status()["display_state"] in ("running", "queued") and pid_alive(int(pid)):
        os.kill(int(pid), signal.SIGKILL)


# --- fixtures ------------------------------------------------------------------------------------------------


class Runs:
    def __init__(self, live: Run, done: Run) -> None:
        self.live, self.done = live, done


@pytest.fixture(scope="module")
def runs(server, session_cache: Path):
    """`live`: a long tiny run training in the background (its own process, as the Train page starts one), with
    a best checkpoint already; `done`: a completed one-epoch run, trained here while `live` starts up. `live`
    is stopped (and waited for) when the module ends, or earlier by a test that no longer needs it."""
    from engine.config import RunConfig
    from engine.train import jobs
    from tests.pagetools import train_tiny

    cfg = RunConfig(
        dataset="builtin:digits",
        model="small_cnn",
        strategy="scratch",
        image_size=8,
        epochs=300,
        batch_size=32,
        precision="fp32",
    ).validate()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # leave the other core to the server and the browser
        live = jobs.start(cfg, server.runs)
    try:
        done = train_tiny(server.runs, "builtin:digits", 8, session_cache)
        deadline = time.time() + RUN_START_TIMEOUT_S
        while not (live.checkpoints / "best.safetensors").exists():
            st = live.status()
            assert st["display_state"] in ("queued", "running"), (
                f"the run ended: {st}\n{(live.path / 'train.log').read_text()}"
            )
            assert time.time() < deadline, f"no best checkpoint after {RUN_START_TIMEOUT_S}s: {st}"
            time.sleep(0.3)
        yield Runs(live, done)
    finally:
        stop_run(live)
        assert live.status()["display_state"] not in ("running", "queued"), "the long run should be stopped"


# --- the tests -----------------------------------------------------------------------------------------------


def test_two_sessions_at_once_while_a_run_trains(server, browser, artifacts, runs, tmp_path):
    live_run = runs.live
    from PIL import Image
    from skimage import data

    from engine.data import quick_stats

    step0 = status_of(live_run)["step"]
    photos = {}
    for name, img in (("chelsea", data.chelsea()), ("coffee", data.coffee())):
        photos[name] = tmp_path / f"{name}.png"
        Image.fromarray(img).save(photos[name])
    a, b = new_page(browser), new_page(browser)
    try:
        # A: the Dataset page's counts
        expected = quick_stats("builtin:digits")
        goto(a, server.url, "?dataset=builtin:digits")  # the Dataset page is the default page: its URL is /
        a.wait_for_selector('[data-testid="stMetric"]')
        settle(a)
        assert metric(a, "Images") == f"{expected['num_images']:,}"
        assert metric(a, "Classes") == str(len(expected["classes"]))
        check_page(a)
        # B: Explain on the run that is still training (it has a best checkpoint)
        goto(b, server.url, f"explanations?run={live_run.id}")
        overlay = b.locator('[data-testid="stImage"]', has_text="gradcam · overlay")
        overlay.first.locator("img").last.wait_for()
        loaded = overlay.first.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded), "the Grad-CAM heatmap and overlay should load"
        assert live_run.id in body_text(b)
        check_page(b)
        shot(b, artifacts, "s02-b-explain-training-run")
        # both on Predict with the ImageNet model, uploads interleaved
        for p in (a, b):
            goto(p, server.url, "prediction")
            select_option(p, "Model", re.compile(r"^builtin:imagenet"))
        a.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photos["chelsea"]))
        b.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photos["coffee"]))
        said = {}
        for name, p, want in (("chelsea", a, CAT), ("coffee", b, COFFEE)):
            line = p.locator("h2", has_text=re.compile(r"^\d{1,3}% \S"))
            line.first.wait_for()
            settle(p)
            said[name] = line.first.inner_text().strip()
            m = re.fullmatch(r"(\d{1,3})% (.+)", said[name])
            assert m and 0 < int(m.group(1)) <= 100, said[name]
            assert want.search(m.group(2)), f"{name}: the page says {said[name]!r}"
            assert p.locator("h2", has_text=re.compile(r"^\d{1,3}% \S")).count() == 1, "one upload, one prediction"
            check_page(p)
        # no upload leaks into the other session, even after the other one predicted
        text_a, text_b = body_text(a), body_text(b)
        assert "chelsea.png" in text_a and "coffee.png" not in text_a and not COFFEE.search(said["chelsea"])
        assert "coffee.png" in text_b and "chelsea.png" not in text_b and not CAT.search(said["coffee"])
        shot(a, artifacts, "s03-a-predict-chelsea")
        shot(b, artifacts, "s04-b-predict-coffee")
    finally:
        a.context.close()
        b.context.close()
    st = status_of(live_run)
    assert st["state"] == "running" and st["step"] > step0, (
        f"the run should keep training meanwhile: {st}, was step {step0}"
    )


def test_reload_during_training_reattaches_to_the_run(server, browser, artifacts, runs):
    live_run = runs.live
    page = new_page(browser)
    try:
        goto(page, server.url, f"training?run={live_run.id}")
        live_bar(page).first.wait_for()
        text, before, step_before = bar_reading(page)
        assert text.startswith("Running"), text
        assert live_run.id in body_text(page)
        check_page(page)
        page.reload()
        settle(page)
        live_bar(page).first.wait_for()
        text, after, step_after = bar_reading(page)
        assert text.startswith("Running"), f"after the reload the panel says {text!r}"
        assert live_run.id in body_text(page) and f"run={live_run.id}" in page.url
        assert after >= before and step_after >= step_before, (before, step_before, after, step_after)
        check_page(page)
        shot(page, artifacts, "s06-train-after-reload")
    finally:
        page.context.close()


def test_reload_after_and_during_a_sweep(server, browser, artifacts, runs):
    from engine.runs.sweeps import SWEEP_DIR

    stop_run(runs.live)  # the sessions above needed it training; the sweeps need the CPU (this ends it for the module)
    done_run = runs.done
    page = new_page(browser)
    folder = done_run.path / SWEEP_DIR
    try:
        goto(page, server.url, f"explanations?run={done_run.id}")
        open_robustness(page)
        assert sweep_chart(page).count() == 0, "no sweep has run for this run yet"
        set_number(page, "Epsilons", "0.02, 0.05")
        set_number(page, "Validation images", 20)
        page.get_by_role("button", name="Run the sweep").click()
        sweep_chart(page).first.locator(".main-svg").first.wait_for()
        settle(page)
        check_page(page)
        assert len(list(folder.glob("*.json"))) == 1

        page.reload()  # a new session: the saved sweep comes back with its settings, nothing clicked
        settle(page)
        open_robustness(page)
        sweep_chart(page).first.locator(".main-svg").first.wait_for()
        assert page.get_by_label("Epsilons", exact=True).input_value() == "0, 0.02, 0.05"
        assert page.get_by_label("Validation images", exact=True).input_value() == "20"
        assert "settings above differ" not in body_text(page)
        check_page(page)
        shot(page, artifacts, "s08-sweep-after-reload")

        # a longer sweep, reloaded while it runs
        set_number(page, "Validation images", 200)
        page.get_by_role("radiogroup", name="Attack").get_by_text("PGD (iterated)").click()  # the open tab's
        steps = page.get_by_role("spinbutton", name="PGD steps")  # (a hidden tab's widgets are not in the a11y tree)
        steps.fill("20")  # waits until the rerun after the radio click has enabled it
        steps.press("Enter")
        settle(page)
        page.get_by_role("button", name="Run the sweep").click()
        page.locator('[data-testid="stProgress"]', has_text="Pgd eps").first.wait_for(timeout=20_000)
        page.reload()
        settle(page)
        open_robustness(page)
        check_page(page)
        shot(page, artifacts, "s09-reload-during-sweep")
        shown = page.get_by_label("Epsilons", exact=True).input_value()
        assert shown == "0, 0.02, 0.05", "the settings come back from the sweep saved before"
        sweep_chart(page).first.locator(".main-svg").first.wait_for()  # a whole saved sweep, not a half one
        # whatever the interrupted script left, the folder holds whole sweeps only (atomic writes)
        for path in folder.glob("*"):
            rec = json.loads(path.read_text())
            assert path.suffix == ".json" and len(rec["result"]["accuracy"]) == len(rec["params"]["eps"]) == 3
            assert rec["result"]["n"] == rec["params"]["limit"]
    finally:
        page.context.close()


# the order a cold open and its statistics report them in (app/common/scans.py, engine/data/cache.py)
STAGES = ("opening", "reading headers", "decoding", "hashing", "computing statistics")


def _scan_position(page) -> tuple[int, float]:
    """Where the dataset scan's bar stands: (stage index, percent), comparable across a reload."""
    bar = page.locator('[data-testid="stProgress"]').first
    text = bar.inner_text().strip().lower()
    stage = next((i for i, s in enumerate(STAGES) if text.startswith(s)), 0)
    return stage, float(bar.locator('[role="progressbar"]').get_attribute("aria-valuenow") or 0)


def test_reload_during_a_long_scan_continues_it(server, browser, artifacts):
    """The first open of a large folder is a task of the server, not of the page: a reload attaches to it
    and shows its progress where it was, instead of decoding from zero."""
    import numpy as np
    from PIL import Image

    n = 8000
    folder = server.data / "scan-reload"  # the data dir is always an allowed root
    rng = np.random.default_rng(0)
    for i in range(n):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"c{i % 2}" / f"{i}.png")
    page = new_page(browser)
    try:
        page.goto(f"{server.url}/?dataset={folder}")
        busy = re.compile(r"^(Opening|Reading|Decoding|Hashing|Computing)")
        bar = page.locator('[data-testid="stProgress"]').filter(has_text=busy)
        bar.first.wait_for()
        page.wait_for_timeout(400)
        before = _scan_position(page)
        shot(page, artifacts, "s10-scan-before-reload")
        page.reload()
        bar.first.wait_for()
        after = _scan_position(page)
        assert after >= before, f"after the reload the scan stands at {after}, before it stood at {before}"
        settle(page, timeout_ms=180_000)
        assert metric(page, "Images") == f"{n:,}"
        check_page(page)
    finally:
        page.context.close()

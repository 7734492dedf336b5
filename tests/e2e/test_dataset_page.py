"""The Dataset page in a real browser: switching datasets shows only the new one's progress (issue 13).

Streamlit leaves a rerun's old elements on screen, faded, until the run replaces them; the page used to
draw the opening's progress bar above the previous dataset's figures, so for the whole decode two datasets'
numbers were on screen at once. A MutationObserver records every state the tab goes through, so a moment
where the progress bar and any metric card or chart are both in the page fails the test, however short.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import check_page, goto, metric, settle, shot, start_server

# Runs in every document the tab loads: the progress texts shown, and whether a metric card or a chart was ever
# in the page (faded or not) while a progress bar was.
WATCH = """
window.__loupe = {together: [], texts: []};
new MutationObserver(() => {
    const bar = document.querySelector('[data-testid="stProgress"]');
    if (!bar) return;
    const text = bar.innerText.trim();
    if (text && !window.__loupe.texts.includes(text)) window.__loupe.texts.push(text);
    const old = document.querySelector('[data-testid="stMetric"], [data-testid="stPlotlyChart"]');
    if (old && window.__loupe.together.length < 5) window.__loupe.together.push(old.innerText.slice(0, 80));
}).observe(document, {childList: true, subtree: true, characterData: true});
"""
FILES = 3000  # enough that the decode takes seconds on a busy machine (and uses the worker pool)


@pytest.fixture
def fresh_server(tmp_path, session_cache):
    srv = start_server(tmp_path / "srv", session_cache)  # remembers builtin:digits: the first page opens it
    yield srv
    srv.stop()


def many_small_images(root, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("negatives" if i % 4 else "positives")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_switching_datasets_shows_only_the_new_ones_progress(browser, fresh_server, artifacts):
    folder = fresh_server.data / "faces"  # the data dir is always an allowed root
    many_small_images(folder, FILES)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    try:
        goto(page, fresh_server.url)
        assert metric(page, "Images") == "1,797"  # digits, remembered from the last visit
        page.add_init_script(WATCH)
        page.reload()  # the watcher runs from the start of the document
        settle(page)
        assert metric(page, "Images") == "1,797"
        page.locator('[data-testid="stButtonGroup"] button', has_text="Server path").click()
        settle(page)
        box = page.get_by_label("Path on the server (press Enter to open)", exact=True).and_(page.locator("input"))
        box.fill(str(folder))
        box.press("Enter")
        page.locator('[data-testid="stProgress"]').first.wait_for()
        shot(page, artifacts, "d01-switching-while-the-new-dataset-opens")
        settle(page, timeout_ms=180_000)
        assert metric(page, "Images") == f"{FILES:,}"
        check_page(page)
        seen = page.evaluate("window.__loupe")
        assert not seen["together"], f"the previous dataset's figures were on screen during the opening: {seen}"
        found = re.compile(rf"^Opening {re.escape(str(folder))}: {FILES:,} files found")
        assert any(found.match(t) for t in seen["texts"]), f"no file count while opening: {seen['texts']}"
        shot(page, artifacts, "d02-switched")
    finally:
        ctx.close()

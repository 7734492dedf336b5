"""The label queue in a real browser (issue 17, part 2): a CSV dataset of real digits with a pool of unlabelled
images and a tiny real run on it -> the Dataset page's Label queue -> label the first image with one click: the
pool count drops and the "Labelled in Loupe" count rises -> undo: both come back. Its own server (the shared one's
runs are counted by another journey). Screenshots `queue*.png` in the artifacts folder."""

from __future__ import annotations

from tests.e2e.conftest import check_page, goto, metric, shot, start_server, wait_for_metric
from tests.pagetools import train_tiny
from tests.test_labels_pool import digits_csv


def test_label_an_image_from_the_queue_then_undo(browser, tmp_path, session_cache, artifacts):
    srv = start_server(tmp_path / "srv", session_cache)
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(120_000)
    try:
        root = digits_csv(srv.data / "digits-pool", labelled=90, pool=12, classes=3)
        run = train_tiny(srv.runs, str(root), image_size=8, session_cache=session_cache)
        goto(page, srv.url, f"?dataset={root}")
        page.get_by_role("heading", name="Label queue").scroll_into_view_if_needed()
        check_page(page)
        assert metric(page, "Unlabelled pool") == "12" and metric(page, "Labelled in Loupe") == "0"
        assert page.get_by_role("combobox", name="Ranked by run").input_value() == run.id
        shot(page, artifacts, "queue1-before")
        first = page.locator('[class*="st-key-dataset-queue-img"] button').first
        label = first.inner_text().strip()
        first.click()
        wait_for_metric(page, "Unlabelled pool", "11")
        assert metric(page, "Labelled in Loupe") == "1"
        assert page.get_by_text(f"as {label}.").count() == 1  # "Labelled img/N.png as L."
        check_page(page)
        page.get_by_role("heading", name="Label queue").scroll_into_view_if_needed()
        shot(page, artifacts, "queue2-labelled")
        page.get_by_role("button", name="Undo last label").click()
        wait_for_metric(page, "Unlabelled pool", "12")
        assert metric(page, "Labelled in Loupe") == "0"
        check_page(page)
        page.get_by_role("heading", name="Label queue").scroll_into_view_if_needed()
        shot(page, artifacts, "queue3-undone")
    finally:
        page.context.close()
        srv.stop()

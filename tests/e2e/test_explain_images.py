"""Explain in a real browser: moving from an image predicted as one class to one predicted as another, then
touching any widget, crashed the page ("This app has encountered an error", `TypeError: '<=' not supported
between 'int' and 'str'` in the methods panel) and took the tabs away until a reload (issue 13, item 6).

The browser keeps the label a select box shows ("3 (predicted)") and sends it back with the next interaction;
once the image changed, that label named no option of the new image's selector. The AppTest in
tests/test_page_explain.py imitates that; this test lets Chromium do it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.e2e.conftest import check_page, goto, settle, shot, start_server
from tests.pagetools import train_tiny


def _two_images_predicted_differently(run) -> tuple[int, int]:
    from engine.data import open_dataset
    from engine.data.pixels import to_tensor
    from engine.predict.run_model import load_run_model, predict_tensor

    rm = load_run_model(run)
    ds = open_dataset("builtin:digits", image_size=8)
    test = np.asarray(ds.splits["test"])
    pred = predict_tensor(rm, to_tensor(ds.images[test])).argmax(1)
    return int(test[0]), int(test[np.flatnonzero(pred != pred[0])[0]])


def set_index(page, value: int) -> None:
    box = page.get_by_role("spinbutton", name="Dataset index")
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def test_switching_to_an_image_predicted_otherwise_then_touching_widgets(
    page, tmp_path: Path, session_cache: Path, artifacts
):
    base = tmp_path / "srv"
    run = train_tiny(base / "runs", "builtin:digits", 8, session_cache)
    a, b = _two_images_predicted_differently(run)
    srv = start_server(base, session_cache)
    try:
        goto(page, srv.url, f"explanations?run={run.id}&image={a}")
        page.get_by_text("saliency · overlay").first.wait_for()
        check_page(page)
        set_index(page, b)
        check_page(page)
        shot(page, artifacts, "x01-explain-second-image")
        for option in ("Absolute: how much each pixel matters", "Both: red for, blue against"):  # touch, twice
            page.get_by_text(option).click()
            settle(page)
            check_page(page)
        assert page.get_by_role("tab", name="Robustness").count() == 1, "the tabs are still there"
        shown = page.get_by_role("combobox", name="Explain the class").input_value()
        assert shown.endswith("(predicted)"), f"the class to explain follows the new image; it shows {shown!r}"
        set_index(page, a)  # and back, then the adversarial tab's widgets
        page.get_by_role("tab", name="Adversarial").click()
        page.locator('[data-testid="stCheckbox"]').filter(has_text="Targeted").first.click()
        settle(page)
        set_index(page, b)
        page.get_by_role("tab", name="Adversarial").click()
        page.get_by_text("PGD (iterated)").first.click()  # the Adversarial tab's (Robustness has one too)
        settle(page)
        check_page(page, allow_errors=(r"^Prediction flipped",))
        shot(page, artifacts, "x02-explain-after-switches")
    finally:
        srv.stop()

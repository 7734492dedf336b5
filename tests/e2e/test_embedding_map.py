"""The Dataset page's embedding map in a real browser (issue 17, part 4): hovering a point shows its image, a lasso
selection shows the selected images under the map, and another colouring redraws the map without the old selection.

The map is a Streamlit component (an iframe with its own plotly.js): the hover image is an <img> inside that iframe,
and the selection travels back to Python as the component's value. builtin:digits (1,797 points, every one with a
hover image), PCA (instant). Screenshots `map*.png` in the artifacts folder."""

from __future__ import annotations

import re

from tests.e2e.conftest import check_page, goto, settle, shot

FRAME = 'iframe[title*="embedding_map"]'
SELECTED = re.compile(r"^(\d[\d,]*) images? selected")
# where Plotly draws points of trace `c`, in the iframe's pixels
POINTS = """(gd, [c, n]) => { const t = gd._fullData[c], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    return Array.from({length: Math.min(n, t.x.length)}, (_, i) => [xa._offset + xa.l2p(t.x[i]), ya._offset + ya.l2p(t.y[i])]); }"""
PLOT_AREA = (
    "gd => { const l = gd._fullLayout; return [l.xaxis._offset, l.yaxis._offset, l.xaxis._length, l.yaxis._length]; }"
)
SELECTED_ON_PLOT = "gd => gd._fullData.reduce((n, t) => n + (t.selectedpoints ? t.selectedpoints.length : 0), 0)"


def choose(page, label: str, typed: str) -> None:
    """Pick a selectbox option by typing its start, as a keyboard user does."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.scroll_into_view_if_needed()
    box.locator('[role="combobox"]').first.click()
    page.keyboard.type(typed)
    page.keyboard.press("Enter")
    settle(page)


def drawn_map(page, not_figure: str | None = None):
    """The map's iframe element, its frame and the id of the figure it shows (once Plotly has drawn it)."""
    element = page.locator(FRAME).first
    element.wait_for()
    frame = element.content_frame
    frame.locator("#map[data-figure]").wait_for()
    if not_figure:
        page.wait_for_function(
            f"f => document.querySelector('{FRAME}').contentDocument.getElementById('map').dataset.figure !== f",
            arg=not_figure,
        )
    element.scroll_into_view_if_needed()
    return element, frame, frame.locator("#map").get_attribute("data-figure")


def hover_until_image(page, element, frame, trace: int) -> None:
    """Move the mouse over the points of `trace` until the hover card shows an image."""
    box = element.bounding_box()
    for x, y in frame.locator("#map").evaluate(POINTS, [trace, 20]):
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.wait_for_timeout(100)
        if frame.locator("#tip img").is_visible():
            return
    raise AssertionError("no hover image appeared over 20 points")


def test_hover_shows_the_image_and_a_lasso_shows_the_selection(server, page, artifacts):
    goto(page, server.url, "?dataset=builtin:digits")
    choose(page, "Projection", "PCA")
    page.get_by_text("Draw the embedding map").click()
    settle(page)
    check_page(page)
    element, frame, figure = drawn_map(page)

    hover_until_image(page, element, frame, trace=0)
    tip = frame.locator("#tip")
    img = tip.locator("img")
    assert img.get_attribute("src").startswith("data:image/png;base64,")  # an 8x8 digit, lossless
    assert img.evaluate("i => i.complete && i.naturalWidth === 8 && i.getBoundingClientRect().width === 96")
    name, label = tip.inner_text().split("\n")[:2]
    assert re.fullmatch(r"digits#\d+", name) and label == "0", (name, label)
    shot(page, artifacts, "map1-hover")

    # a lasso over the upper-left of the plot: the points inside are listed under the map with their images
    box = element.bounding_box()
    x0, y0, w, h = frame.locator("#map").evaluate(PLOT_AREA)
    left, top = box["x"] + x0 + 4, box["y"] + y0 + 4
    corners = [(left + w * 0.55, top), (left + w * 0.55, top + h * 0.55), (left, top + h * 0.55), (left, top + 1)]
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in corners:
        page.mouse.move(x, y, steps=5)
    page.mouse.up()
    selection = page.locator(".st-key-dataset-map-selection")
    selection.get_by_text(SELECTED).wait_for()
    settle(page)
    count = int(SELECTED.match(selection.get_by_text(SELECTED).inner_text()).group(1).replace(",", ""))
    assert count == frame.locator("#map").evaluate(SELECTED_ON_PLOT) > 0  # what the map shows selected
    assert selection.locator("img").count() == min(count, 48)
    assert frame.locator("#map").get_attribute("data-figure") == figure  # the rerun kept the map and its lasso
    check_page(page)
    element.scroll_into_view_if_needed()
    shot(page, artifacts, "map2-lasso")
    selection.scroll_into_view_if_needed()
    shot(page, artifacts, "map3-selected-images")

    # another colouring: a new figure, the old selection gone with it, the hover still showing images
    choose(page, "Colour by", "split")
    element, frame, _ = drawn_map(page, not_figure=figure)
    assert selection.get_by_text("Nothing selected on the map.").is_visible()
    hover_until_image(page, element, frame, trace=1)
    assert frame.locator("#tip .label").inner_text().endswith(" · train")
    check_page(page)
    shot(page, artifacts, "map4-split")

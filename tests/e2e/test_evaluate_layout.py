"""The Evaluate page in a real browser at the app's default width (1400 px): what AppTest cannot see.

- No card is cut off: a metric's value, label and interval badge show whole (Streamlit ellipsizes them
  when the card is too narrow: "95% CI 0.729–…").
- The metric cards follow the threshold slider: after a move by keyboard they show the numbers counted at
  the slider's value, straight from the run's predictions file.
- The DET and ROC charts are drawn on the fixed ranges they declare (the ROC once spanned -50%..150%, the
  DET's tick labels were crammed into a sliver), and their tick labels do not overlap.
- The Compare table needs no horizontal scroll: its right-hand columns (HTER) are on screen.
- Each gallery image has its own Explain link right under it, its file name shown whole.

Its own server and runs (two tiny fashion-binary runs), so it does not touch the journeys' shared server.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.conftest import needs_fashion
from tests.e2e.conftest import check_page, move_threshold, open_tab, settle, shot, start_server
from tests.pagetools import train_tiny

pytestmark = needs_fashion

# every element of `root` that the browser draws cut (ellipsis or hidden overflow) because it is too narrow
CUT = """root => [...root.querySelectorAll('*')].filter(e => {
    const s = getComputedStyle(e);
    const clips = s.textOverflow === 'ellipsis' || s.overflowX === 'hidden' || s.overflow === 'hidden';
    return clips && e.innerText && e.innerText.trim() && e.scrollWidth > e.clientWidth + 1;
}).map(e => e.innerText.trim())"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory, session_cache):
    server = start_server(tmp_path_factory.mktemp("eval-layout"), session_cache)
    try:
        runs = [train_tiny(server.runs, "builtin:fashion-binary", 28, session_cache) for _ in range(2)]
        server.run_id = runs[-1].id
        server.run_path = runs[-1].path
        yield server
    finally:
        server.stop()


def open_evaluate(page, srv) -> None:
    page.goto(f"{srv.url}/evaluation?run={srv.run_id}")
    settle(page)
    page.locator('[data-testid="stMetric"]').first.wait_for()
    settle(page)
    check_page(page)


def cut_texts(page, selector: str) -> list[str]:
    out = []
    for el in page.locator(selector).all():
        if el.is_visible():
            out += el.evaluate(CUT)
    return out


def card_value(page, label: str, nth: int = 0) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )
    return card.nth(nth).locator('[data-testid="stMetricValue"]').inner_text().strip()


def by_hand(srv, t: float) -> dict[str, str]:
    with np.load(srv.run_path / "predictions" / "test.npz") as z:
        labels, score = np.asarray(z["labels"]), np.asarray(z["probs"])[:, 1]
    accept, pos, neg = score >= t, labels == 1, labels == 0
    far = (accept & neg).sum() / neg.sum()
    frr = (~accept & pos).sum() / pos.sum()
    acc = ((accept & pos).sum() + (~accept & neg).sum()) / len(labels)
    return {
        "HTER": f"{(far + frr) / 2 * 100:.2f}%",
        "Accuracy": f"{acc * 100:.2f}%",
        "Balanced accuracy": f"{(1 - (far + frr) / 2) * 100:.2f}%",
    }


def plot(page, title: str):
    return page.locator('[data-testid="stPlotlyChart"]').filter(has_text=title).locator(".js-plotly-plot").first


def drawn_ranges(chart) -> tuple[list[float], list[float]]:
    return chart.evaluate("p => [p._fullLayout.xaxis.range, p._fullLayout.yaxis.range]")


def overlapping_ticks(chart, axis: str) -> list[str]:
    """Tick labels of `axis` ('x' or 'y') whose boxes overlap their neighbour's."""
    return chart.evaluate(
        """(p, axis) => {
            const boxes = [...p.querySelectorAll('.' + axis + 'tick text')].map(t => [t.textContent, t.getBoundingClientRect()])
                .filter(([, r]) => r.width > 0)
                .sort((a, b) => axis === 'x' ? a[1].left - b[1].left : a[1].top - b[1].top);
            const out = [];
            for (let i = 1; i < boxes.length; i++) {
                const [pa, a] = boxes[i - 1], [pb, b] = boxes[i];
                const hit = axis === 'x' ? a.right > b.left + 0.5 : a.bottom > b.top + 0.5;
                if (hit) out.push(pa + ' / ' + pb);
            }
            return out;
        }""",
        axis,
    )


def test_cards_and_badges_show_whole_and_follow_the_slider(page, srv, artifacts):
    open_evaluate(page, srv)
    assert not cut_texts(page, '[data-testid="stMetric"]'), "cut off on a card"
    shot(page, artifacts, "eval-layout-01-cards")
    open_tab(page, "Threshold")
    t, thumb = move_threshold(page, 60)
    for label, want in by_hand(srv, t).items():
        assert card_value(page, label) == want, (label, t)
    assert card_value(page, "HTER", 1) == card_value(page, "HTER")  # the Threshold tab's card agrees
    assert not cut_texts(page, '[data-testid="stMetric"]'), "cut off on a card after the move"
    check_page(page)
    thumb.scroll_into_view_if_needed()
    shot(page, artifacts, "eval-layout-02-threshold-moved")


def test_det_and_roc_are_drawn_on_their_fixed_ranges_with_readable_ticks(page, srv, artifacts):
    open_evaluate(page, srv)
    open_tab(page, "Threshold")
    det, roc = plot(page, "DET curve"), plot(page, "ROC curve")
    det.wait_for()
    (dx, dy), (rx, ry) = drawn_ranges(det), drawn_ranges(roc)
    assert rx == pytest.approx([0, 1]) and ry == pytest.approx([0, 1]), (rx, ry)
    assert dx == pytest.approx(dy) and dx == pytest.approx([-3.2905, 2.5758], abs=1e-3), (dx, dy)
    for chart in (det, roc):
        assert not overlapping_ticks(chart, "x") and not overlapping_ticks(chart, "y")
    box = det.bounding_box()
    assert box["width"] > 300 and box["height"] >= 380  # a chart, not a sliver
    det.scroll_into_view_if_needed()  # the page scrolls inside the app: bring the charts into the shot
    shot(page, artifacts, "eval-layout-03-det-roc")


def test_compare_table_needs_no_horizontal_scroll(page, srv, artifacts):
    open_evaluate(page, srv)
    open_tab(page, "Compare runs")
    grid = page.locator('[data-testid="stDataFrame"]').last.locator(".dvn-scroller").first
    grid.wait_for()
    sizes = grid.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert sizes[0] <= sizes[1] + 1, f"the table scrolls sideways ({sizes[0]} px of columns in {sizes[1]} px)"
    shot(page, artifacts, "eval-layout-04-compare")


def test_each_gallery_image_has_its_link_right_under_it(page, srv, artifacts):
    open_evaluate(page, srv)
    open_tab(page, "Top losses")
    images = page.locator('[data-testid="stImage"]').filter(visible=True)
    images.first.wait_for()
    settle(page)  # the gallery's items stream in: an image can be drawn before the link under it
    n = images.count()
    assert n > 1
    for i in range(n):
        img = images.nth(i)
        item = img.locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
        links = item.locator('[data-testid="stPageLink-NavLink"]').filter(visible=True)  # (a hidden twin has no size)
        expect(links, f"image {i}: one link in its block").to_have_count(1, timeout=10_000)  # (retries while it draws)
        a, b = img.bounding_box(), links.first.bounding_box()
        assert 0 <= b["y"] - (a["y"] + a["height"]) < 90 and abs(b["x"] - a["x"]) < 40  # under its image
        text = links.first.locator('[data-testid="stMarkdownContainer"]').inner_text().strip()  # (not the icon's name)
        assert re.fullmatch(r"#\d+", text), text  # a built-in's image: "#<index>"
    assert not cut_texts(page, '[data-testid="stPageLink-NavLink"]'), "a link's file name is cut"
    images.first.scroll_into_view_if_needed()
    shot(page, artifacts, "eval-layout-05-gallery")

"""A fresh server's very first request is a deep link: the page opens, with no "Page not found" dialog.

Streamlit treats the `pages/` folder next to streamlit_app.py as a legacy multipage app until the first
st.navigation call, so this only shows on a server that has served nothing yet: it gets its own server.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import check_page, goto, shot, start_server


@pytest.fixture
def fresh_server(tmp_path, session_cache):
    srv = start_server(tmp_path / "srv", session_cache)
    yield srv
    srv.stop()


def test_deep_link_on_a_fresh_server(page, fresh_server, artifacts):
    goto(page, fresh_server.url, "evaluation")
    page.wait_for_selector('h1:has-text("Evaluate")')
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Loupe')  # the frame (sidebar) is drawn too
    check_page(page)  # fails on the "Page not found" dialog
    assert page.url.split("?")[0].endswith("/evaluation")
    shot(page, artifacts, "00-deep-link-fresh-server")

"""A fresh server (a new process) answers its very first request like any later one: the right page, drawn in
its frame with the app's navigation, no "Page not found" dialog, no list of modules, no reload of the tab.

Streamlit routes this app by its `pages/` folder on every request (streamlit_app.py is `/`, each script in
`pages/` is served under its file name). What these tests guard against is a first request that takes another
route than the later ones: with st.navigation, a fresh server answered its first request through the legacy
pages/-folder router (a deep link got "Page not found" and the sidebar listed every module of `pages/`) until
some session had called st.navigation. So each test starts its own server: its first request is the process's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import PAGE_TITLES, check_page, goto, nav_titles, settle, shot, start_server
from tests.pagetools import train_tiny


@pytest.fixture
def fresh_server(tmp_path, session_cache):
    srv = start_server(tmp_path / "srv", session_cache)
    yield srv
    srv.stop()


# Runs in every document the tab loads, before the app's own scripts: records whether Streamlit's pages/-folder
# menu or a dialog ever appears, even for a moment (a first script run once showed them, then redrew the page).
WATCH = """
window.__loupeSeen = {menu: false, dialogs: []};
new MutationObserver(() => {
    if (document.querySelector('[data-testid="stSidebarNav"]')) window.__loupeSeen.menu = true;
    for (const d of document.querySelectorAll('[role="dialog"]')) {
        const text = d.innerText.trim();
        if (text && !window.__loupeSeen.dialogs.includes(text)) window.__loupeSeen.dialogs.push(text);
    }
}).observe(document, {childList: true, subtree: true});
"""


def watch(page) -> list[str]:
    """Start watching the tab; returns the URL of every document it loads from now on (one per visit, two if
    the app reloads itself)."""
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    page.add_init_script(WATCH)
    return loads


def check_first_visit(page, loads: list[str]) -> None:
    """One document, and at no moment Streamlit's pages/-folder menu or a dialog ("Page not found")."""
    assert len(loads) == 1, f"the tab loaded {len(loads)} documents: {loads}"
    seen = page.evaluate("window.__loupeSeen")
    assert not seen["menu"], "Streamlit's pages/-folder menu (a list of modules) was shown"
    assert not seen["dialogs"], f"a dialog was shown: {seen['dialogs']}"


def check_frame(page) -> None:
    """The page is drawn in the app's frame: the sidebar with Loupe's panel and exactly the five pages (none of
    Streamlit's own pages/-folder menu, which would name the modules), and no dialog or error."""
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Loupe')
    assert nav_titles(page) == PAGE_TITLES
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0, "Streamlit's pages/-folder menu is shown"
    check_page(page)  # fails on the "Page not found" dialog


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1].split("?")[0]


def test_deep_link_on_a_fresh_server(page, fresh_server, artifacts):
    goto(page, fresh_server.url, "evaluation")
    page.wait_for_selector('h1:has-text("Evaluate")')
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Loupe')  # the frame (sidebar) is drawn too
    check_page(page)  # fails on the "Page not found" dialog
    assert page.url.split("?")[0].endswith("/evaluation")
    shot(page, artifacts, "00-deep-link-fresh-server")


def test_first_request_to_the_home_page_on_a_fresh_server(page, fresh_server, artifacts):
    loads = watch(page)
    goto(page, fresh_server.url)
    page.wait_for_selector('h1:has-text("Dataset")')
    check_frame(page)
    check_first_visit(page, loads)
    assert path_of(page.url) == "/"
    assert "dataset=builtin" in page.url  # the remembered dataset, written into the URL
    shot(page, artifacts, "00-home-fresh-server")


def test_deep_link_to_a_run_on_a_fresh_server_and_a_reload(page, tmp_path: Path, session_cache: Path, artifacts):
    base = tmp_path / "srv"
    run = train_tiny(base / "runs", "builtin:digits", 8, session_cache)  # trained here: the server sees no request
    srv = start_server(base, session_cache)
    try:
        loads = watch(page)
        goto(page, srv.url, f"evaluation?run={run.id}")
        page.wait_for_selector('h1:has-text("Evaluate")')
        check_frame(page)
        check_first_visit(page, loads)
        assert path_of(page.url) == "/evaluation" and f"run={run.id}" in page.url
        page.get_by_text("Accuracy").first.wait_for()  # the run's metrics, not the "no runs yet" stop
        assert run.id in page.locator('[data-testid="stSidebar"]').inner_text()
        shot(page, artifacts, "00-deep-link-run-fresh-server")
        page.reload()
        settle(page)
        page.wait_for_selector('h1:has-text("Evaluate")')
        check_frame(page)
        assert path_of(page.url) == "/evaluation" and f"run={run.id}" in page.url
        page.get_by_text("Accuracy").first.wait_for()
    finally:
        srv.stop()

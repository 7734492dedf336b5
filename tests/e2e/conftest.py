"""Real-browser fixtures: a `streamlit run` server on a free port and headless Chromium via Playwright.

The server is a separate process, so it gets its LOUPE_* folders explicitly (a temp dir per test session;
decoded caches in the suite's shared session cache). Chromium is Debian's (`/usr/bin/chromium`, or
`LOUPE_CHROMIUM`); Playwright's own browser download is never used. When no Chromium (or no Playwright)
is installed, every e2e test skips with the reason.

Helpers used by the journeys:
- `settle(page)`: wait until the app has finished its script run (no fixed sleeps);
- `check_page(page, allow_errors=...)`: fail on a Streamlit exception box, an unexpected error box, or
  the "Page not found" modal;
- `nav_titles(page)`: the page titles in the sidebar's navigation;
- `shot(page, name)`: a full-page screenshot into the artifacts folder (`LOUPE_TEST_ARTIFACTS`, default
  `test-artifacts/e2e/`); `whole_shot(page, name)`: the same, top to bottom of everything the app drew.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.runs.folder import pid_alive

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LOUPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("LOUPE_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "e2e")
START_TIMEOUT_S = 60
RUN_TIMEOUT_MS = 60_000  # one script run (a page, a click) under load

EXCEPTION = '[data-testid="stException"]'
ALERT_ERROR = '[data-testid="stAlertContentError"]'
DIALOG = '[role="dialog"]'
NAV_LINK = '[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]'  # the app's own page links
PAGE_TITLES = ["Dataset", "Train", "Evaluate", "Explain", "Predict"]  # the sidebar's navigation, in order


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (`pip install -r requirements.txt`)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (`apt-get install chromium`; `make setup` tries it)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_no_browser()
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"e2e: {reason}"))


# --- the server ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path, cache: Path, dataset: str = "builtin:digits"):
        self.base = base
        self.runs, self.data = base / "runs", base / "data"
        self.state_file = self.data / ".loupe_state.json"
        self.data.mkdir(parents=True, exist_ok=True)
        # a remembered dataset, as after an earlier visit: the first page opens this small one
        self.state_file.write_text(json.dumps({"dataset": dataset}), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "streamlit.log"
        env = {
            **os.environ,
            "LOUPE_RUNS_DIR": str(self.runs),
            "LOUPE_DATA_DIR": str(self.data),
            "LOUPE_STATE_FILE": str(self.state_file),
            "LOUPE_CACHE_DIR": str(cache),
            "PYTHONUNBUFFERED": "1",
        }
        streamlit = Path(sys.executable).with_name("streamlit")
        cmd = [
            str(streamlit),
            "run",
            "streamlit_app.py",
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own process group: training jobs die with it
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not answer /_stcore/health within {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop_jobs(self, grace_s: float = 5.0) -> None:
        """End the training jobs this server started: they run in their own sessions on purpose (they
        outlive the app), so the server's process group does not include them. A STOP file first, then
        SIGKILL for whatever is still alive after `grace_s`."""
        pids = []
        for status in self.runs.glob("*/status.json"):
            try:
                st = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            if st.get("state") in ("queued", "running") and st.get("pid"):
                (status.parent / "STOP").touch()
                pids.append(int(st["pid"]))
        deadline = time.time() + grace_s
        while pids and time.time() < deadline:
            pids = [p for p in pids if pid_alive(p)]
            time.sleep(0.2)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.stop_jobs()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


def start_server(base: Path, cache: Path, **kw) -> Server:
    return Server(base, cache, **kw)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, session_cache: Path, request: pytest.FixtureRequest):
    srv = start_server(tmp_path_factory.mktemp("e2e-server"), session_cache)
    failed_before = request.session.testsfailed
    yield srv
    srv.stop()
    if request.session.testsfailed > failed_before:
        print(f"\n--- streamlit server log ({srv.log_path}) ---\n{srv.log()}", file=sys.stderr)


# --- the browser ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    return page


@pytest.fixture
def page(browser):
    p = new_page(browser)
    yield p
    p.context.close()


# --- helpers ---------------------------------------------------------------------------------------------


def settle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the app is connected and its script (and any fragment) is not running."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app) return false;
            const s = app.getAttribute('data-test-script-state');
            return s === 'notRunning' && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]');
        }""",
        timeout=timeout_ms,
    )


def goto(page, base_url: str, path: str = "") -> None:
    page.goto(f"{base_url}/{path.lstrip('/')}")
    settle(page)


def check_page(page, allow_errors: tuple[str, ...] = ()) -> None:
    """Fail on a Streamlit exception box, an error box whose text matches none of `allow_errors`
    (regexes), or a dialog such as "Page not found"."""
    exc = page.locator(EXCEPTION)
    if exc.count():
        pytest.fail(f"Streamlit exception on {page.url}:\n" + "\n---\n".join(exc.all_inner_texts()))
    for text in page.locator(ALERT_ERROR).all_inner_texts():
        if not any(re.search(a, text) for a in allow_errors):
            pytest.fail(f"error box on {page.url}: {text}")
    dialogs = [t for t in page.locator(DIALOG).all_inner_texts() if t.strip()]
    if dialogs:
        pytest.fail(f"unexpected dialog on {page.url}: {dialogs}")


def nav(page, title: str) -> None:
    """Go to a page through the sidebar navigation, as a user would (same browser session)."""
    page.locator(NAV_LINK, has_text=re.compile(rf"{title}\s*$")).first.click()
    page.wait_for_selector(f'h1:has-text("{title}")')
    settle(page)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    settle(page)


def type_threshold(page, grid, row: int, value: str) -> None:
    """Open the threshold cell of `row` (its label cell, one to the right, Enter), select all its text and type
    `value`, then Enter: what a user does with the keyboard."""
    header, height = 36, 35
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    grid_box = grid.bounding_box()  # where it is now: the lines above it change with the edits
    page.mouse.click(grid_box["x"] + 20, grid_box["y"] + header + row * height + height / 2)
    page.wait_for_timeout(300)  # the grid takes the focus
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(300)
    page.keyboard.press("Enter")
    page.wait_for_function(  # the cell's editor is open and has the focus
        "() => ['INPUT', 'TEXTAREA'].includes(document.activeElement && document.activeElement.tagName)"
    )
    page.keyboard.press("Control+A")
    page.keyboard.type(value, delay=60)  # as a person types (keys sent at once can outrun the cell's editor)
    page.keyboard.press("Enter")
    settle(page)


def move_threshold(page, presses: int):
    """On Evaluate's Threshold tab: move the slider `presses` steps with the keyboard, away from the middle,
    and wait until the caption above the cards says the moved value. Returns (the value, the slider's thumb)."""
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").first
    thumb, shown = slider.get_by_role("slider", name="Threshold"), slider.locator('[data-testid="stSliderThumbValue"]')
    start = shown.inner_text()
    thumb.focus()
    for _ in range(presses):
        thumb.press("ArrowRight" if float(start) < 0.5 else "ArrowLeft")
    page.wait_for_function("([el, v]) => el.innerText.trim() !== v", arg=[shown.element_handle(), start])
    settle(page)
    t = float(shown.inner_text())
    caption = page.get_by_text(re.compile(r"^At threshold \d\.\d{4}: moved by hand")).first
    caption.wait_for()
    page.wait_for_function("([el, v]) => el.innerText.includes(v)", arg=[caption.element_handle(), f"{t:.4f}"])
    settle(page)
    return t, thumb


def wait_until_trained(page, runs: Path, timeout_s: float, check=None) -> str:
    """After Start on the Train page: follow the live panel's progress bar until it reads Completed (failing on
    Failed/Stopped or after `timeout_s`; `check(text)` asserts on each progress text seen), then check that the
    server's only run completed. Returns that run's id."""
    bar = page.locator('[data-testid="stProgress"]').filter(has_text=re.compile(r"^(Queued|Running|Completed)"))
    bar.first.wait_for()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = bar.first.inner_text(timeout=30_000)
        if text.startswith("Completed"):
            break
        assert not text.startswith(("Failed", "Stopped")), text
        if check:
            check(text)
        page.wait_for_timeout(500)
    else:
        pytest.fail(f"the run did not complete within {timeout_s}s")
    settle(page)
    done = [p for p in runs.iterdir() if (p / "status.json").exists()]
    assert len(done) == 1 and json.loads((done[0] / "status.json").read_text())["state"] == "completed"
    return done[0].name


def nav_titles(page) -> list[str]:
    """The page titles the sidebar's navigation offers, in order (each link's text ends with its title)."""
    page.locator(NAV_LINK).first.wait_for()  # st.page_link's component is loaded lazily
    return [t.strip().split("\n")[-1] for t in page.locator(NAV_LINK).all_inner_texts()]


def shot(page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# the height of everything the app drew: the page scrolls inside Streamlit's main block, not the document
CONTENT_HEIGHT = """() => Math.max(document.body.scrollHeight,
    ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')].map(e => e.scrollHeight))"""
TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def whole_shot(page, artifacts: Path, name: str, max_height: int = 12_000) -> Path:
    """A screenshot of the whole page, top to bottom, at the page's width: the viewport is made as tall as
    the content for the shot (a full-page screenshot alone shows only the first screen, since Streamlit
    scrolls its main block rather than the document), then set back."""
    size = page.viewport_size
    height = min(max_height, max(size["height"], int(page.evaluate(CONTENT_HEIGHT))))
    page.set_viewport_size({"width": size["width"], "height": height})
    try:
        page.evaluate(TWO_FRAMES)  # laid out (and the charts redrawn) at the new height
        settle(page)
        return shot(page, artifacts, name)
    finally:
        page.set_viewport_size(size)


def metric(page, label: str) -> str:
    """The value shown on the st.metric card labelled `label`."""
    card = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )
    return card.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def select_option(page, label: str, option: re.Pattern | str) -> None:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.locator('[role="combobox"]').first.click()
    page.get_by_role("option", name=option).first.click()
    settle(page)


def set_number(page, label: str, value) -> None:
    """Type into the input labelled `label`, press Enter, and check the page kept the value."""
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)
    assert box.input_value() == str(value), f"{label}: the page shows {box.input_value()!r}, not {value!r}"


def wait_for_metric(page, label: str, value: str, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the st.metric card labelled `label` shows `value` (after a click's rerun has drawn it)."""
    page.wait_for_function(
        """([label, value]) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(card =>
            card.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === label &&
            card.querySelector('[data-testid="stMetricValue"]')?.innerText.trim() === value)""",
        arg=[label, value],
        timeout=timeout_ms,
    )
    settle(page)

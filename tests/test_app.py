"""The app shell: it starts on the Dataset page, every page draws the frame (the sidebar with the five pages,
dataset, run and device), and `pages/` holds exactly the page scripts the navigation offers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import needs_fashion

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
# (label, URL path) of the sidebar's links; the Dataset page is the home page, "/"
NAVIGATION = [
    ("Dataset", ""),
    ("Train", "training"),
    ("Evaluate", "evaluation"),
    ("Explain", "explanations"),
    ("Predict", "prediction"),
]
PAGE_TITLES = {
    "pages/dataset.py": "Dataset",
    "pages/training.py": "Train",
    "pages/evaluation.py": "Evaluate",
    "pages/explanations.py": "Explain",
    "pages/prediction.py": "Predict",
}


def expected_device() -> str:
    """What the sidebar must show: the GPU's name, or the CPU and its cores."""
    import torch

    from engine.device import describe_device

    text = describe_device()
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in text
    else:
        assert text.startswith(f"CPU ({os.cpu_count()} cores")
    return text


def run_app(**params: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    return at.run()


def sidebar_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.sidebar.markdown)


def test_app_runs_and_sidebar_shows_device():
    at = run_app(dataset="builtin:digits")
    assert not at.exception
    assert at.title[0].value == "Dataset"
    side = sidebar_text(at)
    assert expected_device() in side
    assert "builtin:digits" in side
    assert "none yet" in side  # no run selected


def test_reruns_keep_the_frame():
    """Regression: a rerun draws the frame again (once, with st.navigation over a folder named pages/, a page
    whose url_path equalled its file name ran bare on reruns)."""
    at = run_app(dataset="builtin:digits")
    at.run()
    assert not at.exception
    assert expected_device() in sidebar_text(at)
    assert at.title[0].value == "Dataset"


def test_sidebar_lists_the_five_pages_under_their_urls():
    at = run_app(dataset="builtin:digits", run="20260101-resnet18")
    links = [link.proto for link in at.sidebar.get("page_link")]
    assert [(link.label, link.page) for link in links] == NAVIGATION
    # each link carries the active dataset and run, so the next page opens on them
    assert all(link.query_string == "dataset=builtin%3Adigits&run=20260101-resnet18" for link in links)


@pytest.mark.parametrize("script", list(PAGE_TITLES))
def test_every_page_draws_the_frame(script: str):
    at = run_app(dataset="builtin:digits")
    at.switch_page(script).run()
    assert not at.exception, at.exception
    assert at.title[0].value == PAGE_TITLES[script]
    assert expected_device() in sidebar_text(at) and "builtin:digits" in sidebar_text(at)
    assert [link.proto.label for link in at.sidebar.get("page_link")] == [label for label, _ in NAVIGATION]


def test_pages_folder_holds_only_the_page_scripts():
    """Streamlit serves every script in pages/ as a page (its URL is the file name): no helper may live there."""
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py")) == sorted(PAGE_TITLES)


def test_sidebar_shows_run_from_query_param():
    at = run_app(dataset="builtin:digits", run="20260101-resnet18")
    assert not at.exception
    assert "20260101-resnet18" in sidebar_text(at)
    assert at.query_params["run"] == "20260101-resnet18"


def test_saved_dataset_is_offered_on_the_next_visit():
    state_file = Path(os.environ["LOUPE_STATE_FILE"])
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"dataset": "builtin:digits"}))
    at = run_app()  # no ?dataset=
    assert not at.exception
    assert "builtin:digits" in sidebar_text(at)
    assert at.query_params["dataset"] == "builtin:digits"
    assert {m.label: m.value for m in at.metric}["Images"] == "1,797"


def test_damaged_state_file_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch):
    from app.common import state

    path = Path(os.environ["LOUPE_STATE_FILE"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert state.read_state() == {}
    assert state.write_state(dataset="builtin:digits")
    assert json.loads(path.read_text()) == {"dataset": "builtin:digits"}
    assert not list(path.parent.glob("*.tmp"))  # written via a temp file, nothing left behind


def test_a_first_visit_offers_the_builtins_and_opens_none():
    """No ?dataset= and nothing remembered: the page offers a choice (issue 13: it used to start decoding the
    70,000 images of Fashion-MNIST before the user chose anything)."""
    from app.common import scans

    scans.forget(lambda key: True)
    at = run_app()
    assert not at.exception and not at.error
    assert "none chosen yet" in sidebar_text(at)
    assert scans.peek(("open", "builtin:fashion-mnist")) is None  # no decode started
    assert "dataset" not in at.query_params
    assert all("dataset=" not in link.proto.query_string for link in at.sidebar.get("page_link"))
    assert at.selectbox(key="dataset.builtin").value is None and not at.metric


@pytest.mark.slow
@needs_fashion
def test_choosing_fashion_mnist_on_a_first_visit_opens_it():
    at = run_app()
    at.selectbox(key="dataset.builtin").set_value("fashion-mnist").run()
    assert not at.exception
    assert not at.error
    assert "builtin:fashion-mnist" in sidebar_text(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "70,000" and metrics["Classes"] == "10"

"""The app shell: it starts, routes to the Dataset page and its sidebar shows dataset, run and device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import needs_fashion

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


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
    """Regression: with a folder named pages/, a page whose url_path equals its file name ran bare on reruns."""
    at = run_app(dataset="builtin:digits")
    at.run()
    assert not at.exception
    assert expected_device() in sidebar_text(at)
    assert at.title[0].value == "Dataset"


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


@pytest.mark.slow
@needs_fashion
def test_app_opens_on_fashion_mnist_by_default():
    at = run_app()
    assert not at.exception
    assert not at.error
    assert "builtin:fashion-mnist" in sidebar_text(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "70,000" and metrics["Classes"] == "10"

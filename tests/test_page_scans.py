"""app/common/scans.py: long dataset work belongs to the server process, so sessions and reloads attach to it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.common import scans
from tests.conftest import make_class_folders
from tests.pagetools import open_page


@pytest.fixture(autouse=True)
def no_kept_tasks():
    scans.forget(lambda key: True)
    yield
    scans.forget(lambda key: True)


def test_a_second_request_attaches_to_the_running_task_and_work_runs_once():
    gate, calls = threading.Event(), []

    def work(progress):
        calls.append(1)
        progress(3, 10, "decoding")
        gate.wait(10)
        return "decoded"

    first = scans.start(("open", "x"), work)
    second = scans.start(("open", "x"), work)  # another session, or the same page after a reload
    assert second is first and not first.finished.is_set()
    first.finished.wait(0.2)
    assert (first.done, first.total, first.stage) == (3, 10, "decoding")  # what both pages draw
    gate.set()
    assert scans.result(("open", "x"), work, "Opening x") == "decoded"
    assert scans.result(("open", "x"), work, "Opening x") == "decoded"  # kept for later sessions
    assert calls == [1]


def test_a_failed_task_raises_once_then_retries():
    from engine.errors import DatasetError

    attempts = []

    def work(progress):
        attempts.append(1)
        if len(attempts) == 1:
            raise DatasetError("The folder 'x' has no images.")
        return "fixed"

    with pytest.raises(DatasetError, match="no images"):
        scans.result(("open", "x"), work, "Opening x")
    assert scans.result(("open", "x"), work, "Opening x") == "fixed"
    assert len(attempts) == 2


def test_forget_drops_finished_tasks_of_that_spec_only():
    scans.result(("open", "a"), lambda p: 1, "a")
    scans.result(("stats", "a", "fp", 8), lambda p: 2, "a")
    scans.result(("open", "b"), lambda p: 3, "b")
    scans.forget(lambda key: key[1] == "a")
    assert scans.result(("open", "a"), lambda p: 10, "a") == 10  # re-scanned
    assert scans.result(("open", "b"), lambda p: 30, "b") == 3  # kept


def test_dataset_page_decodes_a_folder_once_across_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import app.common.loaders
    import engine.data.dataset as dataset_module

    root = make_class_folders(tmp_path / "shapes", {"a": 12, "b": 12})
    real, opened = dataset_module.open_dataset, []

    def counting_open(spec, **kw):
        opened.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr(app.common.loaders, "open_dataset", counting_open)
    first = open_page("pages/dataset.py", "Dataset", dataset=str(root))
    second = open_page("pages/dataset.py", "Dataset", dataset=str(root))  # a reload: a new session
    for at in (first, second):
        assert not at.exception and not at.error
        assert {m.label: m.value for m in at.metric}["Images"] == "24"
    assert opened == [str(root)]

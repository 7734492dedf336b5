"""The run picker the Evaluate and Explain pages share (`app/common/run_picker.py`), on a real tiny run and a
queued one: which run is shown, which one is active afterwards, and the page's stop when there is no run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import RunConfig
from engine.runs.folder import Run
from engine.train.jobs import prepare_run
from tests.pagetools import TINY, open_page, train_tiny

# (page script, title, what the page needs of a run, in the picker's words)
PAGES = [
    ("pages/evaluation.py", "Evaluate", "stored predictions"),
    ("pages/explanations.py", "Explain", "saved weights"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Run:
    return train_tiny(tmp_path_factory.mktemp("picker-runs"), "builtin:digits", 8, session_cache)


@pytest.fixture
def runs(trained: Run, monkeypatch: pytest.MonkeyPatch) -> dict[str, Run]:
    """The trained run, and a newer one that is queued (no weights, no predictions: not usable yet)."""
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(trained.path.parent))
    queued = prepare_run(
        RunConfig(dataset="builtin:digits", image_size=8, name="queued one", **TINY), trained.path.parent
    )
    yield {"trained": trained, "queued": queued}
    shutil.rmtree(queued.path)


def run_box(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Run")


def picked(at: AppTest) -> str:
    return run_box(at).value


@pytest.mark.parametrize("script,title,needs", PAGES)
def test_the_active_run_is_shown_and_stays_active(runs, script: str, title: str, needs: str):
    at = open_page(script, title, runs["trained"])
    assert picked(at) == runs["trained"].id
    assert at.query_params["run"] == runs["trained"].id
    options = run_box(at).options  # as shown: the generated id names the model and the dataset already
    assert options == [runs["trained"].id] and "small_cnn-digits" in options[0]


@pytest.mark.parametrize("script,title,needs", PAGES)
def test_an_active_run_not_usable_yet_stays_active(runs, script: str, title: str, needs: str):
    """The Train page follows the active run: a page that cannot show it shows another, and leaves it active."""
    queued = runs["queued"]
    at = open_page(script, title, queued)
    assert picked(at) == runs["trained"].id
    assert any(f"The active run `{queued.id}` has no {needs} yet" in c.value for c in at.caption)
    assert at.query_params["run"] == queued.id
    assert queued.id in "\n".join(m.value for m in at.sidebar.markdown)


@pytest.mark.parametrize("script,title,needs", PAGES)
def test_without_a_usable_active_run_the_shown_one_becomes_active(runs, script: str, title: str, needs: str):
    for active in (None, Run(runs["trained"].path.parent / "20200101-000000-deleted")):
        at = open_page(script, title, active)
        assert picked(at) == runs["trained"].id
        assert at.query_params["run"] == runs["trained"].id
        assert not any("has no" in c.value for c in at.caption)


@pytest.mark.parametrize("script,title,needs", PAGES)
def test_no_usable_run_stops_the_page_with_a_link_to_train(script: str, title: str, needs: str):
    at = open_page(script, title)
    assert "No trained run" in at.info[0].value
    links = [link.proto for link in at.main.get("page_link")]
    assert [(link.label, link.page) for link in links] == [("Go to Train", "training")]
    assert not at.selectbox and not at.tabs


def test_a_pickers_label_says_what_the_name_does_not_and_stays_short(tmp_path: Path):
    """Issue 13 follow-up: the label was `id · model · full dataset path`, cut off in the select box. A
    generated id already holds the model and the dataset's short name; a chosen name gets both, short."""
    from app.common.run_picker import run_label, short_dataset

    folder = str(tmp_path / "data" / "faces")
    generated = prepare_run(RunConfig(dataset=folder, image_size=8, **TINY), tmp_path / "runs")
    named = prepare_run(RunConfig(dataset=folder, image_size=8, name="baseline", **TINY), tmp_path / "runs")
    assert run_label(generated) == generated.id and "small_cnn-faces-" in generated.id
    assert run_label(named) == "baseline · small_cnn · faces"
    assert short_dataset("builtin:fashion-binary") == "fashion-binary" and short_dataset(folder + "/") == "faces"


@pytest.mark.parametrize("script,title,needs", PAGES)
def test_the_sidebar_names_the_run_shown_and_its_dataset(runs, script: str, title: str, needs: str):
    """Issue 13 follow-up: on a run page the sidebar named the dataset chosen on the Dataset page (not the one
    the run was trained on, which the page shows) and the run active before the page chose one ("none yet"
    while the page showed its fallback)."""
    at = open_page(script, title, None, dataset="builtin:fashion-binary")  # chosen elsewhere; the run is on digits
    side = "\n".join(m.value for m in at.sidebar.markdown)
    assert picked(at) == runs["trained"].id
    assert f"**Run**  \n`{runs['trained'].id}`  \n" in side, side
    assert "**Dataset**  \n`builtin:digits` (the run's)" in side, side
    assert "The Dataset and Train pages use `builtin:fashion-binary`." in side
    assert at.query_params["dataset"] == "builtin:fashion-binary"  # the choice itself is kept

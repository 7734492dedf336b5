"""Scaffolding shared by the page tests: a tiny real run trained in seconds, and a page opened in AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import RunConfig
from engine.runs.folder import Run
from engine.train.fit import fit
from engine.train.jobs import prepare_run

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
TINY = dict(model="small_cnn", strategy="scratch", epochs=1, batch_size=32, train_limit=300, lr=1e-2, precision="fp32")


def train_tiny(root: Path, dataset: str, image_size: int, session_cache: Path | None = None) -> Run:
    """A real one-epoch run (the decode cache shared with the session when `session_cache` is given)."""
    with pytest.MonkeyPatch.context() as mp:
        if session_cache is not None:
            mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        cfg = RunConfig(dataset=dataset, image_size=image_size, **TINY).validate()
        run = prepare_run(cfg, root)
        fit(cfg, run, log=lambda m: None)
    return run


def open_page(page: str, title: str, run: Run | None = None, **params: str) -> AppTest:
    """The app, switched to `page` (e.g. 'pages/prediction.py'), with `?run=` and other query params set."""
    at = AppTest.from_file(str(APP), default_timeout=90)
    if run is not None:
        at.query_params["run"] = run.id
    at.query_params.update(params)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.title[0].value == title
    return at

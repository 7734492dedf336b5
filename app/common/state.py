"""Which dataset and run are active: kept in the URL, the session and a small state file.

- `st.query_params` (`?dataset=...&run=...`) makes a view shareable and survives a reload.
- `st.session_state` carries the choice across page switches (switching pages clears the query
  parameters, so every run writes them back).
- The state file (`LOUPE_STATE_FILE`, default `<data dir>/.loupe_state.json`) remembers the last
  dataset that opened, so the next visit is offered it. With none of the three (a first visit) no
  dataset is chosen: the Dataset page offers the choice, and decodes nothing until it is made.
  The file is written atomically and only on change;
  failing to write it never breaks the page.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import streamlit as st

from engine.data.sources.archive import data_dir

DEFAULT_DATASET = "builtin:fashion-mnist"
DATASET_PARAM, RUN_PARAM = "dataset", "run"
_SESSION = {DATASET_PARAM: "loupe.active_dataset", RUN_PARAM: "loupe.active_run"}

log = logging.getLogger(__name__)


# --- the state file (no Streamlit here) -----------------------------------------------------------


def state_file() -> Path:
    """`LOUPE_STATE_FILE`, else `.loupe_state.json` in the data dir (`LOUPE_DATA_DIR`, default ./data)."""
    env = os.environ.get("LOUPE_STATE_FILE")
    return Path(env).expanduser() if env else data_dir() / ".loupe_state.json"


def read_state() -> dict:
    """The saved state; {} when there is none or it cannot be read (a damaged file is not fatal)."""
    try:
        data = json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(**updates: object) -> bool:
    """Merge `updates` into the state file atomically (temp file + os.replace); False if it failed."""
    state = read_state()
    if all(state.get(k) == v for k, v in updates.items()):
        return True
    state.update(updates)
    path = state_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("Could not save the app state to %s: %s", path, e)
        tmp.unlink(missing_ok=True)
        return False
    return True


# --- the active dataset and run --------------------------------------------------------------------


def _from_url(param: str) -> str | None:
    value = st.query_params.get(param)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _activate(param: str, value: str | None) -> None:
    st.session_state[_SESSION[param]] = value
    if value is None:
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != value:
        st.query_params[param] = value


def chosen_dataset() -> str | None:
    """The dataset the user chose: the URL's, else this session's, else the one that opened on the last
    visit; None on a first visit, where the Dataset page offers a choice instead of opening one."""
    spec = _from_url(DATASET_PARAM) or st.session_state.get(_SESSION[DATASET_PARAM]) or read_state().get("dataset")
    if spec:
        _activate(DATASET_PARAM, spec)
    return spec or None


def active_dataset() -> str:
    """The dataset spec in use: the chosen one, else the default (what the Train form starts from).

    The default is not written to the URL or the session: it is not a choice, and a reload or a link
    carrying it would open it (decoding 70,000 images) before the user chose anything."""
    return chosen_dataset() or DEFAULT_DATASET


def set_active_dataset(spec: str) -> None:
    """Make `spec` the active dataset (URL + session); `remember_dataset` saves it once it opens."""
    _activate(DATASET_PARAM, spec.strip())


def remember_dataset(spec: str) -> bool:
    """Offer `spec` on the next visit (call once it has opened without error)."""
    return write_state(dataset=spec)


def active_run() -> str | None:
    """The selected run id (`?run=`), or this session's, or None."""
    run = _from_url(RUN_PARAM) or st.session_state.get(_SESSION[RUN_PARAM])
    if run:
        _activate(RUN_PARAM, run)
    return run or None


def set_active_run(run_id: str | None) -> None:
    _activate(RUN_PARAM, run_id)

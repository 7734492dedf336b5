"""Loupe: the app's entry point (`streamlit run streamlit_app.py`).

Sets the page config, draws the sidebar every page shares, and routes to the pages in `pages/`.
To add a page, add one line to PAGES.
"""

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `engine` and `pages` import from here however the app is started
    sys.path.insert(0, str(ROOT))

from app.common.ui import render_sidebar  # noqa: E402

# One line per page. Give each an explicit url_path that differs from its file name: because the
# folder is called pages/, Streamlit first sees a legacy pages-directory app in which pages/dataset.py
# is the page "dataset"; a st.Page with that same url_path would be run bare (without this frame and
# its sidebar) on AppTest reruns and on a server's first request.
PAGES = [
    st.Page("pages/dataset.py", title="Dataset", icon=":material/dataset:", url_path="data", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="training"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:", url_path="evaluation"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:", url_path="explanations"),
    st.Page("pages/predict.py", title="Predict", icon=":material/online_prediction:", url_path="prediction"),
]


def _legacy_deep_link() -> bool:
    """True on the one script run where Streamlit's legacy pages/-folder mode has already answered a deep link
    (e.g. /evaluation) with "Page not found".

    Streamlit decides once per server process, before any of our code runs, that a `pages/` folder next to the
    main script means a legacy multipage app; the first script run of a fresh server therefore goes through
    its pages/-folder router, which knows none of our url_paths, sends "Page not found" to the browser and
    runs this script as the main page. The st.navigation call below switches the process to normal routing
    for good, so a reload of the same URL is then served correctly, without the dialog.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if not PagesManager.uses_pages_directory or ctx is None:
        return False
    pm = ctx.pages_manager
    return bool(pm.intended_page_name) and not pm.intended_page_script_hash


st.set_page_config(page_title="Loupe", page_icon="🔎", layout="wide")
legacy_deep_link = _legacy_deep_link()  # read before st.navigation, which ends the legacy mode
page = st.navigation(PAGES)
if legacy_deep_link:
    st.html("<script>window.location.reload()</script>", unsafe_allow_javascript=True)
    st.stop()
render_sidebar()
page.run()

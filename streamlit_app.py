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

from pages.ui import render_sidebar  # noqa: E402

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

st.set_page_config(page_title="Loupe", page_icon="🔎", layout="wide")
page = st.navigation(PAGES)
render_sidebar()
page.run()

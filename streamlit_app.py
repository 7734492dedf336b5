"""Loupe: the app's entry point (`streamlit run streamlit_app.py`) and its home page, `/`: the Dataset page.

Routing is Streamlit's pages/-folder navigation, the same on every request: this script is the page at `/`,
and every script in `pages/` is a page whose URL is its file name (`pages/evaluation.py` -> `/evaluation`).
Nothing calls st.navigation (which would switch a server to other routing after its first request), and each
page draws the shared frame itself (`draw_frame`: page config, sidebar and navigation). To add a page, add
its script to `pages/` and a line to `app.common.sidebar.NAV`.

Why `/` draws the Dataset page here rather than sending the browser on to `/dataset` with st.switch_page:
that redirect would leave `/` in the browser's history, and Back would land on it and be sent forward again.
"""

from app.common.sidebar import draw_frame
from pages.dataset import main as dataset_page  # its script (served at /dataset too) draws only when run itself

draw_frame()
dataset_page()

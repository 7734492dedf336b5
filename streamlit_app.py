"""Loupe: the app's entry point (`streamlit run streamlit_app.py`) and its home page, `/`: the Dataset page.

Routing is Streamlit's pages/-folder navigation, used on every request: this script is the page at `/`,
and every script in `pages/` is a page whose URL is its file name (`pages/evaluation.py` ->
`/evaluation`). Nothing calls st.navigation, so a fresh server's first request is routed exactly like
every later one. Each page draws the shared frame itself (`draw_frame`: page config and sidebar, with the
navigation); to add a page, add its script to `pages/` and a line to `app.common.sidebar.NAV`.
"""

from app.common.sidebar import draw_frame
from pages.dataset import main as dataset_page  # the Dataset page, also served at /dataset

draw_frame()
dataset_page()

"""The app's pages and the Streamlit-side helpers they share (UI only: the ML lives in `engine/`).

`streamlit_app.py` lists the pages with `st.navigation`, so the files here are not auto-discovered:
helper modules (`state`, `ui`, `charts`) sit beside the page scripts without becoming pages.
"""

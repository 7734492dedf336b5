"""The Streamlit side of Loupe: helpers the page scripts in `pages/` use (UI only; the ML lives in `engine/`).

`common/` is shared by several pages; each other sub-package belongs to the page of the same name.
"""

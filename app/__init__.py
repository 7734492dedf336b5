"""The Streamlit side of Loupe: helpers the page scripts in `pages/` use (UI only; the ML lives in `engine/`).

`common/` is shared by several pages; each other sub-package belongs to one page (`dataset/`, `train/`,
`evaluate/`, `explain/`, `predict/`). The map of the whole project is ARCHITECTURE.md.
"""

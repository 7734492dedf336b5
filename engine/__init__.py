"""Loupe's engine: all the machine learning, usable from the CLI, notebooks, tests and the app.

Never imports streamlit (see DESIGN.md): pages call into this package, not the reverse.
"""

__version__ = "0.1.0"

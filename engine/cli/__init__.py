"""`python -m engine ...`: one module per command group, the parser and error policy in `main`."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"main": ["build_parser", "main"]})

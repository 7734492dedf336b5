"""`python -m engine ...`: one module per command group (`data`, `train`, `evaluate`, `explain`, `predict`),
the parser and error policy in `main`, and two leaves every group may import: `progress` (tqdm bars) and
`flags` (the flags several subcommands share)."""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"main": ["build_parser", "main"]})

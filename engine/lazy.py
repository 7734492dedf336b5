"""Lazy re-exports for the engine's package facades (PEP 562 module `__getattr__`), as timm does it.

`from engine.train import run_training` keeps working while `import engine.train.jobs` (used by the CLI's `stop`
and by pages) does not pull in torch, timm and the whole training stack: a facade imports the module
that defines a name only when the name is first used. Inside the engine, modules import from the
defining module directly, so the import graph stays exact and acyclic (tests/test_structure.py checks
it, and counts a facade built here as importing nothing at import time).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, list[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`, exporting `table`'s names from their modules.

    `table` maps a module, named relative to `package`, to the public names it defines: `"fit"` is
    `package.fit`, `"runs.folder"` is `package.runs.folder`, and a leading dot climbs as in a relative
    import (`"..errors"` from `engine.models` is `engine.errors`, for a name defined outside the package)."""
    where = {
        name: importlib.util.resolve_name(module if module.startswith(".") else f".{module}", package)
        for module, names in table.items()
        for name in names
    }

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)  # cached: the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        submodules = {module.split(".")[0] for module in table if not module.startswith(".")}
        return sorted(set(where) | submodules)

    return __getattr__, __dir__, sorted(where)

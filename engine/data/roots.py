"""Which server folders the app may open when a user types a path: the allowed data roots.

The app is a web page; anyone who can reach it can type a path into the Dataset page. Without a
limit that is a file browser for the whole disk (and an oracle for which files exist), so typed
paths must resolve inside one of these roots:

- env `LOUPE_DATA_ROOTS`: folders separated by `os.pathsep` (':' on Linux/macOS, ';' on Windows).
  When set it *replaces* the defaults below, so an operator can narrow access as well as widen it.
- otherwise: the current working directory, the user's home and the built-in dataset folder
  (`/usr/share/datasets`). A default that is the filesystem root itself (an app started from `/`,
  or run as a user whose home is `/`) is left out, since it would allow everything.
- always: the Loupe data dir (`LOUPE_DATA_DIR`, default `./data`), where uploads are unpacked;
  without it the app could not open its own uploads.

The check uses real path resolution (`Path.resolve`), so `..` segments and symlinks are followed
before the comparison: a link inside a root that points outside is refused like the target itself.
A path outside the roots is refused before anything says whether it exists.

The command line is not restricted: a CLI user already has a shell with their own permissions.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.data.sources.archive import data_dir
from engine.errors import DatasetError

ENV = "LOUPE_DATA_ROOTS"
BUILTIN_DATASETS_DIR = Path("/usr/share/datasets")


def _resolve(path: str | Path) -> Path:
    return Path(os.path.expanduser(str(path))).resolve(strict=False)


def allowed_roots() -> list[Path]:
    """The resolved folders a typed path may lie in, without duplicates, in a stable order."""
    raw = os.environ.get(ENV, "")
    if raw.strip():
        wanted = [_resolve(p.strip()) for p in raw.split(os.pathsep) if p.strip()]
    else:
        defaults = [Path.cwd(), Path.home(), BUILTIN_DATASETS_DIR]
        wanted = [p for p in map(_resolve, defaults) if p != Path(p.anchor)]
    roots: list[Path] = []
    for root in [data_dir(), *wanted]:
        if root not in roots:
            roots.append(root)
    return roots


def check_allowed(path: str | Path) -> Path:
    """The resolved `path` if it lies inside an allowed root and exists; else one-sentence `DatasetError`."""
    text = str(path).strip()
    if not text:
        raise DatasetError("No path given; type a folder or file inside the allowed data roots.")
    if "\x00" in text:
        raise DatasetError(f"The path {text[:80]!r} contains a NUL character; type a plain path.")
    roots = allowed_roots()
    try:
        real = _resolve(text)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise DatasetError(f"The path '{text}' cannot be resolved ({e}); check it for symlink loops.") from None
    if not any(real.is_relative_to(root) for root in roots):
        listed = ", ".join(str(r) for r in roots)
        raise DatasetError(
            f"'{text}' is outside the allowed data roots ({listed}); to open it, add its folder to {ENV} "
            f"(folders separated by '{os.pathsep}')."
        )
    if not real.exists():
        raise DatasetError(
            f"The dataset path '{text}' does not exist; check the spelling, or use a built-in such as builtin:fashion-mnist."
        )
    return real


def check_spec(spec: str) -> str:
    """`spec` unchanged when the app may open it: built-ins always, paths only inside the roots."""
    spec = str(spec).strip()
    if spec.startswith("builtin:"):
        return spec
    check_allowed(spec)
    return spec

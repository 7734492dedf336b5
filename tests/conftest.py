"""Shared fixtures: every test gets its own data folder; decoded caches are shared per session
(they are keyed by content fingerprint, so sharing is safe and keeps the suite fast)."""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FASHION_DIR = Path(os.environ.get("LOUPE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (Debian package dataset-fashion-mnist; `make setup` installs it)",
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loupe-cache")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(session_cache))
    monkeypatch.setenv("LOUPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOUPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LOUPE_STATE_FILE", str(tmp_path / "data" / ".loupe_state.json"))
    monkeypatch.setenv("LOUPE_DATA_ROOTS", str(tmp_path))  # the app may open test data typed as server paths
    monkeypatch.setenv("LOUPE_PROBE_SECONDS", "0.05")  # the timing probe times its minimum steps only


def write_image(
    path: Path, value: int = 0, size: tuple[int, int] = (16, 12), mode: str = "RGB", seed: int | None = None
) -> Path:
    """A small image whose content is decided by `value` (flat colour) or `seed` (noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if seed is not None:
        arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        arr = np.full((h, w, 3), value, dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def make_class_folders(root: Path, counts: dict[str, int], split: str | None = None, size=(16, 12)) -> Path:
    """root[/split]/<class>/<i>.png with distinct noise per image (no accidental duplicates)."""
    base = root / split if split else root
    for _c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(base / name / f"{i}.png", size=size, seed=zlib.crc32(f"{split}/{name}/{i}".encode()))
    return root


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every dataset decode (`open_dataset`) the app's pages start, recorded; kept tasks of earlier tests forgotten."""
    import app.common.loaders
    from app.common import scans

    scans.forget(lambda key: True)
    real, opened = app.common.loaders.open_dataset, []

    def counting_open(spec, **kw):
        opened.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr(app.common.loaders, "open_dataset", counting_open)
    yield opened
    scans.forget(lambda key: True)

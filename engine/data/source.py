"""What a dataset spec resolves to before any pixel is decoded, and what one pass over it finds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.data.hierarchy import Hierarchy

#: split codes used in `Source.split_of`
TRAIN, VAL, TEST, UNASSIGNED = 0, 1, 2, -1
SPLIT_NAMES = ("train", "val", "test")


#: the stages `open_dataset` reports once, as soon as the spec is resolved: (0, items found, stage)
FOUND_FILES, FOUND_IMAGES = "files found", "images found"


class Progress(Protocol):
    """Progress callback shared by the CLI (tqdm) and the app (st.progress): `done` of `total` items in
    `stage` ("decoding", "hashing", ...); a stage ending in "found" reports how many items there are."""

    def __call__(self, done: int, total: int, stage: str) -> None: ...


def no_progress(done: int, total: int, stage: str) -> None:
    """The default callback: report nothing."""


@dataclass
class Source:
    """A dataset as found on disk (or built in): items, labels and given splits, not yet decoded.

    File-based sources set `root` and `files` (paths relative to `root`); array sources (`.npz`,
    built-ins) set `arrays`, a loader returning (N, H, W) or (N, H, W, C) uint8, called lazily so
    listing datasets stays cheap.
    """

    spec: str
    name: str
    kind: str  # 'folder' | 'labelfile' | 'csv' | 'npz' | 'builtin'
    classes: list[str]
    labels: np.ndarray  # (N,) int64 class index; (N, C) uint8 multi-hot when multilabel
    multilabel: bool
    root: Path | None = None
    files: list[str] | None = None
    arrays: Callable[[], np.ndarray] | None = None
    split_of: np.ndarray | None = None  # (N,) int8 split code per item; None when no splits are given
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)  # facts the user should see (e.g. a carved split)
    #: images left out because their label is missing (an empty or NaN cell): never trained on or scored
    unlabelled: int = 0
    #: two-level labels: each fine class's coarse class (a CSV's coarse column, hierarchy.json, a built-in)
    hierarchy: Hierarchy | None = None
    #: the unlabelled pool's files (relative to `root`), when the source has files: an empty CSV label cell, an
    #: `unlabeled/` folder, a `-1` or empty line in a label file. `unlabelled` counts them (and NaN `.npz` rows)
    pool_files: list[str] = field(default_factory=list)
    #: the folder `labels.loupe.csv` lives in (`engine.data.labels_file`); None for built-ins and `.npz` files
    home: Path | None = None
    #: (N,) bool: items that were in the pool until `labels.loupe.csv` labelled them (they always train; see
    #: `engine.data.dataset.split_items`); None when there are none
    from_pool: np.ndarray | None = None
    #: the labels splits are stratified by when `labels.loupe.csv` changed some (the given ones, so a relabel never
    #: moves an image between train, val and test); None: `labels`
    strata_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def item_id(self, i: int) -> str:
        """A stable, human-readable name for item `i` (relative path, or `name#i`)."""
        return self.files[i] if self.files is not None else f"{self.name}#{i}"

    def path(self, i: int) -> Path:
        assert self.root is not None and self.files is not None
        return self.root / self.files[i]


@dataclass
class ScanResult:
    """Per-item facts from one pass over the data.

    A header scan fills sizes, modes and formats and flags files Pillow cannot even open; a deep
    scan (the decode-once pass) also fully decodes every image, which catches truncated files, and
    fills the content hash and perceptual hash used to find duplicates.
    """

    ok: np.ndarray  # (N,) bool
    width: np.ndarray  # (N,) int32, size on disk; 0 when unreadable
    height: np.ndarray  # (N,) int32
    mode: list[str]  # Pillow mode on disk ('L', 'RGB', 'P', 'I;16', ...) or ''
    format: list[str]  # 'JPEG', 'PNG', ... or ''
    corrupt: list[dict]  # [{"path": item id, "reason": one sentence}]
    deep: bool = False
    sha: list[str] | None = None  # content hash per item (deep only); '' when unreadable
    dhash: np.ndarray | None = None  # (N,) uint64 difference hash of the decoded image (deep only)
    thumbs: np.ndarray | None = None  # (N, 16, 16) uint8 grayscale thumbnails confirming near duplicates (deep only)


def fingerprint(*parts: object) -> str:
    """A short stable hash of whatever identifies a dataset's content (stats, labels, params)."""
    h = hashlib.blake2b(digest_size=10)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()

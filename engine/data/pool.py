"""The unlabelled pool: a dataset's images without a label, decoded like the dataset itself.

Why a `Source` of its own: the pool is kept out of the dataset's items (so no split, statistic or metric can
count it), yet a run must predict on it (`predictions/pool.npz`, the label queue) and pseudo-labelling trains
on some of it; one decoder and one cache (`engine.data.cache.decoded`) serve both at the run's image size.
"""

from __future__ import annotations

import numpy as np

from engine.data.cache import decoded
from engine.data.dataset import Dataset
from engine.data.source import Progress, ScanResult, Source, fingerprint, no_progress
from engine.data.sources.folders import file_stats


def pool_source(source: Source) -> Source | None:
    """The pool's images as a source (labels all zero, never read), or None when the dataset has no pool files."""
    if not source.pool_files or source.root is None:
        return None
    n = len(source.pool_files)
    labels = np.zeros((n, len(source.classes)), np.uint8) if source.multilabel else np.zeros(n, np.int64)
    return Source(
        spec=source.spec,
        name=f"{source.name} (pool)",
        kind=source.kind,
        classes=source.classes,
        labels=labels,
        multilabel=source.multilabel,
        root=source.root,
        files=list(source.pool_files),
        fingerprint=fingerprint("pool", file_stats(source.root, source.pool_files)),
    )


def decode_pool(ds: Dataset, progress: Progress = no_progress) -> tuple[Source, np.ndarray, ScanResult] | None:
    """(the pool's source, its (P, size, size, channels) uint8 images, their scan) at `ds`'s size and channels;
    None without a pool. Unreadable pool files are rows of zeros with `scan.ok` False, as in the dataset."""
    source = pool_source(ds.source)
    if source is None:
        return None
    images, scan = decoded(source, ds.image_size, ds.channels, ds.resize_mode, progress)
    return source, images, scan

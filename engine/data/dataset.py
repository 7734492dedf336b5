"""`open_dataset`: a spec in, a validated, decoded, split dataset out."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from engine.config import MAX_IMAGE_SIZE
from engine.data.cache import channels_for, decoded, default_size, scan_headers
from engine.data.decode import decode
from engine.data.source import FOUND_FILES, FOUND_IMAGES, Progress, ScanResult, Source, no_progress
from engine.data.sources.detect import resolve_source
from engine.data.splits import make_splits, missing_from_train
from engine.errors import DatasetError, excerpt

TASKS = ("binary", "multiclass", "multilabel")
#: headers read before decoding, spread evenly over the files (all of them in smaller datasets)
HEADER_SAMPLE = 2000


def infer_task(source: Source) -> str:
    if source.multilabel:
        return "multilabel"
    return "binary" if len(source.classes) == 2 else "multiclass"


def check_task(source: Source, task: str | None) -> str:
    """The inferred task, or the user's override when the labels allow it."""
    inferred = infer_task(source)
    if task is None or task == inferred:
        return inferred
    if task not in TASKS:
        raise DatasetError(f"Unknown task '{task}'; use one of {', '.join(TASKS)}.")
    if source.hierarchy is not None:
        raise DatasetError(
            f"The dataset '{source.spec}' has two-level labels ({source.hierarchy.origin}), so it is multiclass, "
            f"not {task}; leave the task to Loupe or remove the coarse labels."
        )
    if task == "multilabel":
        return task  # single labels are a special case of label sets
    if source.multilabel:
        raise DatasetError(
            f"The dataset '{source.spec}' has images with zero or several labels, so it cannot be treated as {task}; use multilabel."
        )
    if task == "binary" and len(source.classes) != 2:
        raise DatasetError(
            f"The dataset '{source.spec}' has {len(source.classes)} classes; a binary task needs exactly 2."
        )
    return task


@dataclass
class Dataset:
    """A dataset ready for training and inspection; `images` is the decoded uint8 cache (memory-mapped)."""

    source: Source
    task: str
    image_size: int
    channels: int
    images: np.ndarray  # (N, size, size, channels) uint8; rows of corrupt items are zeros
    scan: ScanResult
    splits: dict[str, np.ndarray]  # usable indices per split ('test' absent when the data has none)
    notes: list[str] = field(default_factory=list)
    resize_mode: str = "crop"  # how `images` were resized (the pool is decoded the same way)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    @property
    def fingerprint(self) -> str:
        return self.source.fingerprint

    def __len__(self) -> int:
        return len(self.source)

    def label_names(self, i: int) -> list[str]:
        row = self.labels[i]
        if row.ndim == 0:
            return [self.classes[int(row)]]
        return [self.classes[j] for j in np.flatnonzero(row)]

    def sample(self, per_class: int, seed: int = 0, split: str | None = None) -> dict[str, np.ndarray]:
        """A few usable item indices per class (per label for multi-label), for sample grids."""
        rng = np.random.default_rng(seed)
        pool = self.splits[split] if split else np.flatnonzero(self.scan.ok)
        out = {}
        for c, name in enumerate(self.classes):
            has = self.labels[pool] == c if self.labels.ndim == 1 else self.labels[pool, c] > 0
            members = pool[has]
            out[name] = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        return out

    def sample_unlabelled(self, n: int, seed: int = 0) -> np.ndarray:
        """Multi-label: up to `n` usable items that carry no label at all, for their own sample row (they are
        counted on the Dataset page, and a person should be able to look at them). Empty for single-label data."""
        if self.labels.ndim != 2:
            return np.array([], dtype=np.int64)
        pool = np.flatnonzero(self.scan.ok)
        members = pool[(self.labels[pool] > 0).sum(axis=1) == 0]
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(members, size=min(n, len(members)), replace=False))

    def thumbnail(self, i: int, size: int = 128) -> np.ndarray:
        """Item `i` for display: from the original file when there is one (sharper than the cache)."""
        if self.source.files is not None and self.scan.ok[i]:
            arr, _ = decode(self.source.path(i), size=size, channels=self.channels)
            return arr
        return np.asarray(self.images[i])


def unseen_note(source: Source, splits: dict[str, np.ndarray]) -> list[str]:
    """A note naming the classes that are in val/test but have no training image (unknown to the model)."""
    missing = [source.classes[c] for c in missing_from_train(source.labels, splits)]
    if not missing:
        return []
    shown = ", ".join(f"'{c}'" for c in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    many = len(missing) > 1
    return [
        f"{len(missing)} class{'es' if many else ''} ({shown}) appear{'' if many else 's'} in val or test but not in "
        f"train, so the model cannot learn {'them' if many else 'it'}; move some of those images to train."
    ]


def split_items(
    source: Source, ok: np.ndarray, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[dict[str, np.ndarray], list[str]]:
    """`make_splits` over the given items, stratified by their given labels (`Source.strata_labels`); images
    labelled from the pool in Loupe (`Source.from_pool`) all train.

    Why apart: they are appended after the given items and left out of the stratified draw, so labelling one
    never moves another image between train, val and test (a test set that shifted with each label would make
    runs before and after incomparable)."""
    labels = source.labels if source.strata_labels is None else source.strata_labels
    if source.from_pool is None:
        return make_splits(labels, ok, source.split_of, seed, val_fraction, test_fraction)
    splits, notes = make_splits(labels, ok & ~source.from_pool, source.split_of, seed, val_fraction, test_fraction)
    splits["train"] = np.sort(np.concatenate([splits["train"], np.flatnonzero(ok & source.from_pool)]))
    return splits, notes


def check_size_and_seed(image_size: int | None, seed: int) -> None:
    """Refuse a working size or seed no decode cache or split can use, before a file is read or written."""

    def whole(value: object) -> int | None:  # a Python or numpy integer, never a bool or a float
        return None if isinstance(value, bool) or not isinstance(value, numbers.Integral) else int(value)

    if image_size is not None and not 1 <= (whole(image_size) or 0) <= MAX_IMAGE_SIZE:
        raise DatasetError(f"The image size must be 1 to {MAX_IMAGE_SIZE} pixels; got {excerpt(image_size)}.")
    if whole(seed) is None or whole(seed) < 0:
        raise DatasetError(f"The seed must be a whole number >= 0; got {excerpt(seed)}.")


def open_dataset(
    spec: str,
    image_size: int | None = None,
    task: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    resize_mode: str = "crop",
    progress: Progress = no_progress,
) -> Dataset:
    """Resolve, scan, decode once (cached) and split. Unusable files are listed in `scan.corrupt`, not fatal."""
    progress = progress or no_progress
    check_size_and_seed(image_size, seed)
    source = resolve_source(spec, seed=seed)
    # the count is known before any file is read: say it (the app shows "Opening X: 13,214 files found")
    progress(0, len(source), FOUND_FILES if source.files is not None else FOUND_IMAGES)
    task = check_task(source, task)
    # a sample of headers is enough to pick the size and channels; the decode pass reads every header anyway
    headers = scan_headers(source, progress, sample=HEADER_SAMPLE)
    if not headers.ok.any() and len(headers.ok) == len(source):
        first = headers.corrupt[0] if headers.corrupt else {"path": spec, "reason": "no images"}
        raise DatasetError(
            f"None of the {len(source)} files in '{spec}' is a readable image (e.g. '{first['path']}': {first['reason']})."
        )
    size = image_size or default_size(headers)
    if size < 1:
        raise DatasetError(f"The image size must be a positive number of pixels, not {size}.")
    channels = channels_for(headers)
    images, scan = decoded(source, size, channels, resize_mode, progress)
    if channels == 1 and channels_for(scan) == 3:  # a colour image the sample missed: keep colour
        channels = 3
        images, scan = decoded(source, size, channels, resize_mode, progress)
    if not scan.ok.any():
        raise DatasetError(
            f"None of the images in '{spec}' could be decoded (e.g. '{scan.corrupt[0]['path']}': {scan.corrupt[0]['reason']})."
        )
    splits, notes = split_items(source, scan.ok, seed, val_fraction, test_fraction)
    notes += unseen_note(source, splits)
    return Dataset(
        source, task, size, channels, images, scan, splits, notes=source.notes + notes, resize_mode=resize_mode
    )


def dataset_stats(ds: Dataset) -> dict:
    """The full statistics of an opened dataset (deep: corrupt files and duplicates included)."""
    from engine.data.stats import compute_stats

    stats = compute_stats(ds.source, ds.scan, ds.splits, ds.task)
    stats["notes"] = ds.notes
    stats["image_size"], stats["channels"] = ds.image_size, ds.channels
    return stats


def quick_stats(spec: str, task: str | None = None, seed: int = 0, progress: Progress = no_progress) -> dict:
    """Statistics from headers alone: counts, splits, sizes and unopenable files, without decoding."""
    progress = progress or no_progress
    from engine.data.stats import compute_stats

    check_size_and_seed(None, seed)
    source = resolve_source(spec, seed=seed)
    task = check_task(source, task)
    scan = scan_headers(source, progress)
    splits, notes = split_items(source, scan.ok, seed)
    notes += unseen_note(source, splits)
    stats = compute_stats(source, scan, splits, task)
    stats["notes"] = source.notes + notes
    return stats

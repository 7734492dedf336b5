"""The data layer: dataset specs -> validated, decoded-once, split datasets and their statistics.

Entry points: `open_dataset(spec)` for training and inspection, `quick_stats(spec)` for header-only
statistics, `dataset_stats(ds)` for the full report. See ARCHITECTURE.md, contract 1, for the spec format.
"""

from engine.data.dataset import Dataset, check_task, dataset_stats, infer_task, open_dataset, quick_stats
from engine.data.source import ScanResult, Source
from engine.data.sources.detect import resolve_source
from engine.data.splits import kfold_indices, make_splits

__all__ = [
    "Dataset",
    "ScanResult",
    "Source",
    "check_task",
    "dataset_stats",
    "infer_task",
    "kfold_indices",
    "make_splits",
    "open_dataset",
    "quick_stats",
    "resolve_source",
]

"""Cached loaders several pages share: datasets and their statistics, and which runs have weights.

Datasets are opened once per process (keyed by spec: the decoded images are a shared read-only memory map)
and their statistics computed once per content (keyed by spec, fingerprint and working size), each in a
background task (`app/common/scans.py`), so reruns, other sessions and reloaded pages get them, or the
progress of the work under way, instantly.

A run's weights are `best.safetensors` in its checkpoints folder (ARCHITECTURE.md, the run folder);
`weights_key` is what the pages' caches of a loaded model are keyed by, so new weights are picked up.
"""

from __future__ import annotations

from pathlib import Path

from engine.data import Dataset, dataset_stats, open_dataset
from engine.runs.folder import Run, list_runs
from app.common import scans

# --- datasets ---------------------------------------------------------------------------------------


def load_dataset(spec: str) -> Dataset:
    """`open_dataset(spec)` once per server process, in a background task that outlives page reloads."""
    return scans.result(("open", spec), lambda progress: open_dataset(spec, progress=progress), f"Opening {spec}")


def load_stats(spec: str, fingerprint: str, image_size: int, ds: Dataset) -> dict:
    """`dataset_stats` once per dataset content and working size, in a background task too."""
    return scans.result(("stats", spec, fingerprint, image_size), lambda progress: dataset_stats(ds),
                        "Computing statistics (duplicates included)")  # fmt: skip


def forget_dataset(spec: str) -> None:
    """Drop the kept dataset and statistics for `spec`, so the next load re-scans the files."""
    scans.forget(lambda key: key[1] == spec)


# --- runs with weights ------------------------------------------------------------------------------


def checkpoint_of(run: Run) -> Path | None:
    """The run's best weights (what `engine.predict.run_model` loads), or None before the first are saved."""
    return run.best_weights if run.best_weights.is_file() else None


def weights_key(run: Run) -> tuple:
    """(file name, mtime_ns, size) of the run's weights, () without: the cache key of anything loaded from them."""
    p = checkpoint_of(run)
    s = p.stat() if p else None
    return (p.name, s.st_mtime_ns, s.st_size) if s else ()


def runs_with_weights() -> list[Run]:
    """Runs with saved weights, newest first: what the Explain and Predict pages can load."""
    return [r for r in list_runs() if checkpoint_of(r) is not None]

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
from typing import Any

from app.common import scans
from engine.data import Dataset, dataset_stats, open_dataset, quick_stats
from engine.data.quality import QualityReport, quality_report
from engine.data.source import Progress
from engine.data.sources.builtin import BUILTINS
from engine.errors import LoupeError
from engine.runs.folder import Run, list_runs

# --- datasets ---------------------------------------------------------------------------------------


def _open_key(spec: str) -> tuple:
    return ("open", spec)


def _stats_key(spec: str, fingerprint: str, image_size: int) -> tuple:
    return ("stats", spec, fingerprint, image_size)


def load_dataset(spec: str, bar: Any = None) -> Dataset:
    """`open_dataset(spec)` once per server process, in a background task that outlives page reloads;
    its progress goes to `bar` when given (see `scans.result`)."""
    return scans.result(_open_key(spec), lambda progress: open_dataset(spec, progress=progress), f"Opening {spec}", bar)


def load_stats(spec: str, fingerprint: str, image_size: int, ds: Dataset, bar: Any = None) -> dict:
    """`dataset_stats` once per dataset content and working size, in a background task too."""
    return scans.result(
        _stats_key(spec, fingerprint, image_size),
        lambda progress: dataset_stats(ds),
        "Computing statistics (duplicates included)",
        bar,
    )


def _quality_key(spec: str, ds: Dataset) -> tuple:
    return ("quality", spec, ds.fingerprint, ds.image_size, ds.channels)


def load_quality(spec: str, ds: Dataset, bar: Any = None) -> QualityReport:
    """`quality_report` (image-quality scores, cached on disk too) once per dataset content, in a background task:
    part of opening a dataset on the Dataset page, so its progress shows in the opening's place."""
    return scans.result(
        _quality_key(spec, ds), lambda progress: quality_report(ds, progress=progress), "Scoring image quality", bar
    )


def dataset_ready(spec: str) -> bool:
    """True when `spec` is open and its statistics and quality scores computed (nothing to wait for), without
    starting any: the Dataset page asks before drawing, to show the progress of an opening in place of the last
    figures."""
    opened = scans.peek(_open_key(spec))
    if opened is None or not opened.finished.is_set() or opened.error is not None:
        return False
    ds = opened.result
    done = [scans.peek(_stats_key(spec, ds.fingerprint, ds.image_size)), scans.peek(_quality_key(spec, ds))]
    return all(t is not None and t.finished.is_set() and t.error is None for t in done)


def forget_dataset(spec: str) -> None:
    """Drop the kept dataset and statistics for `spec`, so the next load re-scans the files."""
    scans.forget(lambda key: len(key) > 1 and key[1] == spec)


def builtin_summaries() -> list[dict]:
    """Header-only statistics of every built-in dataset (`quick_stats`: labels and array shapes, no decoding),
    once per server process: what the first visit shows before anything is chosen. A built-in that cannot be
    read (Fashion-MNIST not installed) comes back as {"spec", "error"}."""

    def work(progress: Progress) -> list[dict]:
        out = []
        for i, name in enumerate(BUILTINS):
            progress(i, len(BUILTINS), "reading the built-ins' labels")
            spec = f"builtin:{name}"
            try:
                out.append(quick_stats(spec))
            except LoupeError as e:
                out.append({"spec": spec, "name": name, "error": str(e)})
        return out

    return scans.result(("builtins",), work, "Reading the built-in datasets")


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

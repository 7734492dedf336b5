"""Cached readers for the Evaluate page: which runs can be evaluated, their predictions and the
evaluation itself. Everything reads the run folder's predictions (nothing re-runs the model), and each
cache is keyed by the run folder, the split and the modification times of the predictions and
thresholds files, so a new training result or a saved threshold is picked up on the next rerun."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from engine import evaluate as ev
from engine.errors import LoupeError
from engine.metrics import curves as binary_curves
from engine.runs.folder import Run, list_runs

SPLIT_ORDER = ("test", "val", "oof")
SPLIT_NAMES = {"test": "test", "val": "validation", "oof": "out-of-fold (k-fold)"}
BOOTSTRAP = 1000  # confidence intervals on the page; the comparison table goes without (speed)


def files_key(run: Run) -> tuple:
    """(name, mtime_ns, size) of every predictions file and of thresholds.json: the cache key."""
    paths = sorted(run.predictions.glob("*.npz")) if run.predictions.is_dir() else []
    paths.append(run.path / "thresholds.json")
    out = []
    for p in paths:
        try:
            s = p.stat()
        except OSError:
            continue
        out.append((p.name, s.st_mtime_ns, s.st_size))
    return tuple(out)


def has_predictions(run: Run) -> bool:
    return run.predictions.is_dir() and any(run.predictions.glob("*.npz"))


def evaluable_runs() -> list[Run]:
    """Runs with saved predictions, newest first."""
    return [r for r in list_runs() if has_predictions(r)]


def latest_completed(runs: list[Run]) -> Run | None:
    for r in runs:
        if r.raw_status().get("state") == "completed":
            return r
    return runs[0] if runs else None


def splits_of(run: Run) -> list[str]:
    splits = list(_splits(str(run.path), files_key(run)))
    return sorted(splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))


@st.cache_data(show_spinner=False, max_entries=64)
def _splits(path: str, key: tuple) -> list[str]:
    return list(ev.splits_available(Run(path)))


def tune_split_for(splits: list[str]) -> str | None:
    """Thresholds are tuned on val (out-of-fold for a k-fold run without one)."""
    for s in ("val", "oof"):
        if s in splits:
            return s
    return splits[0] if splits else None


@st.cache_resource(show_spinner=False, max_entries=16)
def _predictions(path: str, split: str, key: tuple) -> ev.Predictions:
    return ev.load_predictions(Run(path), split)


def predictions(run: Run, split: str) -> ev.Predictions:
    """The split's predictions (read-only arrays shared between sessions)."""
    return _predictions(str(run.path), split, files_key(run))


def coarse_predictions(run: Run, split: str) -> ev.Predictions:
    """A two-level run's split at the coarse level (summed fine probabilities; cheap, so derived each time)."""
    return ev.coarse_predictions(predictions(run, split))


@st.cache_data(show_spinner="Evaluating (bootstrap confidence intervals)…", max_entries=32)
def _evaluate(path: str, split: str, tune_split: str | None, bootstrap: int, use_saved: bool, key: tuple) -> dict:
    run = Run(path)
    saved = saved_thresholds(run) if use_saved and has_saved_thresholds(run) else None
    return ev.evaluate_run(
        run, split=split, tune_split=tune_split or split, thresholds=saved or None, bootstrap=bootstrap
    )


def evaluation(
    run: Run, split: str, tune_split: str | None, bootstrap: int = BOOTSTRAP, use_saved: bool = True
) -> dict:
    """`evaluate_run` at the thresholds saved with the run (thresholds.json) when there are any, else at
    thresholds tuned on `tune_split` (min-HTER for binary, best F1 per label for multi-label)."""
    return _evaluate(str(run.path), split, tune_split, bootstrap, use_saved, files_key(run))


@st.cache_data(show_spinner=False, max_entries=128)
def _report_at(path: str, split: str, thresholds: str, bootstrap: int, key: tuple) -> dict:
    return ev.report_at(_predictions(path, split, key), json.loads(thresholds), bootstrap=bootstrap)


def report_at(run: Run, split: str, thresholds: dict, bootstrap: int = BOOTSTRAP) -> dict:
    """`report_at` of the split's predictions at `thresholds` (the threshold in force: the slider's), cached
    per threshold so moving the slider back and forth answers at once."""
    return _report_at(str(run.path), split, json.dumps(thresholds, sort_keys=True), bootstrap, files_key(run))


def has_saved_thresholds(run: Run) -> bool:
    return (run.path / "thresholds.json").is_file()


@st.cache_data(show_spinner=False, max_entries=64)
def _curves(path: str, split: str, key: tuple) -> dict:
    pred = ev.load_predictions(Run(path), split)
    pos = int(pred.positive)
    try:
        curves = binary_curves(np.asarray(pred.labels) == pos, pred.probs[:, pos])
    except LoupeError:  # one class only in this split: there is no curve
        return {}
    return {k: np.asarray(v) for k, v in curves.items()}


def curves(run: Run, split: str) -> dict:
    """Binary FAR/FRR/HTER/ROC/DET arrays against the threshold."""
    return _curves(str(run.path), split, files_key(run))


@st.cache_data(show_spinner=False, max_entries=64)
def _tuned(path: str, rule: str, split: str, key: tuple) -> dict:
    return ev.tune_thresholds(Run(path), rule=rule, split=split)


def tuned(run: Run, rule: str, split: str) -> dict:
    """`tune_thresholds(run, rule, split)`, cached."""
    return _tuned(str(run.path), rule, split, files_key(run))


def saved_thresholds(run: Run) -> dict:
    """thresholds.json when the run has one (not training's 0.5 defaults from summary.json), else {}."""
    if not has_saved_thresholds(run):
        return {}
    try:
        return ev.load_thresholds(run) or {}
    except Exception:  # a damaged thresholds.json must not take the page down  # noqa: BLE001
        return {}


@st.cache_data(show_spinner=False, max_entries=16)
def _top_losses(path: str, split: str, n: int, key: tuple) -> list[dict]:
    return list(ev.top_losses(ev.load_predictions(Run(path), split), n=n))


def top_losses(run: Run, split: str, n: int = 24) -> list[dict]:
    return _top_losses(str(run.path), split, n, files_key(run))


@st.cache_data(show_spinner=False, max_entries=16)
def _mislabelled(path: str, n: int, key: tuple) -> list[dict]:
    return list(ev.likely_mislabelled(Run(path), n=n))


def likely_mislabelled(run: Run, n: int = 24) -> list[dict]:
    return _mislabelled(str(run.path), n, files_key(run))


def dataset_spec(run: Run) -> str | None:
    return (run.config().get("config") or {}).get("dataset")

"""Finished epsilon sweeps saved in the run folder: `RUN/robustness/<key>.json`.

A sweep takes seconds to minutes, and a browser reload starts a new Streamlit session, so a result kept only
in session state is lost exactly when the user least expects it. Saving it next to the run (like thresholds
and predictions) lets the Explain page, another browser tab or the CLI come back to it. The key is a short
hash of the settings that change the result (epsilons, split, image limit, attack, PGD steps, whether the
minimal epsilon was searched, the sampling seed), so two settings never overwrite each other and the same
settings replace their older result. Files are written atomically: a reader never sees half a sweep.

Versions: 1 attacked the first `limit` images of the split (on class-ordered data, often one class only);
2 draws a seeded sample stratified by class and records the seed and the sample's dataset indices. Older
records stay readable (`latest_record` returns them) but never answer for current settings
(`load_record`), and `outdated` says why they should be run again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.runs.folder import Run, atomic_write_json, now_iso

SWEEP_DIR = "robustness"
VERSION = 2  # 2: stratified, seeded sample (see the module docstring)


def sweep_params(
    eps: Sequence[float],
    split: str = "val",
    limit: int = 200,
    attack: str = "fgsm",
    steps: int = 10,
    min_eps: bool = True,
    seed: int = 0,
) -> dict:
    """The settings that define a sweep, normalised so equal sweeps get equal keys: epsilons sorted and
    deduplicated (the sweep sorts them too), and `steps` 1 for FGSM (it is one step whatever was typed)."""
    attack = str(attack)
    return {
        "eps": sorted({round(float(e), 6) for e in eps}),
        "split": str(split),
        "limit": int(limit or 0),
        "attack": attack,
        "steps": int(steps) if attack == "pgd" else 1,
        "min_eps": bool(min_eps),
        "seed": int(seed),
    }


def _normal(params: dict) -> dict:
    return sweep_params(
        params["eps"],
        params.get("split", "val"),
        params.get("limit", 200),
        params.get("attack", "fgsm"),
        params.get("steps", 10),
        params.get("min_eps", True),
        params.get("seed", 0),
    )


def sweep_key(params: dict) -> str:
    """A 12-hex-digit key of the normalised settings (the file name)."""
    text = json.dumps(_normal(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def sweep_path(run: Run, params: dict) -> Path:
    return run.path / SWEEP_DIR / f"{sweep_key(params)}.json"


def jsonable(v: Any) -> Any:
    """Tensors and arrays as lists, numpy scalars as Python numbers, NaN and infinities as None (strict JSON
    has no such numbers, and a sweep uses None for "not flipped" already)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _model_stamp(run: Run) -> float | None:
    """The best checkpoint's mtime: a sweep measured an earlier model when this has moved on."""
    try:
        return run.best_weights.stat().st_mtime
    except OSError:
        return None


def save_sweep(run: Run, params: dict, result: dict) -> Path:
    """Write the sweep's record (settings, result, when, which weights); returns the file."""
    path = sweep_path(run, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "version": VERSION,
        "params": _normal(params),
        "saved_at": now_iso(),
        "model_mtime": _model_stamp(run),
        "result": jsonable(dict(result)),
    }
    atomic_write_json(path, record)
    return path


def _read(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing, or unreadable: a sweep to run again, never a crash
    if not isinstance(rec, dict) or not isinstance(rec.get("result"), dict) or not isinstance(rec.get("params"), dict):
        return None
    return rec


def load_record(run: Run, params: dict) -> dict | None:
    """The saved record for exactly these settings (of this version), or None."""
    rec = _read(sweep_path(run, params))
    return rec if rec is not None and not outdated(rec) and rec["params"] == _normal(params) else None


def latest_record(run: Run) -> dict | None:
    """The most recently saved record of the run, or None."""
    folder = run.path / SWEEP_DIR
    try:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return None
    for path in files:
        rec = _read(path)
        if rec is not None:
            return rec
    return None


def load_sweep(run: Run, params: dict) -> dict | None:
    """The saved result for these settings, or None."""
    rec = load_record(run, params)
    return rec["result"] if rec else None


def latest_sweep(run: Run) -> tuple[dict, dict] | None:
    """(settings, result) of the most recently saved sweep, or None."""
    rec = latest_record(run)
    return (rec["params"], rec["result"]) if rec else None


def outdated(record: dict) -> str | None:
    """Why a record saved by an older Loupe should be run again (one sentence), or None when it is current."""
    try:
        version = int(record.get("version") or 1)
    except (TypeError, ValueError):
        version = 1
    if version >= VERSION:
        return None
    return (
        "It was saved by an older Loupe that attacked the first images of the split instead of a sample "
        "stratified by class, so on class-ordered data it may hold one class only; run it again."
    )


def is_stale(run: Run, record: dict) -> bool:
    """True when the run's best weights changed after the sweep was saved (it trained or resumed since)."""
    then, now = record.get("model_mtime"), _model_stamp(run)
    return then is not None and now is not None and abs(now - then) > 1e-6

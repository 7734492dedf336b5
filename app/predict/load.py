"""Cached loaders for the Predict page: the built-in models (runs with weights come from `app.common.loaders`),
the `Predictor` of a model (once per process and weights file), predictions per set of images, Grad-CAM overlays
and small display copies of the uploads.

Predictions are cached by model, weights and file contents (`st.cache_data`), so moving a slider elsewhere on
the page (the unsure margin, the overlay) never re-runs the model. The unsure flag is therefore applied here
from each result's `margin` with the engine's rule (`engine.predict.unsure.is_unsure`), not inside the cached call.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import streamlit as st

from app.common.loaders import weights_key
from engine.runs.folder import Run

IMAGENET = "builtin:imagenet"
THUMB_MAX = 320  # uploads are shown at most this wide


# --- models ----------------------------------------------------------------------------------------------


def builtin_models() -> list[str]:
    """The built-in models the engine offers (at least the ImageNet one)."""
    try:
        from engine.predict.predictor import builtin_models as names

        found = [str(n) for n in names()]
    except (ImportError, AttributeError):
        found = []
    return found or [IMAGENET]


def model_key(ref: str, runs: dict[str, Run]) -> tuple:
    """What invalidates a cached Predictor/prediction: the run's weights file and saved thresholds."""
    run = runs.get(ref)
    if run is None:
        return (ref,)
    th = run.path / "thresholds.json"
    return (str(run.path), weights_key(run), th.stat().st_mtime_ns if th.is_file() else 0)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(ref: str, key: tuple, labels: str = ""):
    from engine.predict.labels import resolve_labels
    from engine.predict.predictor import Predictor

    return Predictor.from_ref(ref, device="cpu", labels=resolve_labels(labels, files=False))


def predictor(ref: str, runs: dict[str, Run], labels: str = ""):
    """The model's `Predictor`, loaded once per process (and per weights file for a run); `labels`: the
    built-in model's label subset (`engine.predict.labels.resolve_labels`), '' for all its classes."""
    run = runs.get(ref)
    return _predictor(str(run.path) if run is not None else ref, model_key(ref, runs), labels)


# --- predictions -----------------------------------------------------------------------------------------


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


@st.cache_data(show_spinner=False, max_entries=64)
def _predict(key: tuple, files: tuple[tuple[str, str], ...], top_k: int, _pred, _items) -> list[dict]:
    return [dict(r) for r in _pred.predict_bytes(list(_items), top_k=top_k)]


def predict(pred, key: tuple, items: list[tuple[str, bytes]], top_k: int, unsure_margin: float) -> list[dict]:
    """`predict_bytes` once per model and set of files; `unsure` re-derived from each result's margin at the
    page's margin with the engine's rule, so the slider never re-runs the model."""
    from engine.predict.unsure import is_unsure

    files = tuple((name, digest(data)) for name, data in items)
    results = _predict(key, files, int(top_k), pred, items)
    task = str(getattr(pred, "task", "multiclass"))
    out = []
    for r in results:
        r = dict(r)
        if r.get("ok"):
            labels = r.get("label") if isinstance(r.get("label"), list) else None
            r["unsure"] = is_unsure(r.get("margin"), unsure_margin, task, labels)
        out.append(r)
    return out


# --- Grad-CAM ----------------------------------------------------------------------------------------------


class NoGradCam(Exception):
    """Grad-CAM is not available for this model (the reason is the message)."""


def run_model_of(pred):
    """The predictor's `RunModel` (a run's, or the built-in network wrapped the same way) for Grad-CAM."""
    rm = getattr(pred, "rm", None)
    if rm is None or not hasattr(rm, "model") or not hasattr(rm, "lock"):
        raise NoGradCam(
            f"Grad-CAM is not available for `{getattr(pred, 'name', 'this model')}`: the engine does not "
            "expose its network."
        )
    return rm


def model_input(pred, data: bytes, name: str):
    """(pixels, x): the image exactly as the predictor feeds it to its model (the built-in model's own resize and
    centre crop, or the run's preprocessing)."""
    from engine.data.pixels import to_uint8
    from engine.predict.run_model import prepare_image

    pre = getattr(pred, "preprocess", None)
    if pre is not None:
        x = pre(data, name)
        return to_uint8(x)[0], x
    pixels, x = prepare_image(data, name, pred.rm)
    return np.asarray(pixels, dtype=np.uint8), x


@st.cache_data(show_spinner=False, max_entries=128)
def _gradcam(key: tuple, file_digest: str, target: int | None, _pred, _data: bytes, _name: str) -> tuple:
    from engine.explain.attributions import explain

    pixels, x = model_input(_pred, _data, _name)
    e = explain(_pred.rm, x, "gradcam", target=target)
    return pixels, np.asarray(e.heatmap, dtype=np.float32), float(e.seconds), e.params.get("feature_map")


def gradcam_overlay(
    pred, key: tuple, name: str, data: bytes, target: int | None, alpha: float = 0.5
) -> tuple[np.ndarray, float, str | None]:
    """The Grad-CAM of `target` (default: the predicted class) blended over the image as the model sees it, the
    seconds it took (cached per model, file and target) and the warning when its feature map is too small to
    mean anything (`engine.explain.gradcam.coarse_warning`), else None."""
    from engine.explain.attributions import overlay
    from engine.explain.gradcam import coarse_warning

    run_model_of(pred)
    pixels, heat, secs, fmap = _gradcam(key, digest(data), target, pred, data, name)
    note = coarse_warning(fmap, int(getattr(pred, "image_size", 0) or 0) or None)
    return np.asarray(overlay(pixels, heat, alpha=alpha), dtype=np.uint8), secs, note


# --- uploads ----------------------------------------------------------------------------------------------


def uploads(files, photo) -> list[tuple[str, bytes]]:
    """(filename, bytes) of the uploaded files and the camera picture; repeated names get a numbered suffix."""
    items, seen = [], {}
    for f in [*(files or []), *([photo] if photo is not None else [])]:
        name = f.name or "image"
        n = seen.get(name, 0)
        seen[name] = n + 1
        if n:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem} ({n + 1}).{ext}" if dot else f"{name} ({n + 1})"
        items.append((name, f.getvalue()))
    return items


def thumbnail(data: bytes, px: int = THUMB_MAX) -> np.ndarray | None:
    """A display copy (first frame, RGB, at most `px` wide), or None when the bytes are not an image."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((px, px))
            return np.asarray(img, dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any undecodable upload is simply not shown (the engine reports why)
        return None

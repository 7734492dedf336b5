"""Cached loaders for the Explain page: a run's model (`engine.predict.run_model`), the run's dataset at its
working size, and the chosen image as (pixels, tensor). Which runs have weights is `app.common.loaders`'.

An image is always identified by a short key ("ds:<index>" or "up:<sha1>") so that explanations and attacks
are cached per run, image and settings, and sliders elsewhere on the page do not recompute them.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app.common.loaders import weights_key
from engine.data.pixels import to_tensor
from engine.errors import LoupeError
from engine.runs.folder import Run

IMAGE_PARAM = "image"  # ?image=<dataset index>: other pages link to one image with it


@dataclass
class Picked:
    """The image being explained: display pixels, model input and where it came from."""

    key: str  # "ds:<index>" or "up:<sha1>": the cache key
    pixels: np.ndarray  # (H, W, C) uint8 at the model's input size
    x: object  # torch tensor (1, C, H, W) in [0, 1]
    label: int | None  # the true class (dataset images of single-label tasks), else None
    name: str
    truth: list[int] | None = None  # multi-label dataset images: the indices of their true labels ([] for none)


# --- the run's model ---------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _run_model(path: str, key: tuple):
    from engine.predict.run_model import load_run_model

    rm = load_run_model(Run(path), device="cpu")
    return rm


def run_model(run: Run):
    """The run's model (`RunModel`), loaded once per weights file."""
    return _run_model(str(run.path), weights_key(run))


def run_config(run: Run) -> dict:
    header = run.config()
    return {**(header.get("config") or {}), **{k: header[k] for k in ("image_size",) if header.get(k)}}


# --- the run's dataset -----------------------------------------------------------------------------


@st.cache_resource(show_spinner="Opening the run's dataset…", max_entries=4)
def _dataset(spec: str, size: int, seed: int, val_fraction: float, test_fraction: float):
    from engine.data import open_dataset

    return open_dataset(
        spec, image_size=size or None, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )


def dataset_of(run: Run, image_size: int):
    """The run's dataset at the run's working size and with its splits, or None (with a caption) when it
    cannot be opened any more."""
    cfg = run_config(run)
    spec = cfg.get("dataset")
    if not spec:
        st.caption("The run does not name its dataset: upload an image instead.")
        return None
    try:
        return _dataset(
            spec,
            int(image_size or cfg.get("image_size") or 0),
            int(cfg.get("seed", 0)),
            float(cfg.get("val_fraction", 0.15)),
            float(cfg.get("test_fraction", 0.15)),
        )
    except (LoupeError, OSError) as e:
        st.caption(f"The images of `{spec}` cannot be opened: {e}")
        return None


# --- the run's decision ----------------------------------------------------------------------------------


def decision_rule(run: Run, rm) -> tuple[float | None, int]:
    """(threshold, positive class) the run decides with: for binary runs the saved threshold (0.5 when none is
    saved) and its positive class, as Evaluate and Predict use them; (None, positive) otherwise (argmax)."""
    from engine.evaluate.thresholds import load_thresholds

    if rm.task != "binary":
        return None, int(getattr(rm, "positive", 1))
    saved = load_thresholds(run)
    return float(saved.get("binary", 0.5)), int(saved.get("positive_class", rm.positive))


def label_thresholds(run: Run, rm) -> np.ndarray:
    """A multi-label run's threshold per label: the saved ones (Evaluate), else training's defaults, else 0.5,
    as Predict decides (`engine.predict.predictor.multilabel_thresholds`)."""
    from engine.evaluate.thresholds import load_thresholds
    from engine.predict.predictor import multilabel_thresholds

    return multilabel_thresholds(load_thresholds(run), len(rm.classes))


def accepted_labels(probs: np.ndarray, thresholds: np.ndarray) -> list[int]:
    """The labels the run decides for one image, most probable first (`engine.predict.predictor`)."""
    from engine.predict.predictor import accepted_labels as decided_labels

    return decided_labels(probs, thresholds)


def threshold_saved(run: Run) -> bool:
    """Whether a threshold was chosen for the run (thresholds.json, by Evaluate or `evaluate --save-thresholds`);
    otherwise decisions use training's default."""
    from engine.evaluate.thresholds import FILE

    return (run.path / FILE).is_file()


def decided(probs: np.ndarray, task: str, rule: tuple[float | None, int]) -> int:
    """The class the run decides for one image's probabilities (`engine.metrics.core.decide`): a binary run at
    its threshold; otherwise the top class (for multi-label, the most probable label, which the page explains)."""
    from engine.metrics.core import decide

    threshold, positive = rule
    if task != "binary" or threshold is None:
        return int(np.argmax(probs))
    return int(decide(np.asarray(probs)[None], task, positive, threshold)[0])


def scope(run: Run, picked: Picked) -> str:
    """A short id of (run, image): widgets whose options or labels depend on the image (the class to explain,
    the attack's target) carry it in their key, so a new image gets fresh widgets instead of a value (or a
    label the browser still shows) from the last one."""
    return hashlib.sha1(f"{run.path}|{picked.key}".encode()).hexdigest()[:10]


# --- images -> (pixels, tensor) ------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def from_dataset(ds, index: int, rm) -> Picked:
    """Dataset image `index` as the model sees it (the decoded cache is already at the working size)."""
    pixels = np.asarray(ds.images[index], dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[0] == pixels.shape[1] == int(rm.image_size) and pixels.shape[2] == int(rm.channels):
        x = to_tensor(pixels)
    else:  # a different working size: go through the model's own preprocessing
        from engine.predict.run_model import prepare_image

        pixels, x = prepare_image(png_bytes(pixels), f"{index}.png", rm)
    labels = np.asarray(ds.labels)
    label = int(labels[index]) if labels.ndim == 1 else None
    truth = [int(i) for i in np.flatnonzero(labels[index] > 0)] if labels.ndim == 2 else None
    return Picked(f"ds:{index}", pixels, x, label, f"dataset image #{index}", truth)


def from_upload(data: bytes, name: str, rm) -> Picked:
    """An uploaded file (bytes) as the model sees it; raises LoupeError for what is not an image."""
    from engine.predict.run_model import prepare_image

    pixels, x = prepare_image(data, name, rm)
    digest = hashlib.sha1(data).hexdigest()[:16]
    return Picked(f"up:{digest}", np.asarray(pixels, dtype=np.uint8), x, None, name)

"""Image galleries on the Evaluate page: the images of a confusion-matrix cell, the top losses and the
likely mislabelled images. Predictions store `indices` into the dataset, so images come from the
run's dataset (opened once per process by `app.common.loaders.load_dataset`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from engine.errors import LoupeError
from engine.runs.folder import Run
from app.common.images import THUMB_PX, for_display
from app.common.loaders import load_dataset
from app.evaluate import load

MAX_IMAGES = 24


def dataset_of(run: Run):
    """The run's dataset, or None (with a caption saying why) when it cannot be opened any more."""
    spec = load.dataset_spec(run)
    if not spec:
        st.caption("The run does not name its dataset, so its images cannot be shown.")
        return None
    try:
        return load_dataset(spec)
    except (LoupeError, OSError) as e:
        st.caption(f"The images of `{spec}` cannot be shown: {e}")
        return None


def _name(classes: Sequence[str], value) -> str:
    """A class name from an index or a name (the engine may give either); multi-hot -> joined names."""
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf" and arr.ndim == 1 and len(arr) == len(classes):
            return ", ".join(classes[i] for i in np.flatnonzero(arr)) or "(none)"
        return ", ".join(_name(classes, v) for v in arr)
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
        return str(classes[int(value)])
    return str(value)


def show(ds, items: Sequence[dict], classes: Sequence[str], key: str, extra: str | None = None,
         run_id: str | None = None) -> None:
    """A grid of thumbnails, each captioned 'true → predicted (confidence)' (+ `extra`, a field to add),
    and, with `run_id`, links that open each image on the Explain page."""
    if not items:
        st.caption("No images here.")
        return
    captions = []
    for it in items:
        cap = f"{_name(classes, it.get('true'))} → {_name(classes, it.get('predicted'))}"
        if it.get("confidence") is not None:
            cap += f" ({float(it['confidence']):.0%})"
        if extra and it.get(extra) is not None:
            cap += f" · {extra.replace('_', ' ')} {float(it[extra]):.2f}"
        captions.append(cap)
    if ds is None:
        st.dataframe([{"id": it.get("id"), "index": it.get("index"), "image": c} for it, c in zip(items, captions)],
                     hide_index=True, key=f"{key}.table")  # fmt: skip
        return
    images = []
    for it in items:
        try:
            images.append(for_display(ds.thumbnail(int(it["index"]))))
        except (IndexError, LoupeError, OSError, KeyError, ValueError):
            images.append(np.zeros((THUMB_PX, THUMB_PX), np.uint8))
    st.image(images, caption=captions, width=THUMB_PX)
    if run_id:
        explain_links(items, run_id, key)


def explain_links(items: Sequence[dict], run_id: str, key: str) -> None:
    """One small link per image, in grid order, to its attribution maps on the Explain page."""
    st.caption("Explain an image (in the order above):")
    with st.container(horizontal=True, key=f"{key}.explain_links"):
        for n, it in enumerate(items, start=1):
            st.page_link("pages/explanations.py", label=f"#{n}", query_params={"run": run_id, "image": str(int(it["index"]))})


def cell_items(pred, predicted: np.ndarray, true_c: int, pred_c: int, limit: int = MAX_IMAGES) -> tuple[list[dict], int]:
    """The images of true class `true_c` predicted as `pred_c`, most confident first; and how many in all."""
    labels = np.asarray(pred.labels)
    rows = np.flatnonzero((labels == true_c) & (predicted == pred_c))
    conf = np.asarray(pred.probs)[rows, pred_c]
    order = rows[np.argsort(-conf, kind="mergesort")][:limit]
    items = [{"id": str(pred.ids[r]), "index": int(pred.indices[r]), "true": true_c, "predicted": pred_c,
              "confidence": float(pred.probs[r, pred_c])} for r in order]  # fmt: skip
    return items, len(rows)

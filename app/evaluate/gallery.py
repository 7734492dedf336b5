"""Image galleries on the Evaluate page: the images of a confusion-matrix cell, the top losses and the
likely mislabelled images. Predictions store `indices` into the dataset, so images come from the
run's dataset (opened once per process by `app.common.loaders.load_dataset`).

Each image sits in its own small block with its caption and, right under it, a link named by its file
to the Explain page: a user explains the image they are looking at, not "#17" of a row of numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from app.common.images import THUMB_PX, for_display
from app.common.loaders import load_dataset
from app.evaluate import load
from engine.errors import LoupeError
from engine.metrics.display import NONE, label_probs, percent
from engine.runs.folder import Run

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
            return ", ".join(classes[i] for i in np.flatnonzero(arr)) or NONE
        return ", ".join(_name(classes, v) for v in arr) or NONE
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
        return str(classes[int(value)])
    return str(value)


SOFT_BREAK = "\u200b"  # zero-width space: where a browser may break a long name that has no spaces


def breakable(name: object) -> str:
    """`name` with a break opportunity after each '_', '/', '-' and '.', so a long class name such as
    "negatives_background_patches" wraps at its parts in a narrow caption or table cell, not mid-word (and
    is never clipped). For display only: the text still reads and compares the same to a person."""
    text = str(name)
    for sep in "_/-.":
        text = text.replace(sep, sep + SOFT_BREAK)
    return text


ITEM_PX = 172  # one gallery item (thumbnail, caption, link) this wide: five in a row at 1400 px, a file name fits
NAME_CHARS = 19  # a longer file name keeps its start and its end (where the numbers are): "IMG_2…601_123456.jpg"
HEAD_CHARS = 5


def file_name(item_id: object) -> str:
    """The short name of an image for a link: the last part of its id ("positives/IMG_0042.jpg" ->
    "IMG_0042.jpg"; a built-in dataset's "fashion-binary#7177" -> "#7177", the dataset being the same for
    every image), shortened in the middle when it is long; the full id is in the link's tooltip."""
    name = str(item_id).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or str(item_id)
    if "#" in name and name.rsplit("#", 1)[1].isdigit():
        name = "#" + name.rsplit("#", 1)[1]
    if len(name) <= NAME_CHARS:
        return name
    return name[:HEAD_CHARS] + "…" + name[len(name) - (NAME_CHARS - HEAD_CHARS - 1) :]


def caption(item: dict, classes: Sequence[str], extra: str | None = None) -> str:
    """'true → predicted (confidence)' (+ `extra`, a field of the item, e.g. its loss). A multi-label item with its
    `missed` and `extra` labels says which labels are wrong, with their probabilities, instead of one "p%"."""
    cap = f"{breakable(_name(classes, item.get('true')))} → {breakable(_name(classes, item.get('predicted')))}"
    if "missed" in item or "extra" in item:
        missed, extra_labels = (label_probs(item.get(k) or [], name=breakable) for k in ("missed", "extra"))
        cap += f" · missed: {missed} · extra: {extra_labels}"
    elif item.get("confidence") is not None:
        cap += f" ({percent(item['confidence'])})"
    if extra and item.get(extra) is not None:
        cap += f" · {extra.replace('_', ' ')} {float(item[extra]):.2f}"
    return cap


def show(
    ds, items: Sequence[dict], classes: Sequence[str], key: str, extra: str | None = None, run_id: str | None = None
) -> None:
    """A wrapping grid of thumbnails, each captioned 'true → predicted (confidence)' (+ `extra`) and, with
    `run_id`, with its own link right under it, named by its file, to its explanations on the Explain page."""
    if not items:
        st.caption("No images here.")
        return
    captions = [caption(it, classes, extra) for it in items]
    if ds is None:
        rows = [
            {"image": file_name(it.get("id")), "index": it.get("index"), "true → predicted": c}
            for it, c in zip(items, captions)
        ]
        st.dataframe(rows, hide_index=True, key=f"{key}.table")
        return
    with st.container(horizontal=True, gap="small", key=f"{key}.grid"):
        for n, (it, cap) in enumerate(zip(items, captions)):
            with st.container(width=ITEM_PX, gap=None, key=f"{key}.item.{n}"):
                st.image(_thumbnail(ds, it), width=THUMB_PX)
                st.caption(cap)  # as wide as the item, not the thumbnail: fewer lines
                if run_id:
                    st.page_link(
                        "pages/explanations.py",
                        label=file_name(it.get("id")),
                        icon=":material/visibility:",
                        query_params={"run": run_id, "image": str(int(it["index"]))},
                        help=f"Explain {it.get('id')} on the Explain page",
                    )


def _thumbnail(ds, item: dict) -> np.ndarray:
    try:
        return for_display(ds.thumbnail(int(item["index"])))
    except (IndexError, LoupeError, OSError, KeyError, ValueError):
        return np.zeros((THUMB_PX, THUMB_PX), np.uint8)


def cell_items(
    pred, predicted: np.ndarray, true_c: int, pred_c: int, limit: int = MAX_IMAGES
) -> tuple[list[dict], int]:
    """The images of true class `true_c` predicted as `pred_c`, most confident first; and how many in all."""
    labels = np.asarray(pred.labels)
    rows = np.flatnonzero((labels == true_c) & (predicted == pred_c))
    conf = np.asarray(pred.probs)[rows, pred_c]
    order = rows[np.argsort(-conf, kind="mergesort")][:limit]
    items = [
        {
            "id": str(pred.ids[r]),
            "index": int(pred.indices[r]),
            "true": true_c,
            "predicted": pred_c,
            "confidence": float(pred.probs[r, pred_c]),
        }
        for r in order
    ]
    return items, len(rows)


# the four cells of one label's confusion, with what each means for that label
LABEL_CELLS = {
    "TP": "true positives: the label is there and was decided",
    "FP": "false positives: decided, but the label is not there (extra)",
    "FN": "false negatives: the label is there but was not decided (missed)",
    "TN": "true negatives: neither there nor decided",
}


def label_cell_items(
    pred, decided: np.ndarray, label: int, cell: str, limit: int = MAX_IMAGES
) -> tuple[list[dict], int]:
    """Multi-label: the images in one cell (TP, FP, FN or TN) of label `label`'s confusion at the thresholds in
    force (`decided`, the (N, C) decisions), the most confident about that label first; and how many in all."""
    y = np.asarray(pred.labels).astype(bool)[:, label]
    d = np.asarray(decided).astype(bool)[:, label]
    mask = {"TP": y & d, "FP": ~y & d, "FN": y & ~d, "TN": ~y & ~d}[cell]
    rows = np.flatnonzero(mask)
    p = np.asarray(pred.probs)[rows, label]
    conf = p if cell in ("TP", "FP") else 1 - p  # how sure the model was of the decision it made
    order = rows[np.argsort(-conf, kind="mergesort")][:limit]
    labels, decisions = np.asarray(pred.labels).astype(bool), np.asarray(decided).astype(bool)
    items = [
        {
            "id": str(pred.ids[r]),
            "index": int(pred.indices[r]),
            "true": [pred.classes[j] for j in np.flatnonzero(labels[r])],
            "predicted": [pred.classes[j] for j in np.flatnonzero(decisions[r])],
            "confidence": float(pred.probs[r, label]),
        }
        for r in order
    ]
    return items, len(rows)

"""Dataset statistics: class balance, splits, image sizes and problems (corrupt files, duplicates).

`compute_stats` returns plain JSON (the app, the CLI's `--json` and cached stats files all read the
same dict), so every number is a Python int/float and undefined values are None, never NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from engine.data.duplicates import cross_split, exact_groups, near_groups
from engine.data.source import SPLIT_NAMES, UNASSIGNED, ScanResult, Source

TASKS = ("binary", "multiclass", "multilabel")
#: groups listed per duplicate kind; the counts always cover all of them
MAX_GROUPS = 500
#: distinct image sizes listed
MAX_SIZES = 200
#: dhash bits two images may differ in and still count as near duplicates
NEAR_MAX_DISTANCE = 4


def compute_stats(
    source: Source, scan: ScanResult, splits: dict[str, np.ndarray], task: str
) -> dict:
    """Everything the data page and `engine data stats` show, as a JSON-ready dict."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    ok = np.asarray(scan.ok, dtype=bool)
    classes = list(source.classes)
    y = _label_matrix(source.labels, len(classes), task)
    ok_idx = np.flatnonzero(ok)
    counts = _counts(y, ok_idx, len(classes))
    stats: dict[str, Any] = {
        "spec": source.spec,
        "name": source.name,
        "kind": source.kind,
        "task": task,
        "num_images": int(ok_idx.size),
        "num_files": len(source),
        "classes": classes,
        "class_counts": _named(classes, counts),
        **_balance(classes, counts, int(ok_idx.size), task),
        "splits": {},
    }
    split_of = np.full(len(source), UNASSIGNED, dtype=np.int64)
    known_first = sorted(splits, key=lambda s: SPLIT_NAMES.index(s) if s in SPLIT_NAMES else 99)
    for name in known_first:
        idx = np.asarray(splits[name], dtype=np.int64)
        idx = idx[ok[idx]]  # the caller passes usable items; be safe anyway
        split_counts = _named(classes, _counts(y, idx, len(classes)))
        stats["splits"][name] = {"num_images": int(idx.size), "class_counts": split_counts}
        if name in SPLIT_NAMES:
            split_of[idx] = SPLIT_NAMES.index(name)
    if task == "multilabel":
        stats["multilabel"] = _multilabel(classes, y[ok_idx])
    stats["images"] = _images(scan, ok_idx)
    stats["corrupt"] = list(scan.corrupt)
    stats["duplicates"] = _duplicates(source, scan, ok, split_of)
    stats["deep"] = bool(scan.deep)
    stats["notes"] = list(source.notes)
    return _clean(stats)


def _label_matrix(labels: np.ndarray, num_classes: int, task: str) -> np.ndarray:
    """Labels as given: (N,) class indices, or (N, C) multi-hot for multi-label data.

    Single-label data analysed as multi-label becomes one-hot; indices outside 0..C-1 (unlabelled)
    count for no class.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 or task != "multilabel":
        return labels
    onehot = np.zeros((labels.size, num_classes), dtype=np.uint8)
    valid = (labels >= 0) & (labels < num_classes)
    onehot[np.flatnonzero(valid), labels[valid]] = 1
    return onehot


def _counts(y: np.ndarray, idx: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) items per class (per label for multi-hot labels) among items `idx`."""
    if y.ndim == 2:
        return (y[idx, :num_classes] > 0).sum(axis=0, dtype=np.int64)
    lab = y[idx].astype(np.int64)
    lab = lab[(lab >= 0) & (lab < num_classes)]
    return np.bincount(lab, minlength=num_classes)


def _named(classes: list[str], counts: np.ndarray) -> dict[str, int]:
    return {c: int(n) for c, n in zip(classes, counts)}


def _balance(classes: list[str], counts: np.ndarray, num_images: int, task: str) -> dict:
    """Imbalance figures and suggested loss weights."""
    if counts.size == 0:
        return {"imbalance_ratio": None, "minority_share": None, "majority_class": None,
                "minority_class": None, "class_weights": {}}
    smallest, largest, total = int(counts.min()), int(counts.max()), int(counts.sum())
    if task == "multilabel":  # BCE pos_weight: negatives per positive, per label
        weights = [(num_images - int(n)) / int(n) if n else None for n in counts]
    else:  # inverse frequency, normalised so a balanced dataset gets 1.0 everywhere
        weights = [total / (len(classes) * int(n)) if n else None for n in counts]
    return {
        "imbalance_ratio": largest / smallest if smallest else None,
        "minority_share": smallest / total if total else None,
        "majority_class": classes[int(np.argmax(counts))],
        "minority_class": classes[int(np.argmin(counts))],
        "class_weights": dict(zip(classes, weights)),
    }


def _multilabel(classes: list[str], y: np.ndarray) -> dict:
    """Label cardinality, images without labels, co-occurrence and the commonest label sets."""
    y = (np.asarray(y) > 0).astype(np.int64)
    per_image = y.sum(axis=1)
    if y.size:
        sets, set_counts = np.unique(y, axis=0, return_counts=True)
    else:
        sets, set_counts = y, np.zeros(0, np.int64)
    top = np.argsort(-set_counts, kind="stable")[:20]
    return {
        "label_cardinality": float(per_image.mean()) if per_image.size else None,
        "no_label_images": int((per_image == 0).sum()),
        "cooccurrence": (y.T @ y).tolist(),
        "label_set_counts": [
            {"labels": [classes[j] for j in np.flatnonzero(sets[i])], "count": int(set_counts[i])}
            for i in top
        ],
    }


def _images(scan: ScanResult, ok_idx: np.ndarray) -> dict:
    """Size, aspect, mode and format summaries over usable items."""
    w = np.asarray(scan.width, dtype=np.int64)[ok_idx]
    h = np.asarray(scan.height, dtype=np.int64)[ok_idx]
    aspect = w[h > 0] / h[h > 0]
    sizes: list[list[int]] = []
    if w.size:
        pairs, n = np.unique(np.stack([w, h], axis=1), axis=0, return_counts=True)
        order = np.lexsort((pairs[:, 1], pairs[:, 0], -n))[:MAX_SIZES]
        sizes = [[int(pairs[i, 0]), int(pairs[i, 1]), int(n[i])] for i in order]
    return {
        "width": _summary(w),
        "height": _summary(h),
        "aspect": _summary(aspect),
        "modes": _tally(scan.mode, ok_idx),
        "formats": _tally(scan.format, ok_idx),
        "sizes": sizes,
    }


def _summary(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"min": None, "max": None, "mean": None}
    to = int if x.dtype.kind in "iu" else float
    return {"min": to(x.min()), "max": to(x.max()), "mean": round(float(x.mean()), 4)}


def _tally(values: list[str], ok_idx: np.ndarray) -> dict[str, int]:
    """Counts of non-empty values among usable items, commonest first."""
    tally = Counter(values[i] for i in ok_idx.tolist() if values[i])
    return dict(tally.most_common())


def _duplicates(source: Source, scan: ScanResult, ok: np.ndarray, split_of: np.ndarray) -> dict:
    """Exact and near-duplicate groups and the ones that leak across splits (deep scans only)."""
    if not scan.deep:
        return {"checked": False}
    exact = exact_groups(scan.sha, ok) if scan.sha is not None else []
    near = []
    if scan.dhash is not None:
        near = near_groups(scan.dhash, ok, max_distance=NEAR_MAX_DISTANCE, exclude=exact, thumbs=scan.thumbs)
    # identical content means identical dhash, so an exact group is either inside one near group
    # or in none: count leakage per duplicate cluster, not twice
    in_near = {i for g in near for i in g}
    clusters = near + [g for g in exact if g[0] not in in_near]
    leaks = sorted(cross_split(clusters, split_of), key=lambda x: x["items"][0])

    def ids(groups: list[list[int]]) -> list[list[str]]:
        return [[source.item_id(i) for i in g] for g in groups[:MAX_GROUPS]]

    return {
        "checked": True,
        "max_distance": NEAR_MAX_DISTANCE,
        "exact": ids(exact),
        "near": ids(near),
        "cross_split": [
            {"items": [source.item_id(i) for i in leak["items"]], "splits": leak["splits"]}
            for leak in leaks[:MAX_GROUPS]
        ],
        "num_exact_groups": len(exact),
        "num_near_groups": len(near),
        "num_cross_split": len(leaks),
    }


def _clean(obj: Any) -> Any:
    """Numpy scalars to Python, non-finite floats to None: the dict must pass allow_nan=False."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_stats_text(stats: dict, bar_width: int = 30, max_classes: int = 50) -> str:
    """A compact multi-line summary for the terminal."""
    lines = [
        f"{stats['name']} ({stats['kind']}): {stats['spec']}",
        f"task {stats['task']}, {len(stats['classes'])} classes, "
        f"{stats['num_images']} usable images of {stats['num_files']} files",
        "",
        "class counts" + (" (per label)" if stats["task"] == "multilabel" else "") + ":",
    ]
    counts = stats["class_counts"]
    top = max(counts.values(), default=0) or 1
    width = max((len(c) for c in counts), default=0)
    total = sum(counts.values()) or 1
    for name, n in list(counts.items())[:max_classes]:
        bar = "#" * max(1 if n else 0, round(bar_width * n / top))
        lines.append(f"  {name:<{width}}  {n:>8}  {100 * n / total:5.1f}%  {bar}")
    if len(counts) > max_classes:
        lines.append(f"  ... {len(counts) - max_classes} more classes")
    ratio = stats["imbalance_ratio"]
    ratio_text = f"{ratio:.2f}" if ratio is not None else "undefined (a class has no images)"
    if ratio == 1:
        lines.append("imbalance ratio 1.00 (balanced)")
    else:
        lines.append(
            f"imbalance ratio {ratio_text} (majority {stats['majority_class']}, "
            f"minority {stats['minority_class']})"
        )
    if "multilabel" in stats:
        ml = stats["multilabel"]
        card = ml["label_cardinality"]
        lines.append(
            f"labels per image {card:.2f}" if card is not None else "labels per image: n/a"
        )
        lines[-1] += f", {ml['no_label_images']} images without labels"
    if stats["splits"]:
        parts = [f"{name} {s['num_images']}" for name, s in stats["splits"].items()]
        lines.append("splits: " + ", ".join(parts))
    lines.append(_sizes_line(stats["images"]))
    lines.append(_problems_line(stats))
    lines.extend(f"note: {note}" for note in stats.get("notes", []))
    return "\n".join(lines)


def _sizes_line(images: dict) -> str:
    sizes = images["sizes"]
    if not sizes:
        return "image sizes: none readable"
    common = ", ".join(f"{w}x{h} ({n})" for w, h, n in sizes[:3])
    more = f", {len(sizes) - 3} more sizes" if len(sizes) > 3 else ""
    modes = ", ".join(f"{m} {n}" for m, n in images["modes"].items())
    return f"image sizes: {common}{more}" + (f"; modes: {modes}" if modes else "")


def _problems_line(stats: dict) -> str:
    dup = stats["duplicates"]
    parts = [f"{len(stats['corrupt'])} corrupt"]
    if dup.get("checked"):
        parts += [
            f"{dup['num_exact_groups']} exact duplicate groups",
            f"{dup['num_near_groups']} near-duplicate groups",
            f"{dup['num_cross_split']} leaking across splits",
        ]
    else:
        parts.append("duplicates not checked (needs a deep scan)")
    return "problems: " + ", ".join(parts)

"""Dataset statistics: class balance, splits, image sizes and problems (corrupt files, duplicates,
label conflicts, splits too small to measure anything on).

`compute_stats` returns plain JSON (the app, the CLI's `--json` and cached stats files all read the
same dict), so every number is a Python int/float and undefined values are None, never NaN.

What is not here, on purpose: suggested class weights. Training weighs its loss with the functions in
`engine/train/imbalance.py` (on the train split's counts); a second formula here drifted from them, so
the app and the CLI ask that module (`suggested_class_weights(stats)`) instead.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from engine.data.duplicates import cross_split, exact_groups, label_conflicts, near_groups
from engine.data.source import SPLIT_NAMES, UNASSIGNED, ScanResult, Source
from engine.metrics.display import number, percent

TASKS = ("binary", "multiclass", "multilabel")
#: groups listed per duplicate kind; the counts always cover all of them
MAX_GROUPS = 500
#: distinct image sizes listed
MAX_SIZES = 200
#: dhash bits two images may differ in and still count as near duplicates
NEAR_MAX_DISTANCE = 4
#: fewer validation (or test) images than this of some class, and that split's per-class figures are
#: noise: one image moves that class's recall by 10 points or more
MIN_EVAL_PER_CLASS = 10
SUGGESTED_KFOLD = 5  # folds suggested when an evaluation split is too small to measure on
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def compute_stats(source: Source, scan: ScanResult, splits: dict[str, np.ndarray], task: str) -> dict:
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
        "unlabelled": int(source.unlabelled),
        "classes": classes,
        "class_counts": _named(classes, counts),
        **_balance(classes, counts, int(ok_idx.size)),
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
    if source.hierarchy is not None:
        stats["hierarchy"] = hierarchy_counts(source.hierarchy.members(), stats["class_counts"])
    stats["images"] = _images(scan, ok_idx)
    stats["corrupt"] = list(scan.corrupt)
    stats["duplicates"] = _duplicates(source, scan, ok, split_of, y)
    stats["warnings"] = split_warnings(stats)
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


def hierarchy_counts(members: dict[str, list[str]], class_counts: dict[str, int]) -> dict:
    """A two-level dataset's coarse classes: each with its fine members and images (the sum of theirs)."""
    return {
        "coarse": [
            {
                "name": coarse,
                "images": int(sum(class_counts.get(f, 0) for f in fine)),
                "members": {f: int(class_counts.get(f, 0)) for f in fine},
            }
            for coarse, fine in members.items()
        ]
    }


def _counts(y: np.ndarray, idx: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) items per class (per label for multi-hot labels) among items `idx`."""
    if y.ndim == 2:
        return (y[idx, :num_classes] > 0).sum(axis=0, dtype=np.int64)
    lab = y[idx].astype(np.int64)
    lab = lab[(lab >= 0) & (lab < num_classes)]
    return np.bincount(lab, minlength=num_classes)


def _named(classes: list[str], counts: np.ndarray) -> dict[str, int]:
    return {c: int(n) for c, n in zip(classes, counts)}


def share_of_images(count: float, num_images: float) -> float | None:
    """A class's (or label's) share: its images over ALL the dataset's images (images without any label
    included), the one definition the Dataset page's card and chart, the CLI and the Train page's advice use
    (written with `engine.metrics.display.percent`). None when there are no images."""
    return float(count) / float(num_images) if num_images else None


def _balance(classes: list[str], counts: np.ndarray, num_images: int) -> dict:
    """Imbalance figures. The minority share is the share of IMAGES in the rarest class (for multi-label
    data: of images carrying the rarest label), the one definition the page, the CLI and the Train
    page's advice use; a share of label occurrences would read smaller than any image count shows."""
    if counts.size == 0:
        return {"imbalance_ratio": None, "minority_share": None, "majority_class": None, "minority_class": None}
    smallest, largest = int(counts.min()), int(counts.max())
    return {
        "imbalance_ratio": largest / smallest if smallest else None,
        "minority_share": share_of_images(smallest, num_images),
        "majority_class": classes[int(np.argmax(counts))],
        "minority_class": classes[int(np.argmin(counts))],
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
            {"labels": [classes[j] for j in np.flatnonzero(sets[i])], "count": int(set_counts[i])} for i in top
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


def _duplicates(source: Source, scan: ScanResult, ok: np.ndarray, split_of: np.ndarray, y: np.ndarray) -> dict:
    """Label conflicts first (duplicates whose copies carry different labels), then exact and
    near-duplicate groups and the ones that leak across splits (deep scans only)."""
    if not scan.deep:
        return {"checked": False}
    exact = exact_groups(scan.sha, ok) if scan.sha is not None else []
    near = []
    if scan.dhash is not None:
        near = near_groups(scan.dhash, ok, max_distance=NEAR_MAX_DISTANCE, exclude=exact, thumbs=scan.thumbs)
    # identical content means identical dhash, so an exact group is either inside one near group
    # or in none: count leakage and conflicts per duplicate cluster, not twice
    in_near = {i for g in near for i in g}
    clusters = sorted(near + [g for g in exact if g[0] not in in_near], key=lambda g: g[0])
    leaks = sorted(cross_split(clusters, split_of), key=lambda x: x["items"][0])
    conflicts = label_conflicts(
        clusters, y, hashes=scan.dhash, thumbs=scan.thumbs, exact=exact, max_distance=NEAR_MAX_DISTANCE
    )
    exact_of = {i: k for k, g in enumerate(exact) for i in g}

    def ids(groups: list[list[int]]) -> list[list[str]]:
        return [[source.item_id(i) for i in g] for g in groups[:MAX_GROUPS]]

    def split_name(i: int) -> str | None:
        code = int(split_of[i])
        return SPLIT_NAMES[code] if 0 <= code < len(SPLIT_NAMES) else None

    return {
        "checked": True,
        "max_distance": NEAR_MAX_DISTANCE,
        "label_conflicts": [
            {
                "kind": "exact" if len({exact_of.get(i, -1 - i) for i in g}) == 1 else "near",
                "items": [source.item_id(i) for i in g],
                "labels": [label_text(source.classes, y[i]) for i in g],
                "splits": [split_name(i) for i in g],
            }
            for g in conflicts[:MAX_GROUPS]
        ],
        "exact": ids(exact),
        "near": ids(near),
        "cross_split": [
            {"items": [source.item_id(i) for i in leak["items"]], "splits": leak["splits"]}
            for leak in leaks[:MAX_GROUPS]
        ],
        "num_label_conflicts": len(conflicts),
        "num_exact_groups": len(exact),
        "num_near_groups": len(near),
        "num_cross_split": len(leaks),
    }


def label_text(classes: list[str], row: np.ndarray) -> str:
    """An item's label for people: its class, or for a multi-hot row its labels joined with " + "."""
    row = np.asarray(row)
    if row.ndim == 0:
        c = int(row)
        return classes[c] if 0 <= c < len(classes) else "(unlabelled)"
    names = [classes[j] for j in np.flatnonzero(row > 0) if j < len(classes)]
    return " + ".join(names) or "(no label)"


def split_warnings(stats: dict, minimum: int = MIN_EVAL_PER_CLASS) -> list[dict]:
    """One data-quality warning per evaluation split (val, test) that holds fewer than `minimum` images of
    some class: the per-class rates, thresholds and early stopping measured there move by 1/n per image,
    so on a handful of images they are noise (a 40-image upload has about 3 validation images per class)."""
    out = []
    for split in ("val", "test"):
        info = stats["splits"].get(split)
        if not info:
            continue
        few = {c: n for c, n in info["class_counts"].items() if n < minimum}
        if not few:
            continue
        shown = ", ".join(f"'{c}' {n:,}" for c, n in list(few.items())[:5])
        more = f" and {len(few) - 5:,} more" if len(few) > 5 else ""
        noun = "label" if stats["task"] == "multilabel" else "class"
        nouns = noun if len(few) == 1 else ("labels" if noun == "label" else "classes")
        word = SPLIT_WORDS[split]
        message = (
            f"The {word} split has fewer than {minimum} images of {len(few):,} {nouns} ({shown}{more}), so one "
            f"image moves {'its' if len(few) == 1 else 'their'} {word} figures by more than "
            f"{100 // minimum} percentage points: metrics and thresholds measured there are noise. Add images, "
            f"or use k-fold cross-validation."
        )
        # how to ask for k-fold is said by whoever shows the message: a flag in the terminal, a field on a page
        out.append(
            {
                "kind": "small_split",
                "split": split,
                "min_per_class": minimum,
                "classes": few,
                "message": message,
                "kfold": SUGGESTED_KFOLD,
            }
        )
    return out


def warning_text(warning: dict) -> str:
    """A data-quality warning for the terminal: its message, with the `train` flag that follows its advice."""
    if warning.get("kfold"):
        return f"{warning['message'].removesuffix('.')} (train --kfold {warning['kfold']})."
    return warning["message"]


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


def format_stats_text(stats: dict, bar_width: int = 30, max_classes: int = 50, max_conflicts: int = 10) -> str:
    """A compact multi-line summary for the terminal: label conflicts and data-quality warnings first
    (they decide whether the rest is worth reading), then balance, splits, sizes and the other problems.

    `stats["class_weights"]`, when the caller added it (the CLI does, from `engine.train.imbalance`), is
    printed as the suggested loss weights."""
    lines = [
        f"{stats['name']} ({stats['kind']}): {stats['spec']}",
        f"task {stats['task']}, {len(stats['classes'])} classes, "
        f"{stats['num_images']} usable images of {stats['num_files']} files",
    ]
    first = _conflict_lines(stats.get("duplicates") or {}, max_conflicts)
    first += [f"warning: {warning_text(w)}" for w in stats.get("warnings") or []]
    lines += [""] + first if first else []
    lines += ["", "class counts" + (" (per label)" if stats["task"] == "multilabel" else "") + ":"]
    counts = stats["class_counts"]
    top = max(counts.values(), default=0) or 1
    width = max((len(c) for c in counts), default=0)
    images = stats["num_images"]
    for name, n in list(counts.items())[:max_classes]:
        bar = "#" * max(1 if n else 0, round(bar_width * n / top))
        lines.append(f"  {name:<{width}}  {n:>8}  {percent(n / images if images else None):>7}  {bar}")
    if len(counts) > max_classes:
        lines.append(f"  ... {len(counts) - max_classes} more classes")
    ratio = stats["imbalance_ratio"]
    ratio_text = f"{ratio:.2f}" if ratio is not None else "undefined (a class has no images)"
    share = f", minority share {percent(stats.get('minority_share'))} of images"
    if ratio == 1:
        lines.append("imbalance ratio 1.00 (balanced)")
    else:
        lines.append(
            f"imbalance ratio {ratio_text} (majority {stats['majority_class']}, "
            f"minority {stats['minority_class']}){share}"
        )
    if stats.get("class_weights"):
        shown = ", ".join(f"{c} {number(w, 2)}" for c, w in list(stats["class_weights"].items())[:max_classes])
        lines.append(f"suggested class weights (what --imbalance weighted_loss applies): {shown}")
    if "multilabel" in stats:
        ml = stats["multilabel"]
        card = ml["label_cardinality"]
        lines.append(f"labels per image {card:.2f}" if card is not None else "labels per image: n/a")
        lines[-1] += f", {ml['no_label_images']} images without labels"
    for c in (stats.get("hierarchy") or {}).get("coarse", [])[:max_classes]:
        members = ", ".join(f"{f} {n:,}" for f, n in c["members"].items())
        lines.append(f"coarse class {c['name']}: {c['images']:,} images ({members})")
    if stats.get("unlabelled"):
        lines.append(
            f"unlabelled {stats['unlabelled']:,} images (label empty or NaN; left out of training and metrics)"
        )
    if stats["splits"]:
        parts = [f"{name} {s['num_images']}" for name, s in stats["splits"].items()]
        lines.append("splits: " + ", ".join(parts))
    lines.append(_sizes_line(stats["images"]))
    lines.append(_problems_line(stats))
    lines.extend(f"note: {note}" for note in stats.get("notes", []))
    return "\n".join(lines)


def _conflict_lines(dup: dict, limit: int) -> list[str]:
    """The label conflicts, one line per duplicate group: every copy with its label and split."""
    n = dup.get("num_label_conflicts", 0)
    if not n:
        return []
    many = n != 1
    lines = [
        f"LABEL CONFLICTS: {n:,} duplicate group{'s' if many else ''} "
        f"carr{'y' if many else 'ies'} different labels (the same picture filed under different classes):"
    ]
    for c in dup["label_conflicts"][:limit]:
        copies = [
            f"{item} [{label}{', ' + split if split else ''}]"
            for item, label, split in zip(c["items"], c["labels"], c["splits"])
        ]
        lines.append(f"  {c['kind']}: " + " = ".join(copies))
    if n > limit:
        lines.append(f"  ... {n - limit:,} more (--json lists up to {MAX_GROUPS})")
    return lines


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
        parts = (
            [f"{dup.get('num_label_conflicts', 0)} label conflicts"]
            + parts
            + [
                f"{dup['num_exact_groups']} exact duplicate groups",
                f"{dup['num_near_groups']} near-duplicate groups",
                f"{dup['num_cross_split']} leaking across splits",
            ]
        )
    else:
        parts.append("duplicates not checked (needs a deep scan)")
    return "problems: " + ", ".join(parts)

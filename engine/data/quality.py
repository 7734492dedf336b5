"""Image quality beyond duplicates: blurry, too dark, too bright, near-constant (low-information) images, odd
sizes and aspect ratios, and grayscale images in a colour set, each a score per image with a threshold.

Why cleanvision's definitions, computed here: cleanvision (0.3.7, pinned) reads image FILES one at a time
through PIL in worker processes; Loupe already holds every image decoded once into a uint8 array (the
memory-mapped cache, `Dataset.images`), and built-in and `.npz` datasets have no files at all. So each
measure below is cleanvision's own definition (its formula, its default threshold, read from
`ImagePropertyIssueManager.get_default_params()`, and its convention: a score in [0, 1], LOW = an issue),
computed vectorised with numpy on whole chunks of the decoded array. `tests/test_data_quality.py` checks
that every per-image value equals cleanvision's own function on the same image. The grayscale measure is
our own (cleanvision flags a file whose mode is 'L'; the decoded cache of a colour set stores such a file
as three equal channels, so we measure how far the channels differ); odd size and aspect ratio read the
sizes ON DISK from the header scan (the cache is square).

Each measure is one function (`dark_scores`, `light_scores`, ...): the page, the CLI and the embedding map's
"colour by issue" all call `quality_report`, which caches the scores per dataset fingerprint, working size
and channel count in the dataset's cache folder, so a page rerun or a second CLI call does not recompute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from engine.data.cache import cache_dir
from engine.data.dataset import Dataset
from engine.data.source import Progress, no_progress
from engine.data.stats import label_text

#: bump when a measure's definition changes, so cached scores are recomputed, not misread
QUALITY_VERSION = 1
#: images scored per vectorised chunk (64 px colour: ~25 MB of float32 per chunk at most)
CHUNK = 1024
#: cleanvision computes blur on a copy at most this many pixels on its longer side (its
#: MAX_RESOLUTION_FOR_BLURRY_DETECTION); a larger cache is block-averaged down to it first
BLUR_MAX_PX = 64
#: our own grayscale rule: the mean spread between an image's channels (max - min, over 255) below this
GRAY_MAX_SPREAD = 0.01
#: images listed per measure in the CLI's text (its --json lists `limit` of them)
TOP_SHOWN = 10
STAGE = "scoring image quality"


@dataclass(frozen=True)
class Measure:
    """One quality measure: its name, what it flags, the rule in words, and whose definition it is."""

    key: str
    title: str  # "Blurry", shown as the gallery's heading
    rule: str  # the rule with the threshold written in, e.g. "... below 0.29"
    source: str  # "cleanvision" or "Loupe"


@cache
def cleanvision_params() -> dict[str, dict[str, float]]:
    """cleanvision's default thresholds and constants (imported on first use: ~1 s, with pandas and PIL)."""
    from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager

    return ImagePropertyIssueManager().get_default_params()


def thresholds() -> dict[str, float]:
    """Each measure's threshold: an image whose score is BELOW it is flagged."""
    p = cleanvision_params()
    return {
        "blurry": float(p["blurry"]["threshold"]),
        "dark": float(p["dark"]["threshold"]),
        "light": float(p["light"]["threshold"]),
        "low_information": float(p["low_information"]["threshold"]),
        "odd_aspect_ratio": float(p["odd_aspect_ratio"]["threshold"]),
        "odd_size": 0.5,  # cleanvision's SizeProperty threshold (1.0 when every size is the same: see odd_size_scores)
        "grayscale": GRAY_MAX_SPREAD,
    }


def measures() -> list[Measure]:
    """The measures in the order they are shown, each rule written with its threshold."""
    t = thresholds()
    p = cleanvision_params()
    blur_k, std_cut = p["blurry"]["normalizing_factor"], p["blurry"]["color_threshold"]
    info_k = p["low_information"]["normalizing_factor"]
    return [
        Measure(
            "blurry",
            "Blurry",
            f"score = 1 - exp(-{blur_k:g} x the standard deviation of the 3x3 edge filter (an 8-neighbour Laplacian) "
            f"on the grayscale copy at most {BLUR_MAX_PX} px), plus the same of the gray histogram's standard "
            f"deviation where that exceeds {std_cut:g} (so flat images are not called blurry); blurry if below "
            f"{t['blurry']:g}",
            "cleanvision",
        ),
        Measure(
            "dark",
            "Too dark",
            "score = the 99th percentile of pixel brightness sqrt(0.241 R^2 + 0.691 G^2 + 0.068 B^2) / 255; "
            f"too dark if below {t['dark']:g}",
            "cleanvision",
        ),
        Measure(
            "light",
            "Too bright",
            f"score = 1 - the 5th percentile of pixel brightness; too bright if below {t['light']:g} "
            f"(95% of the pixels brighter than {1 - t['light']:g})",
            "cleanvision",
        ),
        Measure(
            "low_information",
            "Low information (near-constant)",
            f"score = min(1, {info_k:g} x the entropy in bits of the pixel histogram); low information if below "
            f"{t['low_information']:g} (under {t['low_information'] / info_k:g} bits)",
            "cleanvision",
        ),
        Measure(
            "odd_aspect_ratio",
            "Odd aspect ratio",
            f"score = min(width / height, height / width) of the file; odd if below {t['odd_aspect_ratio']:g}",
            "cleanvision",
        ),
        Measure(
            "odd_size",
            "Odd size",
            "score = 1 - the distance of sqrt(width x height) from the middle of [Q1 - 3 IQR, Q3 + 3 IQR] over "
            f"that band's width; odd if below {t['odd_size']:g} (outside the band; when every size is the same, "
            "any other size)",
            "cleanvision",
        ),
        Measure(
            "grayscale",
            "Grayscale in a colour set",
            "score = the mean spread between the channels, (max - min) / 255 per pixel; grayscale if below "
            f"{t['grayscale']:g} (only in a colour dataset)",
            "Loupe",
        ),
    ]


# --- the measures: one function each, (N, H, W, C) uint8 in, (N,) float64 scores out ------------------------


def brightness(images: np.ndarray) -> np.ndarray:
    """(N, H*W) per-pixel perceived brightness in [0, 1] (cleanvision's `calculate_brightness`; gray / 255)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1, images.shape[-1])
    if x.shape[-1] == 1:
        return x[..., 0] / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return np.sqrt(0.241 * r * r + 0.691 * g * g + 0.068 * b * b) / 255.0


def dark_scores(images: np.ndarray) -> np.ndarray:
    """cleanvision's dark score: the 99th percentile of brightness (a dark image has no bright pixels)."""
    return np.percentile(brightness(images), 99, axis=1)


def light_scores(images: np.ndarray) -> np.ndarray:
    """cleanvision's light score: 1 - the 5th percentile of brightness (a washed-out image has no dark pixels)."""
    return 1.0 - np.percentile(brightness(images), 5, axis=1)


def _histograms(values: np.ndarray, bins: int) -> np.ndarray:
    """(N, bins) counts of the integer values of each row of `values` (N, M), in one bincount."""
    n = len(values)
    offsets = (np.arange(n, dtype=np.int64) * bins)[:, None]
    flat = (values.astype(np.int64) + offsets).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins)


def entropy_bits(images: np.ndarray) -> np.ndarray:
    """PIL's `Image.entropy()` per image: -sum p log2 p over the histogram of all bands (768 bins for RGB)."""
    n, c = len(images), images.shape[-1]
    bands = np.asarray(images).reshape(n, -1, c).transpose(0, 2, 1)  # (N, C, H*W)
    hist = _band_histograms(bands)
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p), 0.0)
    return -terms.sum(axis=1)


def _band_histograms(bands: np.ndarray) -> np.ndarray:
    """(N, 256 * C) the bands' histograms side by side, as PIL's `histogram()` returns them."""
    n, c, _ = bands.shape
    shifted = bands.astype(np.int64) + (np.arange(c, dtype=np.int64) * 256)[None, :, None]
    return _histograms(shifted.reshape(n, -1), 256 * c)


def low_information_scores(images: np.ndarray) -> np.ndarray:
    """cleanvision's low-information score: min(1, 0.1 x entropy); a near-constant image has little entropy."""
    k = cleanvision_params()["low_information"]["normalizing_factor"]
    return np.minimum(k * entropy_bits(images), 1.0)


def gray_pil(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8: PIL's RGB -> 'L' conversion (ITU-R 601-2 luma, PIL's fixed-point rounding)."""
    x = np.asarray(images)
    if x.shape[-1] == 1:
        return x[..., 0]
    r, g, b = (x[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _shrink(gray: np.ndarray, max_px: int = BLUR_MAX_PX) -> np.ndarray:
    """Block-average a square cache larger than `max_px` down to at most `max_px` (cleanvision resizes to 64)."""
    side = gray.shape[1]
    k = -(-side // max_px)  # ceil
    if k <= 1:
        return gray
    m = (side // k) * k
    g = gray[:, :m, :m].astype(np.float64).reshape(len(gray), m // k, k, m // k, k).mean(axis=(2, 4))
    return np.round(g).astype(np.uint8)


def edge_filter(gray: np.ndarray) -> np.ndarray:
    """PIL's `ImageFilter.FIND_EDGES` on (N, H, W) uint8: 8 x centre - the 8 neighbours, clipped to 0..255;
    the border pixels are copied unfiltered, as PIL does."""
    g = gray.astype(np.int64)
    out = g.copy()
    if g.shape[1] < 3 or g.shape[2] < 3:
        return out
    c = g[:, 1:-1, 1:-1]
    neighbours = sum(
        g[:, 1 + dy : g.shape[1] - 1 + dy, 1 + dx : g.shape[2] - 1 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    )
    out[:, 1:-1, 1:-1] = np.clip(8 * c - neighbours, 0, 255)
    return out


def blurry_scores(images: np.ndarray) -> np.ndarray:
    """cleanvision's blurry score: 1 - exp(-0.01 x std(edges)), plus its histogram term for flat images."""
    p = cleanvision_params()["blurry"]
    k, cut = p["normalizing_factor"], p["color_threshold"]
    gray = _shrink(gray_pil(images))
    n = len(gray)
    edges = edge_filter(gray).reshape(n, -1).astype(np.float64)
    blur = np.sqrt(edges.var(axis=1))  # ImageStat's var: the population variance
    hist_std = _histograms(gray.reshape(n, -1), 256).std(axis=1)
    blur_score = 1 - np.exp(-blur * k)
    std_score = 1 - np.exp(-hist_std * k)
    std_score[std_score <= cut] = 0
    return np.minimum(blur_score + std_score, 1.0)


def grayscale_scores(images: np.ndarray) -> np.ndarray:
    """Ours: the mean per-pixel spread between channels, (max - min) / 255; 0 for a gray picture stored as RGB.
    A single-channel image scores 0."""
    x = np.asarray(images)
    n = len(x)
    if x.shape[-1] == 1:
        return np.zeros(n)
    flat = x.reshape(n, -1, x.shape[-1])
    return (flat.max(axis=2).astype(np.float64) - flat.min(axis=2)).mean(axis=1) / 255.0


def aspect_ratio_scores(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """cleanvision's aspect-ratio score: min(w / h, h / w); NaN where a size is unknown (0)."""
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.minimum(w / h, h / w)
    return np.where((w > 0) & (h > 0), s, np.nan)


def odd_size_scores(width: np.ndarray, height: np.ndarray, iqr_factor: float | None = None) -> tuple[np.ndarray, float]:
    """cleanvision's size score and its threshold: sqrt(w h) against [Q1 - 3 IQR, Q3 + 3 IQR] over known sizes.

    1 - |size - band middle| / band width (clipped to [0, 1]), odd below 0.5; when every size is the same
    the band is a point, the score is 1 - |size - it| / it and the threshold 1.0 (any other size is odd)."""
    factor = float(cleanvision_params()["odd_size"]["iqr_factor"] if iqr_factor is None else iqr_factor)
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    known = (w > 0) & (h > 0)
    size = np.sqrt(w * h)
    out = np.full(len(size), np.nan)
    if not known.any():
        return out, 0.5
    q1, q3 = np.percentile(size[known], [25, 75])
    low, high = q1 - factor * (q3 - q1), q3 + factor * (q3 - q1)
    middle, gap = (low + high) / 2, high - low
    norm, threshold = (gap, 0.5) if gap > 0 else (middle, 1.0)
    out[known] = 1 - np.clip(np.abs(size[known] - middle) / norm, 0, 1)
    return out, threshold


PIXEL_MEASURES = {
    "blurry": blurry_scores,
    "dark": dark_scores,
    "light": light_scores,
    "low_information": low_information_scores,
    "grayscale": grayscale_scores,
}


# --- the report ---------------------------------------------------------------------------------------------


@dataclass
class QualityReport:
    """Every measure's score per item (NaN where an item is unusable or a measure does not apply) and the
    threshold each was judged at; `flagged(key)` ranks the flagged items worst (lowest score) first."""

    scores: dict[str, np.ndarray]
    thresholds: dict[str, float]
    applies: dict[str, bool] = field(default_factory=dict)  # grayscale applies to colour sets only

    def flagged(self, key: str) -> np.ndarray:
        """Item indices whose `key` score is below its threshold, lowest score first (ties by index)."""
        s = self.scores[key]
        idx = np.flatnonzero(np.nan_to_num(s, nan=np.inf) < self.thresholds[key])
        return idx[np.argsort(s[idx], kind="stable")]

    def counts(self) -> dict[str, int]:
        return {key: int(len(self.flagged(key))) if self.applies.get(key, True) else 0 for key in self.scores}


def _cache_path(ds: Dataset) -> str:
    n, size, _, channels = ds.images.shape
    name = f"quality-v{QUALITY_VERSION}-{size}px-{channels}c-{n}.npz"
    return str(cache_dir() / "datasets" / ds.fingerprint / name)


def score_images(images: np.ndarray, ok: np.ndarray, progress: Progress = no_progress) -> dict[str, np.ndarray]:
    """The pixel measures of every usable item, in chunks of `CHUNK` (NaN for unusable items)."""
    n = len(images)
    out = {key: np.full(n, np.nan) for key in PIXEL_MEASURES}
    usable = np.flatnonzero(np.asarray(ok, bool))
    progress(0, len(usable), STAGE)
    for start in range(0, len(usable), CHUNK):
        idx = usable[start : start + CHUNK]
        chunk = np.asarray(images[idx])
        for key, fn in PIXEL_MEASURES.items():
            out[key][idx] = fn(chunk)
        progress(min(len(usable), start + CHUNK), len(usable), STAGE)
    return out


def quality_report(ds: Dataset, progress: Progress = no_progress) -> QualityReport:
    """Every measure for `ds`, from the cache when this content, size and channel count were scored before."""
    progress = progress or no_progress
    path = _cache_path(ds)
    scores: dict[str, np.ndarray] | None = None
    if os.path.exists(path):
        try:
            with np.load(path) as f:
                scores = {key: f[key] for key in PIXEL_MEASURES if key in f.files}
        except (OSError, ValueError):
            scores = None  # a damaged file is rebuilt below
        if scores is not None and len(scores) != len(PIXEL_MEASURES):
            scores = None
    if scores is None:
        scores = score_images(ds.images, ds.scan.ok, progress)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **scores)
        os.replace(tmp, path)
    ok = np.asarray(ds.scan.ok, bool)
    width = np.where(ok, ds.scan.width, 0)
    height = np.where(ok, ds.scan.height, 0)
    scores = dict(scores)
    scores["odd_aspect_ratio"] = aspect_ratio_scores(width, height)
    scores["odd_size"], size_threshold = odd_size_scores(width, height)
    limits = thresholds() | {"odd_size": size_threshold}
    colour = ds.channels == 3
    if not colour:
        scores["grayscale"] = np.full(len(ds), np.nan)  # every image is gray: nothing to flag
    order = [m.key for m in measures()]
    return QualityReport(
        scores={key: scores[key] for key in order},
        thresholds=limits,
        applies={key: (colour if key == "grayscale" else True) for key in order},
    )


def quality_json(ds: Dataset, report: QualityReport, limit: int = 100) -> dict:
    """The report as plain JSON: per measure its rule, source, threshold, count and the `limit` worst items."""
    out = {"spec": ds.source.spec, "num_images": int(np.asarray(ds.scan.ok).sum()), "measures": {}}
    for m in measures():
        flagged = report.flagged(m.key)
        out["measures"][m.key] = {
            "title": m.title,
            "rule": m.rule,
            "source": m.source,
            "applies": report.applies[m.key],
            "threshold": report.thresholds[m.key],
            "count": int(len(flagged)) if report.applies[m.key] else 0,
            "items": [
                {
                    "item": ds.source.item_id(int(i)),
                    "index": int(i),
                    "score": round(float(report.scores[m.key][i]), 6),
                    "label": label_text(ds.classes, ds.labels[int(i)]),
                }
                for i in flagged[:limit]
            ]
            if report.applies[m.key]
            else [],
        }
    return out


def format_quality_text(summary: dict, shown: int = TOP_SHOWN) -> str:
    """The report for the terminal: per measure its count, its rule and the worst few items with their scores."""
    from engine.metrics.display import number

    lines = [f"image quality of {summary['spec']} ({summary['num_images']:,} images)"]
    for m in summary["measures"].values():
        if not m["applies"]:
            lines.append(f"{m['title']}: not applicable (a grayscale dataset)")
            continue
        lines.append(f"{m['title']}: {m['count']:,} flagged  [{m['source']}: {m['rule']}]")
        for it in m["items"][:shown]:
            lines.append(f"  {number(it['score'])}  {it['item']}  ({it['label']})")
        if m["count"] > shown:
            lines.append(f"  ... {m['count'] - shown:,} more (--json lists up to the --limit worst)")
    return "\n".join(lines)


def json_dumps(summary: dict) -> str:
    """`summary` as the CLI prints it (no NaN can appear: unusable items are never listed)."""
    return json.dumps(summary, indent=2, allow_nan=False)

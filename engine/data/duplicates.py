"""Exact and near-duplicate images, duplicates whose copies carry different labels, and duplicates that
leak across train/val/test.

Near duplicates: candidates come from a 64-bit difference hash (dhash) and multi-index hashing (split
the bits into d+1 bands; two hashes within Hamming distance d agree exactly on at least one band, so
bucketing by band finds candidates without comparing all pairs). Candidates are then confirmed on
pixels (16x16 thumbnails), because a dhash alone cannot tell apart different small pictures on plain
backgrounds. Matches are joined transitively (connected components).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.data.source import SPLIT_NAMES

#: ITU-R 601 luma weights, the same as Pillow's convert('L')
_LUMA = (0.299, 0.587, 0.114)
#: float elements per dhash chunk (~256 MB of float32), so memmaps of large images stay bounded
_CHUNK_ELEMENTS = 64 * 1024 * 1024

#: neighbours each item is compared with inside a run of equal band value (see `candidate_pairs`)
WINDOW = 32
#: brightness-centred mean absolute difference (0..255) of 16x16 thumbnails still called "the same picture"
MAX_PIXEL_DIFF = 4.0
#: the same, for copies under different labels (a label conflict): stricter, because grouping at 4.0 also
#: joins different small items on plain backgrounds, while real copies (JPEG re-encoded, resized,
#: brightened) differ by under 1
CONFLICT_MAX_PIXEL_DIFF = 1.5


def dhash_batch(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N,) uint64 difference hashes.

    Grayscale, area-average to 8 rows x 9 columns, bit = left < right (row-major, first bit is the
    most significant). Works on a memmap chunk by chunk; tiny images are upsampled by the pooling.
    """
    import torch  # lazily: the decode workers import this package and need no torch
    import torch.nn.functional as F

    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"dhash_batch expects (N, H, W[, C]) images, got shape {images.shape}")
    n = images.shape[0]
    per_image = int(np.prod(images.shape[1:])) or 1
    step = max(1, min(chunk, _CHUNK_ELEMENTS // per_image))
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, step):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + step])).float()
        if x.ndim == 4:  # (B, H, W, C) -> (B, C, H, W); pool, then mix channels (both linear)
            x = x.permute(0, 3, 1, 2)
        else:
            x = x.unsqueeze(1)
        small = F.adaptive_avg_pool2d(x, (8, 9))
        c = small.shape[1]
        if c >= 3:  # RGB or RGBA: alpha is ignored
            gray = (small[:, :3] * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1)
        else:  # L or LA
            gray = small[:, 0]
        bits = (gray[:, :, :-1] < gray[:, :, 1:]).reshape(-1, 64).numpy()
        out[start : start + step] = _pack_bits(bits)
    return out


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(B, 64) bool -> (B,) uint64, first column most significant."""
    packed = np.packbits(bits, axis=1)  # (B, 8) uint8, big-endian bit order
    return packed.view(">u8").reshape(-1).astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance between uint64 hash arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def exact_groups(keys: list[str], ok: np.ndarray) -> list[list[int]]:
    """Groups (size >= 2) of usable items with the same non-empty content hash, in index order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(np.asarray(ok, dtype=bool)).tolist():
        if keys[i]:
            by_key[keys[i]].append(i)
    return sorted((g for g in by_key.values() if len(g) >= 2), key=lambda g: g[0])


def thumbnails_batch(images: np.ndarray, side: int = 16, chunk_bytes: int = 64 << 20) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, side, side) uint8 grayscale thumbnails, for the pixel check below.

    Chunks are sized by bytes, not images: a chunk becomes float32 (4x its size), and 4096 images are
    300 MB at 64 px but 2.5 GB at 224 px, which the app process would hold at its peak."""
    import torch  # lazily: the decode workers import this package and need no torch
    import torch.nn.functional as F

    n = images.shape[0]
    chunk = max(1, chunk_bytes // max(1, int(np.prod(images.shape[1:]))))
    out = np.empty((n, side, side), dtype=np.uint8)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).float()
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)
        small = F.adaptive_avg_pool2d(x, (side, side))
        gray = (small[:, :3] * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1) if small.shape[1] >= 3 else small[:, 0]
        out[start : start + chunk] = gray.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def pixel_distance(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Mean absolute difference (0..255) of brightness-centred thumbnails for pairs (a[k], b[k]).

    Centring each thumbnail on its own mean makes a brightened copy count as the same picture.
    """
    out = np.empty(len(a), dtype=np.float32)
    means = thumbs.reshape(len(thumbs), -1).mean(axis=1, dtype=np.float32)
    for s in range(0, len(a), chunk):
        ta = thumbs[a[s : s + chunk]].reshape(-1, thumbs[0].size).astype(np.float32) - means[a[s : s + chunk], None]
        tb = thumbs[b[s : s + chunk]].reshape(-1, thumbs[0].size).astype(np.float32) - means[b[s : s + chunk], None]
        out[s : s + chunk] = np.abs(ta - tb).mean(axis=1)
    return out


def candidate_pairs(h: np.ndarray, d: int, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of positions within Hamming distance d, found through d+1 bit bands (pigeonhole: such a
    pair agrees exactly on at least one band).

    Within each run of equal band value, sorted by the full hash, every item is compared with its
    next `window` neighbours: exact for runs up to `window + 1` long; inside longer runs (thousands
    of near-blank images) neighbours still chain the run together, which is all grouping needs.
    """
    n = h.size
    bounds = np.linspace(0, 64, d + 2).round().astype(int)
    a_all, b_all = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        key = h & np.uint64(((1 << (hi - lo)) - 1) << lo)
        order = np.lexsort((h, key))
        ks, hs = key[order], h[order]
        for k in range(1, min(window, n - 1) + 1):
            same = np.flatnonzero(ks[k:] == ks[:-k])
            if same.size == 0:
                break
            close = same[hamming(hs[same], hs[same + k]) <= d]
            a_all.append(order[close])
            b_all.append(order[close + k])
    if not a_all:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    pairs = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return pairs // n, pairs % n


def near_groups(
    hashes: np.ndarray,
    ok: np.ndarray,
    max_distance: int = 4,
    exclude: list[list[int]] | None = None,
    thumbs: np.ndarray | None = None,
    max_pixel_diff: float = MAX_PIXEL_DIFF,
    window: int = WINDOW,
) -> list[list[int]]:
    """Groups of usable items linked by dhash distance <= max_distance (and, with `thumbs`, by
    pixel distance <= max_pixel_diff), joined transitively.

    The pixel check matters: on small images with plain backgrounds (Fashion-MNIST, digits) many
    different pictures share a dhash, and hash-only grouping lumps most of the dataset together.
    A group made only of identical-content items (one `exclude` group) is left out: it is already
    reported as an exact duplicate.
    """
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be in 0..63, got {max_distance}")
    idx = np.flatnonzero(np.asarray(ok, dtype=bool))
    if idx.size < 2:
        return []
    h = np.asarray(hashes, dtype=np.uint64)[idx]
    a, b = candidate_pairs(h, max_distance, window)
    if thumbs is not None and a.size:
        keep = pixel_distance(thumbs, idx[a], idx[b]) <= max_pixel_diff
        a, b = a[keep], b[keep]
    graph = coo_matrix((np.ones(a.size, dtype=bool), (a, b)), shape=(idx.size, idx.size))
    _, comp = connected_components(graph, directed=False)
    content = _content_labels(len(hashes), exclude)
    order = np.argsort(comp, kind="stable")
    cuts = np.flatnonzero(np.diff(comp[order])) + 1
    groups = [
        members.tolist()
        for members in np.split(idx[order], cuts)
        if members.size >= 2 and np.unique(content[members]).size > 1
    ]
    return sorted(groups, key=lambda g: g[0])


def _content_labels(n: int, exclude: list[list[int]] | None) -> np.ndarray:
    """One label per item: shared within an exact group, unique otherwise."""
    labels = np.arange(n, dtype=np.int64)
    for g in exclude or []:
        labels[np.asarray(g, dtype=np.int64)] = g[0]
    return labels


def cross_split(groups: list[list[int]], split_of: np.ndarray) -> list[dict]:
    """Groups whose members sit in more than one split (train/val/test leakage).

    Unassigned items (split code < 0) do not count as a split.
    """
    split_of = np.asarray(split_of)
    out = []
    for g in groups:
        codes = np.unique(split_of[np.asarray(g, dtype=np.int64)])
        codes = codes[(codes >= 0) & (codes < len(SPLIT_NAMES))]
        if codes.size > 1:
            out.append({"items": list(g), "splits": [SPLIT_NAMES[c] for c in codes.tolist()]})
    return out


def label_conflicts(
    groups: list[list[int]],
    labels: np.ndarray,
    hashes: np.ndarray | None = None,
    thumbs: np.ndarray | None = None,
    exact: list[list[int]] | None = None,
    max_distance: int = 4,
    max_pixel_diff: float = CONFLICT_MAX_PIXEL_DIFF,
    window: int = WINDOW,
) -> list[list[int]]:
    """The copies of one picture filed under different labels: in `negatives/` and `positives/`, or under two
    labels in a table. For multi-hot (N, C) labels, copies conflict when their label SETS differ.

    Why it matters more than any other duplicate: the model is taught both answers for one picture, and
    whichever copy lands in val or test is scored wrong whatever the model does.

    A conflict claims "the same picture", which a duplicate group does not always show: near groups are
    joined transitively, and on small items on a plain background (2x2 mosaics with three blank tiles)
    chains of merely similar pictures form. So inside each group the copies are linked again, strictly:
    identical content (an `exact` group), or dhash within `max_distance` AND pixel distance within
    `max_pixel_diff` (tighter than grouping's: re-encoded, resized or brightened copies stay under 1). The
    result: each set of strictly linked copies that carries more than one label, in index order. Without
    `hashes` (or `thumbs`) the group itself (or its dhash links alone) stands in.
    """
    labels = np.asarray(labels)
    content = _content_labels(len(labels), exact)
    out = []
    for g in groups:
        g = np.asarray(g, dtype=np.int64)
        if _distinct_labels(labels[g]) < 2:
            continue
        if hashes is None:
            parts = [g]
        else:
            a, b = candidate_pairs(np.asarray(hashes, dtype=np.uint64)[g], max_distance, window)
            if thumbs is not None and a.size:
                keep = pixel_distance(thumbs, g[a], g[b]) <= max_pixel_diff
                a, b = a[keep], b[keep]
            same = [np.flatnonzero(content[g] == c) for c in np.unique(content[g])]  # identical copies: linked
            a = np.concatenate([a] + [np.full(len(m) - 1, m[0]) for m in same])
            b = np.concatenate([b] + [m[1:] for m in same])
            graph = coo_matrix((np.ones(a.size, dtype=bool), (a, b)), shape=(g.size, g.size))
            _, comp = connected_components(graph, directed=False)
            parts = [g[comp == c] for c in np.unique(comp)]
        out += [part.tolist() for part in parts if part.size > 1 and _distinct_labels(labels[part]) > 1]
    return sorted(out, key=lambda p: p[0])


def _distinct_labels(rows: np.ndarray) -> int:
    """How many different labels (label sets, for multi-hot rows) `rows` hold."""
    return int(np.unique(rows > 0, axis=0).shape[0] if rows.ndim == 2 else np.unique(rows).size)

"""Decode once: every image decoded a single time into a memory-mapped uint8 array, cached on disk.

The cache is keyed by the dataset fingerprint and the working resolution, so a second open of the
same data (by the app, the CLI or a training subprocess) maps the array instead of decoding again.
The same pass records what the statistics need (sizes, modes, content and perceptual hashes, and the
files that failed to decode), so a full scan costs one read of each file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from engine.data.decode import GRAY_MODES
from engine.data.duplicates import dhash_batch, thumbnails_batch
from engine.data.source import Progress, ScanResult, Source, no_progress
from engine.data.workers import decode_chunk, header_chunk, run_chunks

#: bump when the cache layout or the decoded pixels change, so older caches are rebuilt, not misread
CACHE_VERSION = 3  # 3: centre crop taken before resampling, transparent colours composited


def cache_dir() -> Path:
    return Path(os.environ.get("LOUPE_CACHE_DIR", Path.home() / ".cache" / "loupe")).expanduser()


def _dataset_dir(source: Source) -> Path:
    return cache_dir() / "datasets" / source.fingerprint


def scan_headers(source: Source, progress: Progress = no_progress, sample: int | None = None) -> ScanResult:
    """Sizes, modes and formats from file headers only: seconds for 100k small files, no decoding.

    With `sample`, only that many files spread evenly over the dataset are read (not cached): enough
    to choose a working size and the channel count before the decode pass, which reads them all.
    """
    n = len(source)
    if source.arrays is not None:
        return _array_scan(source, deep=False)
    path = _dataset_dir(source) / "headers.json"
    if path.exists():
        return _load_scan(path)
    if sample is not None and n > sample:
        picked = np.linspace(0, n - 1, sample).round().astype(int)
        return _scan_files(source, [source.files[i] for i in picked], no_progress)
    scan = _scan_files(source, source.files, progress)
    _save_scan(path, scan)
    return scan


def _scan_files(source: Source, files: list[str], progress: Progress) -> ScanResult:
    n = len(files)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    mode, fmt, corrupt = [""] * n, [""] * n, []
    ok = np.zeros(n, bool)
    for i, header, reason in run_chunks(header_chunk, str(source.root), files, (), "reading headers", progress):
        if header is None:
            corrupt.append({"path": files[i], "reason": reason})
        else:
            (width[i], height[i], mode[i], fmt[i]), ok[i] = header, True
    corrupt.sort(key=lambda c: c["path"])
    return ScanResult(ok=ok, width=width, height=height, mode=mode, format=fmt, corrupt=corrupt)


def channels_for(scan: ScanResult) -> int:
    """1 when every usable image is grayscale on disk, else 3."""
    modes = {m for m, good in zip(scan.mode, scan.ok) if good}
    return 1 if modes and modes <= GRAY_MODES else 3


def default_size(scan: ScanResult, cap: int = 64) -> int:
    """A working resolution for looking at the data: the typical short side, at most `cap`."""
    short = np.minimum(scan.width, scan.height)[scan.ok]
    return int(min(cap, np.median(short))) if len(short) else cap


def decoded(
    source: Source, size: int, channels: int, resize_mode: str = "crop", progress: Progress = no_progress
) -> tuple[np.ndarray, ScanResult]:
    """The (N, size, size, channels) uint8 array (memory-mapped) and the deep scan, building both once."""
    folder = _dataset_dir(source) / f"v{CACHE_VERSION}-s{size}-c{channels}-{resize_mode}"
    if not (folder / "images.npy").exists():
        _build(source, size, channels, resize_mode, folder, progress)
    images = np.load(folder / "images.npy", mmap_mode="r")
    scan = _load_scan(folder / "scan.json")
    scan.thumbs = np.load(folder / "thumbs.npy", mmap_mode="r")
    return images, scan


def _build(source: Source, size: int, channels: int, resize_mode: str, folder: Path, progress: Progress) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(source)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, channels))
    if source.arrays is not None:
        scan = _fill_from_arrays(source, images, size, channels, progress)
    else:
        images.flush()  # the workers write rows through their own maps of the same file
        scan = _fill_from_files(source, tmp / "images.npy", size, channels, resize_mode, progress)
    progress(n, n, "hashing")
    thumbs = thumbnails_batch(images)
    scan.dhash = dhash_batch(thumbs)  # from the 16x16 thumbnails: same gradients, a fraction of the work
    np.save(tmp / "thumbs.npy", thumbs)
    scan.deep = True
    images.flush()
    del images
    _save_scan(tmp / "scan.json", scan)
    try:
        os.replace(tmp, folder)  # atomic: a reader sees either no cache or a complete one
    except OSError:  # another process finished the same cache first; theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def _fill_from_files(
    source: Source, images_path: Path, size: int, channels: int, resize_mode: str, progress: Progress
) -> ScanResult:
    n = len(source)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    mode, fmt, sha, corrupt = [""] * n, [""] * n, [""] * n, []
    ok = np.zeros(n, bool)
    extra = (str(images_path), size, channels, resize_mode)
    for i, found, reason in run_chunks(decode_chunk, str(source.root), source.files, extra, "decoding", progress):
        if found is None:
            corrupt.append({"path": source.item_id(i), "reason": reason})
        else:
            (width[i], height[i], mode[i], fmt[i], sha[i]), ok[i] = found, True
    corrupt.sort(key=lambda c: c["path"])
    return ScanResult(ok=ok, width=width, height=height, mode=mode, format=fmt, corrupt=corrupt, sha=sha)


def _fill_from_arrays(source: Source, images: np.ndarray, size: int, channels: int, progress: Progress) -> ScanResult:
    import torch
    import torch.nn.functional as F

    raw = source.arrays()
    raw = raw[..., None] if raw.ndim == 3 else raw
    n = len(raw)
    for start in range(0, n, 4096):
        batch = raw[start : start + 4096]
        if batch.shape[3] != channels:
            batch = (
                batch.mean(axis=3, keepdims=True).round().astype(np.uint8)
                if channels == 1
                else np.repeat(batch, 3, axis=3)
            )
        if batch.shape[1:3] != (size, size):
            t = torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).float()  # a writable copy
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            batch = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        images[start : start + len(batch)] = batch
        progress(min(n, start + 4096), n, "resizing")
    scan = _array_scan(source, deep=True, raw=raw)
    return scan


def _array_scan(source: Source, deep: bool, raw: np.ndarray | None = None) -> ScanResult:
    raw = source.arrays() if raw is None else raw
    n, h, w = raw.shape[0], raw.shape[1], raw.shape[2]
    gray = raw.ndim == 3 or raw.shape[3] == 1
    sha = None
    if deep:
        flat = raw.reshape(n, -1)
        sha = [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat]
    return ScanResult(
        ok=np.ones(n, bool),
        width=np.full(n, w, np.int32),
        height=np.full(n, h, np.int32),
        mode=["L" if gray else "RGB"] * n,
        format=["array"] * n,
        corrupt=[],
        deep=deep,
        sha=sha,
    )


def _save_scan(path: Path, scan: ScanResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "ok": scan.ok.tolist(),
        "width": scan.width.tolist(),
        "height": scan.height.tolist(),
        "mode": scan.mode,
        "format": scan.format,
        "corrupt": scan.corrupt,
        "deep": scan.deep,
        "sha": scan.sha,
        "dhash": None if scan.dhash is None else [int(x) for x in scan.dhash],
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _load_scan(path: Path) -> ScanResult:
    p = json.loads(path.read_text())
    return ScanResult(
        ok=np.array(p["ok"], bool),
        width=np.array(p["width"], np.int32),
        height=np.array(p["height"], np.int32),
        mode=p["mode"],
        format=p["format"],
        corrupt=p["corrupt"],
        deep=p["deep"],
        sha=p["sha"],
        dhash=None if p["dhash"] is None else np.array(p["dhash"], dtype=np.uint64),
    )

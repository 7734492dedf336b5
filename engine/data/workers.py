"""Per-file work for the scan and the decode-once pass, run in worker processes.

Processes, not threads: decoding small images is mostly Python inside Pillow, which holds the GIL,
so threads ran at a third of a plain loop's speed on 2 cores (bench/RESULTS.md). This module imports
only numpy and Pillow, so a spawned worker starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from engine.data.decode import ImageDecodeError, decode, read_header, read_image_file

#: below this many files the pool's start-up costs more than it saves
POOL_MIN_FILES = 3000
CHUNK = 512


def header_chunk(root: str, items: list[tuple[int, str]]) -> list[tuple]:
    """(index, (w, h, mode, format) | None, reason) per file."""
    out = []
    for i, rel in items:
        try:
            h = read_header(_path(root, rel))
            out.append((i, (h.width, h.height, h.mode, h.format), ""))
        except ImageDecodeError as e:
            out.append((i, None, str(e)))
    return out


def decode_chunk(
    root: str, items: list[tuple[int, str]], out_path: str, size: int, channels: int, resize_mode: str
) -> list[tuple]:
    """Decode files into rows of the memory-mapped cache; (index, (w, h, mode, format, sha) | None, reason)."""
    images = np.load(out_path, mmap_mode="r+")
    out = []
    for i, rel in items:
        try:
            data = read_image_file(_path(root, rel))
            arr, h = decode(data, rel, size=size, channels=channels, resize_mode=resize_mode)
        except OSError as e:
            out.append((i, None, f"cannot read the file ({e.strerror or e})"))
            continue
        except ImageDecodeError as e:
            out.append((i, None, str(e)))
            continue
        images[i] = arr
        out.append((i, (h.width, h.height, h.mode, h.format, hashlib.blake2b(data, digest_size=16).hexdigest()), ""))
    images.flush()
    return out


def _path(root: str, rel: str):
    from pathlib import Path

    return Path(os.path.join(root, rel))


def run_chunks(
    fn: Callable[..., list[tuple]],
    root: str,
    files: list[str],
    extra: tuple,
    stage: str,
    progress: Callable[[int, int, str], None],
) -> Iterable[tuple]:
    """Apply `fn(root, chunk, *extra)` over all files in chunks, in a process pool when it pays off."""
    n = len(files)
    chunks = [list(zip(range(s, min(n, s + CHUNK)), files[s : s + CHUNK])) for s in range(0, n, CHUNK)]
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    done = 0
    if n < POOL_MIN_FILES or workers < 2:
        for chunk in chunks:
            yield from fn(root, chunk, *extra)
            done += len(chunk)
            progress(done, n, stage)
        return
    # spawn, not fork: the app and the trainer are multi-threaded (and may hold CUDA/OpenMP state)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, root, chunk, *extra) for chunk in chunks]
        for fut, chunk in zip(futures, chunks):
            yield from fut.result()
            done += len(chunk)
            progress(done, n, stage)

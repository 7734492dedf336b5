"""Scale: training on synthetic datasets from below the memory budget to larger than this machine's RAM.

For each size a child process (so its peak memory is its own):
1. builds the decoded cache straight in its on-disk format (`images.npy`, uint8 N x px x px x 3, the
   layout `engine.data.cache` maps; written chunk by chunk with plain file writes; no image files, no
   decoding),
   flushes it to disk and drops the file from the OS page cache (`posix_fadvise(DONTNEED)`), so
   training starts cold;
2. trains small_cnn for a fixed number of steps with the engine's own trainer (`engine.train.fit.fit`),
   on `--steps x --batch` training images drawn at random from the whole file (a stratified
   `train_limit`: every batch touches rows all over the file), and predicts 1,024 validation and
   1,024 test images;
3. reports cache build time, training images/s, the feed used (in memory or streamed) and memory:
   peak RSS (`VmHWM`), and the peaks of its anonymous part (`RssAnon`: what the process really needs)
   and file-backed part (`RssFile`: pages of the map; the kernel can drop them at any time), sampled
   from /proc/self/status every 0.1 s.

The memory budget is forced with `--budget-gb` (default 2 GB), so sizes above it stream even on a
large machine. Sizes whose cache would leave less than `--keep-free-gb` of disk free are capped (the
script says so). Everything it writes (under `--dir`) is deleted at the end. Not part of `make test`.

    .venv/bin/python bench/bench_scale.py                      # 0.1M, 0.4M, 1.6M, 2.5M images at 64 px
    .venv/bin/python bench/bench_scale.py --sizes 20000,200000 --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, machine

CLASSES = 10
VAL = TEST = 1024


def status_kb(field: str) -> int:
    """A `kB` figure from /proc/self/status (VmHWM, RssAnon, RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakSampler(threading.Thread):
    """The largest RssAnon and RssFile seen, sampled every 0.1 s (VmHWM has only their sum)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = self.file = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.anon, self.file = max(self.anon, status_kb("RssAnon")), max(self.file, status_kb("RssFile"))


def build_cache(path: Path, n: int, px: int, seed: int = 0) -> float:
    """Write n synthetic images (a class-dependent pattern plus noise) into `path` as the cache's .npy; seconds."""
    import numpy as np

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 96, (512, px, px, 3), dtype=np.uint8)  # noise, reused: generating 30 GB would dominate
    stripes = np.zeros((CLASSES, px, px, 3), np.uint8)
    for c in range(CLASSES):
        stripes[c, :, c * px // CLASSES : (c + 1) * px // CLASSES] = 160  # class c: a bright band at column c
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, px, px, 3))  # header, sparse body
    offset = header.offset
    del header
    chunk = max(1, (64 << 20) // (px * px * 3))
    with open(path, "r+b") as f:  # plain writes: the rows go to the page cache, never into this process's memory
        f.seek(offset)
        for s in range(0, n, chunk):
            i = np.arange(s, min(n, s + chunk))
            f.write((pool[(i * 7919) % len(pool)] + stripes[i % CLASSES]).tobytes())
            if (s // chunk) % 16 == 15:  # write back as we go, so dirty pages never pile up
                f.flush()
                os.fdatasync(f.fileno())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    drop_from_page_cache(path)
    return seconds


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget this file's clean pages (no root needed, unlike drop_caches)."""
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def one_size(n: int, args: argparse.Namespace) -> dict:
    """Build, train and measure one size in this process; the figures as a dict."""
    sampler = PeakSampler()
    sampler.start()
    import numpy as np

    from engine.config import RunConfig
    from engine.data.dataset import Dataset
    from engine.data.source import ScanResult, Source
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run
    from engine.train.setup import prepare

    work = Path(args.dir) / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "images.npy"
    if args.cache:  # a cache file built before (e.g. by an interrupted run of this script): no build figure
        path = Path(args.cache)
        build_s = float("nan")
        drop_from_page_cache(path)
    else:
        build_s = build_cache(path, n, args.px)
    build_hwm_mb = status_kb("VmHWM") / 1024
    images = np.load(path, mmap_mode="r")
    labels = np.arange(n, dtype=np.int64) % CLASSES
    source = Source(
        spec=f"synthetic:{n}",
        name=f"synthetic-{n}",
        kind="npz",
        classes=[f"band{c}" for c in range(CLASSES)],
        labels=labels,
        multilabel=False,
        fingerprint=f"synthetic-{n}-{args.px}",
    )
    scan = ScanResult(
        ok=np.ones(n, bool),
        width=np.full(n, args.px, np.int32),
        height=np.full(n, args.px, np.int32),
        mode=["RGB"] * n,
        format=["array"] * n,
        corrupt=[],
    )
    splits = {
        "train": np.arange(0, n - VAL - TEST),
        "val": np.arange(n - VAL - TEST, n - TEST),
        "test": np.arange(n - TEST, n),
    }
    ds = Dataset(source, "multiclass", args.px, 3, images, scan, splits)
    cfg = RunConfig(
        dataset=source.spec,
        model="small_cnn",
        strategy="scratch",
        image_size=args.px,
        epochs=1,
        batch_size=args.batch,
        train_limit=args.steps * args.batch,
        lr=3e-3,
        time_budget_s=0.0,
        max_memory_gb=args.budget_gb,
        seed=0,
    ).validate()
    run = prepare_run(cfg, work / "runs")
    setup = prepare(cfg, dataset=ds)
    notes: list[str] = []
    t0 = time.perf_counter()
    summary = fit(cfg, run, log=notes.append, setup=setup)
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    train = [r for r in run.metrics() if r["split"] == "val"][-1]
    return {
        "n": n,
        "gb": images.nbytes / 1e9,
        "feed": "streamed" if any("larger than the memory budget" in x for x in summary["notes"]) else "in memory",
        "build_s": build_s,
        "build_hwm_mb": build_hwm_mb,
        "img_per_s": train["img_per_s"],
        "train_images": args.steps * args.batch,
        "fit_wall_s": wall,
        "hwm_mb": status_kb("VmHWM") / 1024,
        "anon_mb": sampler.anon / 1024,
        "file_mb": sampler.file / 1024,
        "val_acc": train["accuracy"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,400000,1600000,2500000", help="images per dataset, comma-separated")
    p.add_argument("--px", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="training steps per size")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--budget-gb", type=float, default=2.0, help="max_memory_gb for every run (the forced budget)")
    p.add_argument("--keep-free-gb", type=float, default=15.0, help="cap sizes to leave this much disk free")
    p.add_argument("--dir", default="", help="where caches go (default: a new folder under /tmp), deleted after")
    p.add_argument("--one", type=int, default=0, help="measure this one size in this process (the child's mode)")
    p.add_argument("--cache", default="", help="with --one: train on this existing images.npy instead of building")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args)))
        return 0
    root = Path(args.dir or tempfile.mkdtemp(prefix="loupe-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(machine())
    print(f"RAM {ram / 1e9:.1f} GB; forced memory budget {args.budget_gb} GB; caches under {root}")
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            free = shutil.disk_usage(root).free
            need = n * args.px * args.px * 3
            if need > free - args.keep_free_gb * 1e9:
                capped = int((free - args.keep_free_gb * 1e9) // (args.px * args.px * 3))
                print(
                    f"{n:,} images ({need / 1e9:.1f} GB) would leave under {args.keep_free_gb} GB of disk free "
                    f"({free / 1e9:.1f} GB free): capped to {capped:,}"
                )
                n = capped
                if n <= VAL + TEST + args.batch:
                    continue
            cmd = [sys.executable, __file__, "--one", str(n), *_child_flags(args, root)]
            env = {**os.environ, "LOUPE_RUNS_DIR": str(root / "runs"), "LOUPE_CACHE_DIR": str(root / "cache")}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            shutil.rmtree(root / f"n{n}", ignore_errors=True)
            if out.returncode:
                print(out.stderr[-3000:])
                return 1
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(_row(rows[-1], ram), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        "| images | cache GB | vs RAM | feed | build s | build GB/s | train img/s | peak RSS MB | "
        "peak anon MB | peak file MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r, ram))
    return 0


def _child_flags(args: argparse.Namespace, root: Path) -> list[str]:
    return [
        "--px",
        str(args.px),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--budget-gb",
        str(args.budget_gb),
        "--dir",
        str(root),
    ]


def _row(r: dict, ram: int) -> str:
    return (
        f"| {r['n']:,} | {r['gb']:.1f} | {r['gb'] * 1e9 / ram:.2f}x | {r['feed']} | {r['build_s']:.1f} | "
        f"{r['gb'] / r['build_s']:.2f} | {r['img_per_s']:.0f} | {r['hwm_mb']:,.0f} | {r['anon_mb']:,.0f} | "
        f"{r['file_mb']:,.0f} |"
    )


if __name__ == "__main__":
    sys.exit(main())

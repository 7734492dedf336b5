"""Data-layer benchmark: Loupe's decode-once cache vs the plain torchvision recipe, on real images.

    .venv/bin/python bench/bench_data.py            # full run (several minutes on 2 cores)
    .venv/bin/python bench/bench_data.py --quick    # smoke run (well under a minute)

Builds class folders of real Fashion-MNIST PNGs under bench/out/ (kept and reused), then prints:
decode (engine cache build vs ImageFolder + DataLoader, one pass), epoch read (memmap gather vs the
plain recipe's next epoch), and dataset statistics on many small files (header scan vs full scan).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import OUT, clock, load, machine, table, timed  # also puts the repo root on sys.path
from PIL import Image

from engine.data import dataset_stats, open_dataset, quick_stats  # noqa: E402
from engine.data.pixels import to_tensor  # noqa: E402
from engine.data.sources.builtin import load_builtin  # noqa: E402

BATCH = 256
PIL_SAMPLE = 5000  # files timed with bare Pillow as a reference rate


# ---------------------------------------------------------------- setup: real images as class folders
def fashion(n: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The first n Fashion-MNIST images; past 70,000 the images repeat rotated by 90 degrees (files 'rot*')."""
    src = load_builtin("fashion-mnist")
    raw, labels = src.arrays(), np.asarray(src.labels)
    idx = np.arange(n) % len(raw)
    rotated = np.arange(n) >= len(raw)
    images = np.where(rotated[:, None, None], np.rot90(raw[idx], axes=(1, 2)), raw[idx])
    names = [f"{'rot' if r else 'img'}{i:06d}.png" for i, r in zip(range(n), rotated)]
    folders = [f"{c:02d}-{name.replace('/', '-')}" for c, name in enumerate(src.classes)]
    return images, labels[idx], names, folders


def write_folder(root: Path, n: int, size: int | None, rgb: bool) -> None:
    """root/<class>/imgNNNNNN.png, written by a thread pool; reused when a previous run completed it."""
    done = root / ".complete"
    if done.exists():
        print(f"  reusing {root.relative_to(OUT.parent.parent)} ({n:,} PNGs)")
        return
    shutil.rmtree(root, ignore_errors=True)
    images, labels, names, folders = fashion(n)
    for f in folders:
        (root / f).mkdir(parents=True)

    def write(i: int) -> None:
        img = Image.fromarray(images[i], "L")
        if size:
            img = img.resize((size, size), Image.BILINEAR)
        (img.convert("RGB") if rgb else img).save(root / folders[labels[i]] / names[i])

    with timed() as t, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(write, range(n), chunksize=256))
    done.write_text(str(n))
    print(f"  wrote {n:,} PNGs to {root.relative_to(OUT.parent.parent)} in {t.seconds:.1f} s ({n / t.seconds:,.0f}/s)")


def fresh_cache() -> Path:
    """Point LOUPE_CACHE_DIR at an empty folder: the next open decodes everything (cold cache)."""
    path = Path(tempfile.mkdtemp(prefix="cache-", dir=OUT))
    os.environ["LOUPE_CACHE_DIR"] = str(path)
    return path


def sample(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.png"))[:PIL_SAMPLE]


def pil_pass(paths: list[Path], mode: str | None) -> None:
    """Bare Pillow over `paths` with 2 threads, header only (mode None) or decoded to `mode`: the rate a
    decoder can reach, to tell engine overhead from decoding cost."""

    def work(p: Path) -> None:
        with Image.open(p) as img:
            if mode:
                np.asarray(img.convert(mode))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, paths, chunksize=64))


# ---------------------------------------------------------------- decode and epoch read
def plain_loader(root: Path, workers: int):
    from torchvision import datasets, transforms

    data = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers)


def plain_epoch(loader) -> int:
    seen = 0
    for x, _ in loader:
        seen += len(x)
    return seen


def engine_epoch(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> int:
    """A training epoch's data side: shuffled batches gathered by index from the memmap, to float NCHW.

    (engine/train/loop.py gathers the same way from an in-RAM copy of the cache, which is no slower.)"""
    perm = np.random.default_rng(seed).permutation(len(images))
    seen = 0
    for start in range(0, len(perm), BATCH):
        idx = perm[start : start + BATCH]
        x = to_tensor(images[idx])
        _ = torch.from_numpy(labels[idx])
        seen += len(x)
    return seen


def bench_decode(root: Path, n: int, workers: int, repeat: int) -> None:
    best: dict[str, float] = {}
    paths = sample(root)
    for _ in range(repeat):  # engine and plain interleaved, so both see the same machine load
        cache = fresh_cache()
        ds = clock(best, "build", lambda: open_dataset(str(root), image_size=64))
        assert len(ds) == n and ds.scan.ok.all(), "the engine did not decode every image"
        ds = clock(best, "reopen", lambda: open_dataset(str(root), image_size=64))
        clock(best, "epoch", lambda ds=ds: engine_epoch(ds.images, ds.labels))
        loader = plain_loader(root, workers)
        assert clock(best, "plain1", lambda loader=loader: plain_epoch(loader)) == n
        clock(best, "plain2", lambda loader=loader: plain_epoch(loader))
        clock(best, "pil", lambda: pil_pass(paths, "RGB"))
        shutil.rmtree(cache, ignore_errors=True)

    best["pil"] *= n / len(paths)  # scaled to the whole folder
    row = lambda name, key, base: [name, n / best[key], best[key], f"{best[base] / best[key]:,.2f}x"]  # noqa: E731
    print(
        f"\nDecode: {n:,} PNGs 64x64 RGB at 64 px, one full pass, best of {repeat}"
        " (ratio = plain time / this time; > 1 is faster than plain)\n"
    )
    print(
        table(
            ["method", "images/s", "seconds", "ratio vs plain"],
            [
                row("plain: ImageFolder + DataLoader, epoch 1", "plain1", "plain1"),
                row("engine: open_dataset, cold (decode + cache)", "build", "plain1"),
                row("engine: open_dataset again (cache hit)", "reopen", "plain1"),
                row(
                    f"reference: bare Pillow decode to RGB array, 2 threads ({len(paths):,}-file sample)",
                    "pil",
                    "plain1",
                ),
            ],
        )
    )
    print(
        f"\nEpoch read: every later epoch, batch {BATCH}, num_workers={workers} for the plain recipe, best of {repeat}\n"
    )
    print(
        table(
            ["method", "images/s", "seconds", "ratio vs plain"],
            [
                row("plain: ImageFolder + DataLoader, epoch 2 (shuffle)", "plain2", "plain2"),
                row("engine: memmap gather -> float NCHW (shuffle)", "epoch", "plain2"),
            ],
        )
    )


# ---------------------------------------------------------------- statistics on many small files
def bench_stats(root: Path, n: int, repeat: int) -> None:
    best: dict[str, float] = {}
    paths = sample(root)
    for _ in range(repeat):
        cache = fresh_cache()
        clock(best, "quick", lambda: quick_stats(str(root)))
        shutil.rmtree(cache, ignore_errors=True)
        cache = fresh_cache()
        dup = clock(best, "full", lambda: dataset_stats(open_dataset(str(root)))["duplicates"])
        shutil.rmtree(cache, ignore_errors=True)
        clock(best, "pil_head", lambda: pil_pass(paths, None))
        clock(best, "pil_decode", lambda: pil_pass(paths, "L"))

    for key in ("pil_head", "pil_decode"):
        best[key] *= n / len(paths)
    row = lambda name, key: [name, n / best[key], best[key]]  # noqa: E731
    print(f"\nStats: {n:,} PNGs 28x28 grayscale, cold Loupe cache, best of {repeat}\n")
    print(
        table(
            ["method", "images/s", "seconds"],
            [
                row("quick_stats (headers only)", "quick"),
                row("open_dataset + dataset_stats (decode, hashes, duplicates)", "full"),
                row(f"reference: bare Pillow Image.open (header), 2 threads ({len(paths):,}-file sample)", "pil_head"),
                row(f"reference: bare Pillow decode to L array, 2 threads ({len(paths):,}-file sample)", "pil_decode"),
            ],
        )
    )
    print(
        f"\n  full stats found {dup['num_exact_groups']:,} exact-duplicate groups and {dup['num_near_groups']:,}"
        f" near-duplicate groups; {dup['num_cross_split']:,} duplicate groups span more than one split"
    )
    if n > 70000:  # the report lists item ids (up to a cap): count the groups with no rotated copy in them
        listed = dup["near"]
        real = sum(all("/rot" not in item for item in g) for g in listed)
        of = "" if len(listed) == dup["num_near_groups"] else f" (of the {len(listed):,} listed)"
        print(
            f"  {real:,} near-duplicate groups{of} lie within the 70,000 original images; the other"
            f" {n - 70000:,} files are 90-degree rotations of the first ones, so they can repeat some groups"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000, help="images in the 64x64 decode benchmark")
    p.add_argument("--stats-n", type=int, default=100000, help="small images in the stats benchmark")
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers for the plain recipe")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    p.add_argument("--quick", action="store_true", help="small sizes and one run, for a smoke test")
    args = p.parse_args()
    if args.quick:
        args.n, args.stats_n, args.repeat = min(args.n, 2000), min(args.stats_n, 10000), 1
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# Loupe data-layer benchmark\n\n{machine()}\n")
    print("Setup (not measured against anything):")
    faces = OUT / f"fmnist64-rgb-n{args.n}"
    small = OUT / f"fmnist28-gray-n{args.stats_n}"
    write_folder(faces, args.n, size=64, rgb=True)
    write_folder(small, args.stats_n, size=None, rgb=False)
    bench_decode(faces, args.n, args.workers, args.repeat)
    bench_stats(small, args.stats_n, args.repeat)
    print(f"\nDone; {load()}")


if __name__ == "__main__":
    main()

"""Training throughput: Loupe's engine vs the plain recipe, same data, model, resolution and epochs.

The plain recipe is what people write by hand: torchvision `ImageFolder` + `DataLoader(num_workers=2)`
+ `ToTensor`/`RandomHorizontalFlip` + a standard fp32 loop. The engine reads the decoded uint8 cache,
augments in batches on the device, and uses channels_last + bf16 autocast where the hardware has it.
Both report training images/s and wall time of their last epoch (no validation; the first epoch warms
up workers and kernels). Each recipe runs in its own process, so peak memory (max RSS, DataLoader
workers included) belongs to that recipe alone.

    .venv/bin/python bench/bench_train.py [--n 4000] [--epochs 2] [--models small_cnn,resnet18] [--size 64]
                                          [--compile]   # adds engine + torch.compile, compile time apart

On a GPU it adds the model-FLOPs utilisation (achieved FLOP/s over the GPU's dense bf16 peak) and the GPU
utilisation nvidia-smi reports; e.g. `bench_train.py --size 224 --models resnet50 --batch 256`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, machine, table  # noqa: F401  (also puts the repo on sys.path)


def peak_mb() -> float:
    """Max RSS of this process plus its largest finished child (DataLoader workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def plain_recipe(root: Path, model_name: str, epochs: int, batch: int, size: int) -> dict:
    """The hand-written loop over `root` (class folders); figures of its last epoch."""
    import torch
    from torchvision import datasets, transforms

    from engine.models.factory import build_model

    steps = [transforms.Resize(size)] if size != 64 else []
    tf = transforms.Compose([*steps, transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=False
    )
    model, _ = build_model(model_name, len(ds.classes), in_chans=3, allow_scratch=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    out: dict = {}
    for _ in range(epochs):
        seen, t0 = 0, time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            seen += len(x)
        secs = time.perf_counter() - t0
        out = {"img_per_s": seen / secs, "epoch_s": secs}
    return {**out, "peak_mb": peak_mb()}


# Dense bf16 tensor-core peaks (TFLOP/s) for the model-FLOPs-utilisation column; LOUPE_PEAK_TFLOPS overrides.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def train_flops_per_image(model_name: str, size: int) -> float:
    """Forward + backward FLOPs of one 3-channel image, counted by torch's FlopCounterMode on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.models.factory import build_model

    model, _ = build_model(model_name, 10, in_chans=3, allow_scratch=True, image_size=size)
    x = torch.rand(2, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def gpu_figures(img_per_s: float, flops_per_image: float) -> dict:
    """Model-FLOPs utilisation (achieved FLOP/s over the GPU's bf16 peak) and GPU utilisation (nvidia-smi)."""
    import subprocess as sp

    import torch

    name = torch.cuda.get_device_name(0)
    peak = float(os.environ.get("LOUPE_PEAK_TFLOPS") or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0))
    util = None
    try:
        out = sp.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
        util = float(out[0]) if out else None
    except (OSError, ValueError, sp.TimeoutExpired):
        pass
    achieved = img_per_s * flops_per_image / 1e12
    return {"gpu": name, "tflops": achieved, "mfu": achieved / peak if peak else None, "gpu_util": util}


def engine_recipe(root: Path, model_name: str, epochs: int, batch: int, size: int, compile: bool = False) -> dict:
    """`engine.train.fit.fit` on the same folder; figures of its last epoch, the cache build timed apart."""
    from engine.config import RunConfig
    from engine.data import open_dataset
    from engine.train.fit import fit
    from engine.train.jobs import prepare_run

    t = time.perf_counter()
    open_dataset(str(root), image_size=size)  # the one-off decode into the cache (a hit when warm)
    build = time.perf_counter() - t
    cfg = RunConfig(
        dataset=str(root),
        model=model_name,
        strategy="scratch",
        image_size=size,
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        optimizer="adamw",
        scheduler="none",
        hflip=True,
        val_fraction=0.02,
        test_fraction=0.0,
        compile=compile,
    ).validate()
    with tempfile.TemporaryDirectory() as runs:
        run = prepare_run(cfg, runs)
        summary = fit(cfg, run, log=lambda m: None)
        last = [r for r in run.metrics() if r["split"] == "val"][-1]
        n_train = run.config()["num_train"]
    ips = last["img_per_s"]
    out = {
        "img_per_s": ips,
        "epoch_s": n_train / ips,
        "peak_mb": peak_mb(),
        "build_s": build,
        "compile_s": summary.get("compile_seconds"),
    }
    import torch

    if torch.cuda.is_available():  # sampled right after training; for a steady figure watch nvidia-smi dmon
        out.update(gpu_figures(ips, train_flops_per_image(model_name, size)))
    return out


def child(args: argparse.Namespace) -> None:
    """One recipe in this (fresh) process; prints its figures as JSON on the last line."""
    root = Path(args.root)
    if args.child == "plain":
        res = plain_recipe(root, args.models, args.epochs, args.batch, args.size)
    else:
        res = engine_recipe(root, args.models, args.epochs, args.batch, args.size, compile=args.child == "compile")
    print(json.dumps(res))


def run_child(recipe: str, root: Path, model: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        recipe,
        "--root",
        str(root),
        "--models",
        model,
        "--epochs",
        str(args.epochs),
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if out.returncode != 0:
        raise SystemExit(f"{recipe} {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4000, help="images in the class-folder dataset (64x64 RGB Fashion-MNIST)")
    p.add_argument("--epochs", type=int, default=2, help="both recipes report their last epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="training resolution (the files are 64x64)")
    p.add_argument("--models", default="small_cnn,resnet18")
    p.add_argument("--compile", action="store_true", help="also run the engine with torch.compile")
    p.add_argument("--child", choices=("plain", "engine", "compile"), help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("LOUPE_CACHE_DIR", str(OUT / "cache-train"))
    if args.child:
        return child(args)
    from bench_data import write_folder

    root = OUT / f"fmnist64-rgb-n{args.n}"
    if not root.exists() or not (root / ".complete").exists():
        write_folder(root, args.n, 64, rgb=True)
    print(
        f"# Training throughput at {args.size} px, {args.n} images (64x64 RGB PNGs), {args.epochs} epoch(s), "
        f"batch {args.batch}; figures of the last epoch"
    )
    print(machine())
    rows = []
    for name in args.models.split(","):
        eng = run_child("engine", root, name, args)
        plain = run_child("plain", root, name, args)
        comp = run_child("compile", root, name, args) if args.compile else None
        row = [
            name,
            plain["img_per_s"],
            plain["epoch_s"],
            plain["peak_mb"],
            eng["img_per_s"],
            eng["epoch_s"],
            eng["peak_mb"],
            f"{eng['img_per_s'] / plain['img_per_s']:.2f}x",
        ]
        if comp:
            row += [f"{comp['img_per_s']:.0f} ({comp['compile_s']:.0f} s)"]
        flops = train_flops_per_image(name, args.size)
        row += [f"{eng['img_per_s'] * flops / 1e9:,.0f}"]
        if "mfu" in eng:
            row += [f"{eng['mfu']:.1%}" if eng["mfu"] is not None else "peak unknown", eng.get("gpu_util")]
        rows.append(row)
        print(
            f"{name}: plain {plain['img_per_s']:.0f} img/s, engine {eng['img_per_s']:.0f} img/s "
            f"(cache open {eng['build_s']:.2f} s)",
            flush=True,
        )
    headers = [
        "model",
        "plain img/s",
        "plain epoch s",
        "plain peak MB",
        "engine img/s",
        "engine epoch s",
        "engine peak MB",
        "engine/plain",
    ]
    if args.compile:
        headers.append("engine+compile img/s (compile s)")
    headers.append("engine GFLOP/s")
    if rows and len(rows[0]) > len(headers):
        headers += ["MFU (bf16 peak)", "GPU util %"]
    print(table(headers, rows))
    print("  GFLOP/s: training FLOPs per image (forward + backward, torch's FlopCounterMode) x engine img/s")


if __name__ == "__main__":
    main()

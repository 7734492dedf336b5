"""Training throughput: Loupe's engine vs the plain recipe, same data, model, resolution and epochs.

The plain recipe is what people write by hand: torchvision `ImageFolder` + `DataLoader(num_workers=2)`
+ `ToTensor`/`RandomHorizontalFlip` + a standard fp32 loop. The engine reads the decoded uint8 cache,
augments in batches on the device, and uses channels_last + bf16 autocast where the CPU supports it.
Both report training images/s over their last epoch (no validation, warm-up excluded).

    .venv/bin/python bench/bench_train.py [--n 4000] [--epochs 2] [--models small_cnn,resnet18]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import OUT, machine, table  # noqa: F401  (also puts the repo on sys.path)


def plain_recipe(root: Path, model_name: str, epochs: int, batch: int, warmup: int = 3) -> float:
    """images/s of the hand-written loop over `root` (class folders), over its last epoch."""
    import timm
    import torch
    from torchvision import datasets, transforms

    from engine.models import build_model

    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                                         persistent_workers=True)
    model, _ = build_model(model_name, len(ds.classes), in_chans=3, allow_scratch=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    rate = 0.0
    for epoch in range(epochs):
        seen, t0 = 0, time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            seen += len(x)
        rate = seen / (time.perf_counter() - t0)  # the last epoch: workers and kernels warmed up
    del timm, warmup
    return rate


def engine_recipe(root: Path, model_name: str, epochs: int, batch: int, size: int) -> tuple[float, float]:
    """(training images/s, cache build seconds) of `engine.train.fit` on the same folder."""
    from engine.config import RunConfig
    from engine.data import open_dataset
    from engine.jobs import prepare_run
    from engine.train import fit

    t = time.perf_counter()
    open_dataset(str(root), image_size=size)  # the one-off decode into the cache, timed apart
    build = time.perf_counter() - t
    cfg = RunConfig(dataset=str(root), model=model_name, strategy="scratch", image_size=size, epochs=epochs,
                    batch_size=batch, lr=1e-3, optimizer="adamw", scheduler="none", hflip=True,
                    val_fraction=0.02, test_fraction=0.0).validate()
    with tempfile.TemporaryDirectory() as runs:
        run = prepare_run(cfg, runs)
        fit(cfg, run, log=lambda m: None)
        last = [r for r in run.metrics() if r["split"] == "val"][-1]
    return last["img_per_s"], build  # the last epoch's training throughput, as for the plain recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4000, help="images in the class-folder dataset (64x64 RGB Fashion-MNIST)")
    p.add_argument("--epochs", type=int, default=2, help="both recipes report their last epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default="small_cnn,resnet18")
    args = p.parse_args()
    os.environ.setdefault("LOUPE_CACHE_DIR", str(OUT / "cache-train"))
    from bench_data import write_folder

    root = OUT / f"fmnist64-rgb-n{args.n}"
    if not root.exists():
        write_folder(root, args.n, 64, rgb=True)
    print(f"# Training throughput, 64x64 RGB, {args.n} images, {args.epochs} epoch(s), batch {args.batch}")
    print(machine())
    rows = []
    for name in args.models.split(","):
        engine_ips, build = engine_recipe(root, name, args.epochs, args.batch, 64)
        plain_ips = plain_recipe(root, name, args.epochs, args.batch)
        rows.append([name, plain_ips, engine_ips, f"{engine_ips / plain_ips:.2f}x", build])
        print(f"{name}: plain {plain_ips:.0f} img/s, engine {engine_ips:.0f} img/s", flush=True)
    print(table(["model", "plain img/s", "engine img/s", "engine/plain", "one-off cache build s"], rows))


if __name__ == "__main__":
    main()

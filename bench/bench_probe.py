"""Linear probe: features computed once and cached vs the plain frozen-backbone loop.

Plain recipe (what a notebook does): torchvision `ImageFolder` + `DataLoader(num_workers=2)` +
`Resize`/`ToTensor`/`Normalize`, the backbone frozen (`requires_grad_(False)`, eval mode, fp32), and every
epoch runs every image through the backbone again to train the linear head.
Engine: `cached_features` runs the backbone once over the decoded uint8 cache (bf16 + channels_last where
the hardware has it) and stores the features; the head then trains on the stored features, and a second
probe on the same data skips the backbone entirely (`run_training` with strategy linear_probe).

    .venv/bin/python bench/bench_probe.py [--n 1000] [--size 128] [--epochs 5] [--model tf_efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import OUT, machine, table  # noqa: F401  (also puts the repo on sys.path)


def plain_probe(root: Path, model_name: str, size: int, epochs: int, batch: int) -> dict:
    import torch
    from torchvision import datasets, transforms

    from engine.models.factory import build_model

    model, info = build_model(model_name, 10, in_chans=3, pretrained=True)
    tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=2)
    backbone = model.backbone.eval().requires_grad_(False)
    head = torch.nn.Linear(model.num_features, len(ds.classes))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    epoch_s = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            with torch.no_grad():
                f = backbone(x)
            loss = torch.nn.functional.cross_entropy(head(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
    return {"first_epoch_s": epoch_s[0], "total_s": sum(epoch_s), "img_per_s": len(ds) / min(epoch_s)}


def engine_probe(root: Path, model_name: str, size: int, epochs: int, batch: int) -> dict:
    from engine.config import RunConfig
    from engine.data import open_dataset
    from engine.device import resolve_compute
    from engine.models.factory import build_model
    from engine.train.features import cached_features
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    ds = open_dataset(str(root), image_size=size)
    compute = resolve_compute()
    model, info = build_model(model_name, len(ds.classes), in_chans=3, pretrained=True, image_size=size)
    model = model.to(memory_format=__import__("torch").channels_last)
    t0 = time.perf_counter()
    cached_features(model, f"bench|{model_name}|{time.time()}", ds.fingerprint, size, ds.images, compute=compute)
    extract_s = time.perf_counter() - t0
    cfg = RunConfig(
        dataset=str(root),
        model=model_name,
        strategy="linear_probe",
        pretrained=True,
        image_size=size,
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        scheduler="none",
    ).validate()
    with tempfile.TemporaryDirectory() as runs:
        first = run_training(cfg, prepare_run(cfg, runs), log=lambda m: None)  # computes and caches its own features
        again = run_training(cfg, prepare_run(cfg, runs), log=lambda m: None)  # a second probe: cache hit
    return {
        "extract_s": extract_s,
        "img_per_s": len(ds) / extract_s,
        "head_s": again["train_seconds"],
        "first_wall_s": first["wall_seconds"],
        "again_wall_s": again["wall_seconds"],
        "hit": again.get("features_cache_hit"),
        "val_acc": again["final"]["val"]["accuracy"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="images (Fashion-MNIST as 64x64 RGB PNG class folders)")
    p.add_argument("--size", type=int, default=128, help="backbone input resolution")
    p.add_argument("--epochs", type=int, default=5, help="head training epochs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--model", default="tf_efficientnet_lite0", help="needs pretrained weights offline")
    args = p.parse_args()
    os.environ.setdefault("LOUPE_CACHE_DIR", tempfile.mkdtemp(prefix="loupe-probe-"))  # cold feature cache
    from bench_data import write_folder

    root = OUT / f"fmnist64-rgb-n{args.n}"
    if not (root / ".complete").exists():
        write_folder(root, args.n, 64, rgb=True)
    print(
        f"# Linear probe: {args.model} at {args.size} px, {args.n} images, {args.epochs} head epochs, batch {args.batch}"
    )
    print(machine())
    eng = engine_probe(root, args.model, args.size, args.epochs, args.batch)
    plain = plain_probe(root, args.model, args.size, args.epochs, args.batch)
    rows = [
        [
            "plain: frozen backbone in every epoch (fp32)",
            plain["img_per_s"],
            plain["first_epoch_s"],
            plain["total_s"],
            "1.00x",
        ],
        [
            "engine: features once (cached), head on features",
            eng["img_per_s"],
            eng["extract_s"],
            eng["extract_s"] + eng["head_s"],
            f"{plain['total_s'] / (eng['extract_s'] + eng['head_s']):.2f}x",
        ],
        [
            "engine: a second probe (feature cache hit)",
            "-",
            0.0,
            eng["head_s"],
            f"{plain['total_s'] / max(eng['head_s'], 1e-9):.0f}x",
        ],
    ]
    print(table(["recipe", "backbone img/s", "feature pass s", f"{args.epochs} epochs total s", "speed-up"], rows))
    print(
        f"  head training on cached features: {eng['head_s']:.2f} s for {args.epochs} epochs; whole probe run "
        f"{eng['first_wall_s']:.1f} s cold, {eng['again_wall_s']:.1f} s with the cache (hit: {eng['hit']}); "
        f"val accuracy {eng['val_acc']:.3f}"
    )


if __name__ == "__main__":
    main()

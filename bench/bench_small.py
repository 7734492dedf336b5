"""The small-image recipe (issue 16, item 2): epoch time of the residual net per width, and whole runs of
the recipe before (small_cnn, no translation, no label smoothing, no test-time flip) and after (the defaults).

1. `--widths`: the engine's own training step (batch augmentation with the recipe's flip + translation,
   forward and backward under bf16 autocast where the CPU has it, channels_last, AdamW) on batches of 256
   synthetic 32 px RGB images, extrapolated to an epoch of 50,000 images (a CIFAR-10-sized training split).
   Wall img/s moves with the machine's load; CPU seconds per image (process time) moves less.
2. `--datasets`: one `train --dataset D` per recipe (CLI subprocesses, as a user runs them) and the test
   figures the job is judged by: accuracy, balanced accuracy and, for binary tasks, HTER at the min-HTER
   threshold tuned on val (`engine.evaluate.report.evaluate_run`). `--epochs` / `--train-limit` shrink the
   runs when the machine is busy (say so beside the figures).

    .venv/bin/python bench/bench_small.py --widths 24,32 --datasets builtin:fashion-binary --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import ROOT, machine, table

BEFORE = ["--model", "small_cnn", "--translate", "0", "--label-smoothing", "0", "--tta-hflip", "false"]
RECIPES = {"before (small_cnn)": BEFORE, "after (defaults)": []}


def epoch_time(stem: int, batch: int = 256, steps: int = 6, n: int = 50_000) -> dict:
    """Training speed of `small_resnet` with widths (stem, 2 stem, 4 stem, 8 stem) at 32 px (stem 0: small_cnn)."""
    import torch

    from engine.config import RunConfig
    from engine.device import resolve_compute
    from engine.models.factory import build_model
    from engine.models.small_cnns import SmallResNet
    from engine.train.augment import augment_batch

    compute = resolve_compute("cpu", "auto", True)
    torch.manual_seed(0)
    name = "small_resnet" if stem else "small_cnn"
    model, _ = build_model(name, 10, in_chans=3, image_size=32)
    if stem:
        model.backbone = SmallResNet(3, (stem, 2 * stem, 4 * stem, 8 * stem))
        model.head = torch.nn.Linear(8 * stem, 10)
    model = model.to(memory_format=torch.channels_last).train()
    cfg = RunConfig(hflip=True, translate=0.0625)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen)
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps (oneDNN picks its kernels)
            t, c = time.perf_counter(), time.process_time()
        xb = augment_batch(x, cfg, gen)
        with compute.autocast():
            out = model(xb)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    ips = batch * steps / wall
    params = sum(p.numel() for p in model.parameters())
    label = f"small_resnet {stem}-{2 * stem}-{4 * stem}-{8 * stem}" if stem else "small_cnn 32-64-128"
    return {
        "net": label,
        "params": f"{params / 1e6:.2f}M",
        "img/s": f"{ips:,.0f}",
        "50k epoch s": f"{n / ips:.0f}",
        "CPU ms/img": f"{1000 * cpu / (batch * steps):.2f}",
        "precision": compute.name,
    }


def run_recipe(dataset: str, flags: list[str], extra: list[str], runs_dir: str) -> dict:
    cmd = [sys.executable, "-m", "engine", "train", "--dataset", dataset, *flags, *extra]
    cmd += ["--no-progress", "--json", "--runs-dir", runs_dir]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{dataset} {flags} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout[out.stdout.index("{") :])
    return {**result, "wall": wall}


def judged(run_path: str) -> dict:
    from engine.evaluate.report import evaluate_run
    from engine.metrics.display import format_metric
    from engine.runs.folder import Run

    run = Run(run_path)
    summary = run.summary() or {}
    cfg = (run.config() or {}).get("config", {})
    report = evaluate_run(run, bootstrap=0)
    m = report.get("metrics", report)
    return {
        "model": cfg.get("model"),
        "epochs": summary.get("epochs_run"),
        "train s": f"{summary.get('train_seconds', 0):.0f}",
        "accuracy": format_metric("accuracy", m.get("accuracy")),
        "bal. acc": format_metric("balanced_accuracy", m.get("balanced_accuracy")),
        "HTER (val-tuned)": format_metric("hter", m.get("hter")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", default="16,24,32", help="stem widths of small_resnet to time ('' skips; 0: small_cnn)")
    p.add_argument("--datasets", default="builtin:fashion-binary,builtin:fashion-mnist", help="'' skips the runs")
    p.add_argument("--epochs", type=int, default=0, help="epochs of every run (0: the defaults')")
    p.add_argument("--train-limit", type=int, default=0, help="training images of every run (0: all)")
    args = p.parse_args()
    print("# The small-image recipe")
    print(machine())
    if args.widths:
        rows = [epoch_time(int(w)) for w in ["0", *args.widths.split(",")]]
        print("\n## Training speed at 32 px, batch 256 (synthetic images; epoch = 50,000 images)\n")
        print(table(list(rows[0]), [list(r.values()) for r in rows]))
    extra = (["--epochs", str(args.epochs)] if args.epochs else []) + (
        ["--train-limit", str(args.train_limit)] if args.train_limit else []
    )
    for dataset in filter(None, args.datasets.split(",")):
        rows = []
        with tempfile.TemporaryDirectory() as runs_dir:
            for recipe, flags in RECIPES.items():
                res = run_recipe(dataset, flags, extra, runs_dir)
                rows.append({"recipe": recipe, **judged(res["path"]), "wall s": f"{res['wall']:.0f}"})
        print(f"\n## {dataset} {' '.join(extra)}\n")
        print(table(list(rows[0]), [list(r.values()) for r in rows]))


if __name__ == "__main__":
    main()

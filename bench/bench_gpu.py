"""The GPU check, ready for the day a GPU is lent: `make bench-gpu` (under 8 minutes on one modern GPU, no network).

Prints, in order:
1. the GPU's name and memory;
2. training throughput of small_cnn at 32 px and resnet50 at 224 px, bf16 + channels_last, the uint8
   dataset on the device (`engine.train.loop.DeviceData`, the engine's own `train_step`), eager and
   with `torch.compile`: images/s, model-FLOPs utilisation (forward + backward FLOPs per image from
   torch's `FlopCounterMode` x images/s, over the GPU's dense bf16 peak; `LOUPE_PEAK_TFLOPS` overrides the
   table) and GPU utilisation (pynvml, else nvidia-smi, sampled every 0.2 s while timing; "n/a" without either);
3. time to 93% validation accuracy on Fashion-MNIST (small_cnn from scratch, 28 px, the engine's
   trainer), and to 90% on `../shared/data/imagenette-224.zip` (resnet18 from scratch at 128 px) when
   that file is present;
4. the first 50 training steps' losses on the GPU against the CPU's (same seed, same batches, fp32 on
   both, TF32 off), within a relative tolerance;
5. DDP over all GPUs (`python -m engine train --nproc N`) when there are several.

`--dry-run` (`make bench-gpu DRY_RUN=1`) runs every one of these code paths on the CPU on tiny sizes
(a few steps, 8-32 px, builtin:digits for the datasets, compile with the `eager` backend, the CPU
against itself, DDP over 2 gloo processes) in well under a minute; tests/test_bench_gpu.py runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from common import ROOT

IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette-224.zip"
LOSS_RTOL = 0.05  # GPU vs CPU losses over the first 50 steps (fp32 both; cuDNN and CPU kernels sum differently)


@dataclass
class Plan:
    """Sizes for a real check on a GPU, or a dry run on the CPU that only walks every code path."""

    dry: bool
    device: str
    throughput: tuple[tuple[str, int, int], ...]  # (model, px, batch)
    steps: int  # timed steps per throughput row
    warmup: int  # steps before timing: cuDNN autotuning, and the compilation when compiled
    compile_backend: str
    precision: (
        str  # bf16 on the GPU; fp32 in a dry run (oneDNN's first bf16 steps of resnet50 take a minute on 2 cores)
    )
    fashion: str
    fashion_epochs: int
    fashion_limit: int
    imagenette: str  # a spec, or "" when the file is absent
    imagenette_budget_s: float
    curve_steps: int
    ddp_procs: int


def make_plan(dry: bool) -> Plan:
    import torch

    if dry:
        # builtin:digits stands in for both datasets: the same code path as Fashion-MNIST and Imagenette
        return Plan(
            dry=True,
            device="cpu",
            throughput=(("small_cnn", 8, 8), ("resnet50", 32, 2)),
            steps=1,
            warmup=1,
            compile_backend="eager",
            precision="fp32",
            fashion="builtin:digits",
            fashion_epochs=1,
            fashion_limit=200,
            imagenette="builtin:digits",
            imagenette_budget_s=5.0,
            curve_steps=5,
            ddp_procs=2,
        )
    gpus = torch.cuda.device_count()
    return Plan(
        dry=False,
        device="cuda",
        throughput=(("small_cnn", 32, 512), ("resnet50", 224, 128)),
        steps=30,
        warmup=3,
        compile_backend="inductor",
        precision="bf16",
        fashion="builtin:fashion-mnist",
        fashion_epochs=16,
        fashion_limit=0,
        imagenette=str(IMAGENETTE) if IMAGENETTE.exists() else "",
        imagenette_budget_s=150.0,
        curve_steps=50,
        ddp_procs=gpus if gpus > 1 else 0,
    )


class UtilSampler(threading.Thread):
    """GPU utilisation (%) sampled every 0.2 s through pynvml, else nvidia-smi; nothing on a CPU."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(daemon=True)
        self.enabled, self.samples, self.done = enabled, [], threading.Event()
        self.read = self._reader() if enabled else None

    @staticmethod
    def _reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no pynvml or no driver: try nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None

        def smi() -> float | None:
            out = subprocess.run(
                ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.split()
            return float(out[0]) if out else None

        return smi

    def run(self) -> None:
        while self.read is not None and not self.done.wait(0.2):
            try:
                value = self.read()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                value = None
            if value is not None:
                self.samples.append(value)

    def mean(self) -> float | None:
        self.done.set()
        return sum(self.samples) / len(self.samples) if self.samples else None


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def device_line(plan: Plan) -> str:
    import torch

    if plan.dry:
        return "device: CPU (dry run: no GPU figures below mean anything)"
    props = torch.cuda.get_device_properties(0)
    return f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} GPU(s)"


def throughput(plan: Plan, model_name: str, px: int, batch: int, compiled: bool) -> dict:
    """Images/s of the engine's training step with the dataset on the device, bf16 + channels_last."""
    import numpy as np
    import torch
    from bench_train import PEAK_BF16_TFLOPS, train_flops_per_image

    from engine.config import RunConfig
    from engine.device import resolve_compute
    from engine.models.factory import build_model
    from engine.train.imbalance import make_loss
    from engine.train.loop import DeviceData, train_step
    from engine.train.optim import make_optimizer

    torch.manual_seed(0)
    cfg = RunConfig(model=model_name, image_size=px, batch_size=batch, hflip=True, precision=plan.precision).validate()
    compute = resolve_compute(plan.device, plan.precision, channels_last=True)
    model, _ = build_model(model_name, 10, in_chans=3, allow_scratch=True, image_size=px)
    model = model.to(compute.device).to(memory_format=torch.channels_last)
    step_model = torch.compile(model, backend=plan.compile_backend) if compiled else model
    n = batch * 4
    images = np.random.default_rng(0).integers(0, 256, (n, px, px, 3), dtype=np.uint8)
    labels = np.arange(n) % 10
    data = DeviceData(images, labels, compute.device, multilabel=False)  # on the GPU: the whole set fits
    loss_fn = make_loss("multiclass", 10, cfg, labels).to(compute.device)
    optimizer = make_optimizer(list(model.parameters()), cfg)
    gen = torch.Generator(device=compute.device).manual_seed(0)

    def steps(k: int) -> None:
        for s in range(k):
            idx = np.arange(s * batch, (s + 1) * batch) % n
            train_step(step_model, data, idx, cfg, loss_fn, optimizer, compute, gen)
        if compute.device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    steps(plan.warmup)
    warm = time.perf_counter() - t0
    sampler = UtilSampler(compute.device.type == "cuda")
    sampler.start()
    t0 = time.perf_counter()
    steps(plan.steps)
    seconds = time.perf_counter() - t0
    util = sampler.mean()
    img_s = plan.steps * batch / seconds
    flops = train_flops_per_image(model_name, px)
    name = torch.cuda.get_device_name(0) if compute.device.type == "cuda" else ""
    peak = float(os.environ.get("LOUPE_PEAK_TFLOPS") or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0))
    tflops = img_s * flops / 1e12
    return {"img_s": img_s, "tflops": tflops, "mfu": tflops / peak if peak else None, "util": util, "warm_s": warm}


def time_to_accuracy(plan: Plan, spec: str, model_name: str, px: int, target: float, **over) -> dict:
    """A whole engine run from scratch; the training seconds until validation accuracy first reached `target`."""
    from engine.config import RunConfig
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    cfg = RunConfig(
        dataset=spec,
        model=model_name,
        strategy="scratch",
        image_size=px,
        device=plan.device,
        precision=plan.precision,
        seed=0,
        **over,
    ).validate()
    with tempfile.TemporaryDirectory(prefix="loupe-bench-gpu-") as tmp:
        run = prepare_run(cfg, tmp)
        t0 = time.perf_counter()
        summary = run_training(cfg, run, log=lambda m: None)
        wall = time.perf_counter() - t0
        val = [r for r in run.metrics() if r["split"] == "val"]
    per_epoch = summary.get("train_seconds", wall) / max(1, len(val))
    hit = next((i for i, r in enumerate(val) if (r.get("accuracy") or 0) >= target), None)
    return {
        "reached": hit is not None,
        "seconds": None if hit is None else per_epoch * (hit + 1),
        "epochs": len(val),
        "best_val": max((r.get("accuracy") or 0) for r in val) if val else None,
        "test": (summary.get("final", {}).get("test") or {}).get("accuracy"),
        "wall": wall,
    }


def first_losses(device: str, steps: int) -> list[float]:
    """The first `steps` training losses of small_cnn on Fashion-MNIST-sized random batches, fp32, seed 0."""
    import numpy as np
    import torch

    from engine.config import RunConfig
    from engine.device import resolve_compute
    from engine.models.factory import build_model
    from engine.train.imbalance import make_loss
    from engine.train.loop import DeviceData, train_step
    from engine.train.optim import make_optimizer

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cfg = RunConfig(model="small_cnn", image_size=28, batch_size=64, hflip=False, precision="fp32").validate()
    compute = resolve_compute(device, "fp32", channels_last=True)
    model, _ = build_model("small_cnn", 10, in_chans=1, allow_scratch=True, image_size=28)
    model = model.to(compute.device).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 64 * steps)
    bands = np.zeros((10, 28, 28, 1), np.uint8)
    for c in range(10):
        bands[c, :, c * 2 : c * 2 + 4] = 200  # a learnable class pattern under the noise
    images = rng.integers(0, 60, (64 * steps, 28, 28, 1), dtype=np.uint8) + bands[labels]
    data = DeviceData(images, labels, compute.device, multilabel=False)
    loss_fn = make_loss("multiclass", 10, cfg, labels).to(compute.device)
    optimizer = make_optimizer(list(model.parameters()), cfg)
    return [
        train_step(model, data, np.arange(s * 64, (s + 1) * 64), cfg, loss_fn, optimizer, compute) for s in range(steps)
    ]


def ddp(plan: Plan) -> dict:
    """`python -m engine train --nproc N` over all GPUs (gloo CPU processes in a dry run); its summary."""
    import json

    with tempfile.TemporaryDirectory(prefix="loupe-bench-ddp-") as tmp:
        args = [
            "--dataset",
            plan.fashion,
            "--model",
            "small_cnn",
            "--strategy",
            "scratch",
            "--epochs",
            "1",
            "--image-size",
            "8" if plan.dry else "28",
            "--batch-size",
            str(64 if plan.dry else 512 * plan.ddp_procs),
            "--device",
            plan.device,
            "--nproc",
            str(plan.ddp_procs),
            "--no-progress",
            "--json",
            "--runs-dir",
            tmp,
        ]
        if plan.dry:
            args += ["--train-limit", "256", "--precision", "fp32"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-m", "engine", "train", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=600,
        )
        if out.returncode:
            raise SystemExit(f"DDP run failed:\n{out.stderr[-2000:]}")
        summary = json.loads(out.stdout)
    return {"img_s": summary.get("train_img_per_s"), "state": summary.get("state")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every code path on the CPU, tiny sizes (also DRY_RUN=1)")
    args = p.parse_args()
    dry = args.dry_run or os.environ.get("DRY_RUN", "") not in ("", "0")
    import torch

    if not dry and not torch.cuda.is_available():
        print("bench_gpu: no GPU here; `make bench-gpu DRY_RUN=1` walks the code paths on the CPU.", file=sys.stderr)
        return 2
    plan = make_plan(dry)
    if dry:
        os.environ.setdefault("LOUPE_NO_QUEUE", "1")
    t_start = time.perf_counter()
    print(device_line(plan), flush=True)

    print("\n| model | px | batch | compile | img/s | TFLOP/s | MFU | GPU util | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name, px, batch in plan.throughput:
        for compiled in (False, True):
            r = throughput(plan, model_name, px, batch, compiled)
            print(
                f"| {model_name} | {px} | {batch} | {'yes' if compiled else 'no'} | {r['img_s']:,.0f} | "
                f"{r['tflops']:.2f} | {fmt(r['mfu'] and 100 * r['mfu'], '.1f', '%')} | "
                f"{fmt(r['util'], '.0f', '%')} | {r['warm_s']:.1f} |",
                flush=True,
            )

    print("\n| dataset | model | px | target | reached | train s to target | epochs | best val | test acc | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = [
        (
            plan.fashion,
            "small_cnn",
            28 if not plan.dry else 8,
            0.93,
            {
                "epochs": plan.fashion_epochs,
                "batch_size": 256,
                "train_limit": plan.fashion_limit,
                "label_smoothing": 0.1,
                "crop_scale": 0.8,
                "time_budget_s": 0.0,
            },
        )
    ]
    if plan.imagenette:
        runs.append(
            (
                plan.imagenette,
                "resnet18",
                128 if not plan.dry else 32,
                0.90,
                {
                    "epochs": 16 if not plan.dry else 1,
                    "batch_size": 256 if not plan.dry else 32,
                    "train_limit": plan.fashion_limit,
                    "time_budget_s": plan.imagenette_budget_s,
                },
            )
        )
    else:
        print(f"| {IMAGENETTE} | resnet18 | 128 | 90% | not present: skipped | | | | | |")
    for spec, model_name, px, target, over in runs:
        r = time_to_accuracy(plan, spec, model_name, px, target, **over)
        print(
            f"| {spec} | {model_name} | {px} | {target:.0%} | {'yes' if r['reached'] else 'no'} | "
            f"{fmt(r['seconds'])} | {r['epochs']} | {fmt(r['best_val'], '.4f')} | {fmt(r['test'], '.4f')} | "
            f"{r['wall']:.1f} |",
            flush=True,
        )

    gpu = first_losses(plan.device, plan.curve_steps)
    cpu = first_losses("cpu", plan.curve_steps)
    worst = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(gpu, cpu))
    ok = worst <= LOSS_RTOL
    print(
        f"\nloss curve, first {plan.curve_steps} steps, {plan.device} vs cpu (fp32, seed 0): "
        f"largest relative difference {worst:.2e} (tolerance {LOSS_RTOL}): {'ok' if ok else 'OUT OF TOLERANCE'}; "
        f"loss {cpu[0]:.4f} -> {cpu[-1]:.4f}"
    )

    if plan.ddp_procs > 1:
        r = ddp(plan)
        print(
            f"DDP over {plan.ddp_procs} {'CPU processes (dry run)' if plan.dry else 'GPUs'}: state {r['state']}, "
            f"{fmt(r['img_s'], ',.0f')} img/s"
        )
    else:
        print("DDP: one GPU here; skipped")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Seconds per image for each explanation method on CPU, resnet18 (scratch weights: timing only).

.venv/bin/python bench/bench_explain.py [--sizes 64,224] [--repeat 2]
"""

from __future__ import annotations

import argparse

import torch
from common import load, machine, timed

from engine.explain.attributions import METHODS, explain
from engine.models.factory import build_model
from engine.predict.run_model import wrap_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="64,224")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()
    print(machine())
    print(f"| model | px | method | seconds (best of {args.repeat}) | settings |\n|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        model, _ = build_model(args.model, 10, pretrained=False, allow_scratch=True, image_size=size)
        rm = wrap_model(model, [str(i) for i in range(10)], "multiclass", size, 3)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        explain(rm, x, "saliency")  # warm-up
        for method in METHODS:
            best, ex = float("inf"), None
            for _ in range(args.repeat):
                with timed() as t:
                    ex = explain(rm, x, method)
                best = min(best, t.seconds)
            keep = {
                k: v for k, v in ex.params.items() if k in ("n_steps", "nt_samples", "n_samples", "window", "stride")
            }
            print(f"| {args.model} | {size} | {method} | {best:.3f} | {keep or ''} |", flush=True)
    print(load())


if __name__ == "__main__":
    main()

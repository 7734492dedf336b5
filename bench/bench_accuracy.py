"""Time to accuracy on `builtin:fashion-mnist`: seconds of CPU training to reach 91% and 93% test accuracy.

Each recipe is a whole training run with its own schedule (one-cycle over its epochs), as a user would
run it: `python -m engine train --preset quick` plus the listed changes. A schedule that ends at epoch E
reaches a better accuracy at E than a longer schedule passing through E, so time-to-accuracy is the
training seconds (`summary.json` train_seconds: no data loading, no evaluation) of the shortest recipe
whose test accuracy reaches the target. The test split (10,000 images) is never used for choices.

    .venv/bin/python bench/bench_accuracy.py [--recipes quick,wide6,wide10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from common import ROOT, machine, table

# The quick preset, then longer schedules with light augmentation (each a plain CLI invocation).
RECIPES: dict[str, list[str]] = {
    "quick": [],
    "e6": ["--epochs", "6", "--time-budget-s", "0", "--label-smoothing", "0.1"],
    "e10": ["--epochs", "10", "--time-budget-s", "0", "--label-smoothing", "0.1", "--crop-scale", "0.8"],
    "e16": ["--epochs", "16", "--time-budget-s", "0", "--label-smoothing", "0.1", "--crop-scale", "0.8"],
}
TARGETS = (0.91, 0.93)


def train(name: str, runs_dir: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "train",
        "--preset",
        "quick",
        *RECIPES[name],
        "--no-progress",
        "--json",
        "--runs-dir",
        runs_dir,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"recipe {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout[out.stdout.index("{") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default="quick,e6,e10,e16", help=f"any of {', '.join(RECIPES)}")
    args = p.parse_args()
    print(
        "# Time to accuracy on builtin:fashion-mnist (small_cnn, 28 px, batch 256, AdamW one-cycle, bf16 where supported)"
    )
    print(machine())
    rows, reached = [], {t: None for t in TARGETS}
    with tempfile.TemporaryDirectory() as runs:
        for name in args.recipes.split(","):
            s = train(name, runs)
            acc = s["final"]["test"]["accuracy"]
            rows.append(
                [
                    name,
                    " ".join(RECIPES[name]) or "(preset)",
                    s["epochs_run"],
                    s["train_seconds"],
                    s["wall_seconds"],
                    s["train_img_per_s"],
                    f"{acc:.2%}",
                ]
            )
            print(f"{name}: {acc:.2%} test accuracy after {s['train_seconds']:.0f} s of training", flush=True)
            for t in TARGETS:
                if acc >= t and (reached[t] is None or s["train_seconds"] < reached[t][1]):
                    reached[t] = (name, s["train_seconds"])
    print(
        table(["recipe", "flags after --preset quick", "epochs", "train s", "wall s", "img/s", "test accuracy"], rows)
    )
    for t in TARGETS:
        got = reached[t]
        print(
            f"  time to {t:.0%}: "
            + (f"{got[1]:.0f} s of training ({got[0]})" if got else "not reached by these recipes")
        )


if __name__ == "__main__":
    main()

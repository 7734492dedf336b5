"""The defaults on real data: what `train --dataset D` alone chooses, how long it takes and how good it is, beside
the previous defaults (epochs from the dataset's size alone) in the same run.

Per dataset, two whole runs through the CLI, as a user would start them:

- **now** (today's defaults, issue 16): `train --dataset D --time-budget-s B`: the model and recipe chosen for
  the images, the epochs planned from a timed probe to fill B seconds, B also the run's guard
  (B = `--budget-s`; the default 600 is the CPU default budget).
- **before** (the defaults before issue 16, `previous_defaults` below): small_cnn with flips only for small
  images, lite0 fine-tuned at 128 px for photos, `--epochs 30/15/8` by the dataset's size, and the same B as
  a guard, so both rows get the same time; a run the guard ends says `(time budget)` in the epochs column.

Each row is judged by the metric its job is judged by, on the test split with thresholds tuned on val:
HTER at the min-HTER threshold for binary jobs, balanced accuracy for multi-class (accuracy beside it),
macro F1 at per-label F1 thresholds for multi-label.

Datasets: the built-ins (Fashion-MNIST and its binary, long-tail and multi-label variants, digits),
scikit-image's `lfw_subset` (100 faces and 100 non-faces, 25 px gray, written as class folders under
bench/out/), and `../shared/data/imagenette-224.zip` when present (an ImageNet subset: pretrained figures
on it are optimistic). Missing ones are skipped with a note.

    .venv/bin/python bench/bench_recipes.py --budget-s 90 --datasets digits,lfw,fashion-binary
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import OUT, ROOT, load, machine, table

from engine.metrics.display import MISSING, format_metric

IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette-224.zip"
DATASETS = {
    "digits": "builtin:digits",
    "lfw": "lfw",  # written on first use (write_lfw)
    "fashion-binary": "builtin:fashion-binary",
    "fashion-longtail": "builtin:fashion-longtail",
    "fashion-multilabel": "builtin:fashion-multilabel",
    "fashion-mnist": "builtin:fashion-mnist",
    "imagenette": str(IMAGENETTE),
}
JUDGED_BY = {"binary": "hter", "multiclass": "balanced_accuracy", "multilabel": "macro_f1"}


def fixed_epochs(num_images: int) -> int:
    """The defaults' epochs before issue 16: from the dataset's size alone (`engine.train.recipes.fixed_epochs`,
    repeated here so the bench keeps the old rule even if the engine's fallback changes)."""
    return 30 if num_images < 5000 else 15 if num_images < 50000 else 8


def previous_defaults(spec: str, n: int) -> list[str]:
    """The flags that reproduce the defaults before issue 16 on this dataset: small images (up to ~72 px)
    trained small_cnn from scratch at their own size with flips only (no translation, no label smoothing, no
    test-time flip); larger photos fine-tuned tf_efficientnet_lite0 at 128 px with a linear head (all of it
    under 5,000 images, else the last stage); epochs from the dataset's size alone (`fixed_epochs`). The
    other choices (image size of small images, imbalance handling, patience) were and are the same."""
    from engine.data import quick_stats

    images = quick_stats(spec).get("images", {})
    short = min(images.get("width", {}).get("mean") or 0, images.get("height", {}).get("mean") or 0)
    epochs = ["--epochs", str(fixed_epochs(n))]
    if short and short <= 72:
        return ["--model", "small_cnn", "--translate", "0", "--label-smoothing", "0", "--tta-hflip", "false", *epochs]
    strategy = "finetune_all" if n < 5000 else "finetune_last"
    return [
        *("--model", "tf_efficientnet_lite0", "--pretrained", "--image-size", "128", "--strategy", strategy),
        *("--head", "linear", "--dropout", "0", "--lr", "0.001", "--label-smoothing", "0"),
        *epochs,
    ]


def write_lfw() -> str:
    """scikit-image's `lfw_subset` (the first 100 images are faces, the last 100 not) as class folders."""
    import numpy as np
    from PIL import Image
    from skimage.data import lfw_subset

    root = OUT / "lfw-subset"
    if not (root / "not_face" / "99.png").exists():
        images = lfw_subset()
        for i, img in enumerate(images):
            folder = root / ("face" if i < 100 else "not_face")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(folder / f"{i % 100}.png")
    return str(root)


def spec_of(name: str) -> str | None:
    spec = DATASETS[name]
    if name == "lfw":
        return write_lfw()
    if name == "imagenette" and not IMAGENETTE.exists():
        return None
    return spec


def train(spec: str, flags: list[str], runs_dir: str) -> tuple[dict, list[str], float]:
    """One `train` run in its own process: (its --json summary, its 'chose ...' lines, wall seconds)."""
    cmd = [sys.executable, "-m", "engine", "train", "--dataset", spec, *flags, "--no-progress", "--json"]
    cmd += ["--runs-dir", runs_dir]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"train {spec} {' '.join(flags)} failed:\n{out.stderr[-3000:]}")
    chose = [line.removeprefix("chose ") for line in out.stderr.splitlines() if line.startswith("chose ")]
    return json.loads(out.stdout[out.stdout.index("{") :]), chose, wall


def judged(run_path: str) -> tuple[str, str, str]:
    """(task, the job's metric on test at val-tuned thresholds, accuracy on test) of a finished run."""
    from engine.evaluate.report import evaluate_run
    from engine.runs.folder import Run

    run = Run(run_path)
    report = evaluate_run(run, split="test", tune_split="val", rule="min_hter", bootstrap=0)
    task = run.config().get("task") or "multiclass"
    metrics = report.get("metrics") or report
    key = JUDGED_BY.get(task, "balanced_accuracy")
    return task, format_metric(key, metrics.get(key)), format_metric("accuracy", metrics.get("accuracy"))


def chosen_summary(cfg: dict) -> str:
    parts = [f"{cfg['model']} {cfg['image_size']} px", cfg["strategy"], f"{cfg['epochs']} ep"]
    if cfg.get("finetune_epochs"):
        parts.append(f"then {cfg['finetune_epochs']} ep fine-tune")
    if cfg.get("translate"):
        parts.append(f"translate {cfg['translate']:g}")
    if cfg.get("tta_hflip"):
        parts.append("TTA flip")
    if cfg.get("imbalance") not in (None, "none"):
        parts.append(cfg["imbalance"])
    return ", ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--budget-s", type=float, default=600.0, help="the time budget of both rows (default 600: the CPU default)"
    )
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"any of {', '.join(DATASETS)}")
    args = p.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not args.budget_s > 0:
        raise SystemExit(f"--datasets takes {', '.join(DATASETS)} (got {', '.join(unknown)}); --budget-s must be > 0")
    from engine.data import quick_stats
    from engine.runs.folder import Run

    print(f"# The defaults on real data, budget {args.budget_s:g} s per run, beside the defaults before issue 16")
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for name in names:
            spec = spec_of(name)
            if spec is None:
                print(f"{name}: skipped ({IMAGENETTE} is not present)", flush=True)
                continue
            n = quick_stats(spec).get("num_images", 0)
            recipes = {
                "now": ["--time-budget-s", f"{args.budget_s:g}"],
                "before": [*previous_defaults(spec, n), "--time-budget-s", f"{args.budget_s:g}"],
            }
            for recipe, flags in recipes.items():
                summary, chose, wall = train(spec, flags, runs)
                run = Run(summary["path"])
                cfg = run.config()["config"]
                task, metric, acc = judged(summary["path"])
                ran = f"{summary.get('epochs_run', MISSING)}" + (
                    " (time budget)" if summary.get("stop_reason") == "time budget" else ""
                )
                why = next((c for c in chose if c.startswith("epochs ")), "")
                rows.append([name, recipe, chosen_summary(cfg), ran, f"{wall:.0f}", task, metric, acc])
                print(
                    f"{name} / {recipe}: {rows[-1][2]}; ran {ran} epochs in {wall:.0f} s; {task} {metric}", flush=True
                )
                if why:
                    print(f"  chose {why}", flush=True)
    print(
        table(
            ["dataset", "defaults", "what they chose", "epochs run", "wall s", "task", "judged by (test)", "accuracy"],
            rows,
        )
    )
    print("judged by: HTER (binary, min-HTER threshold from val), balanced accuracy (multi-class), ")
    print("macro F1 at per-label thresholds from val (multi-label); " + load())


if __name__ == "__main__":
    main()

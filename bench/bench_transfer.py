"""Transfer defaults for larger photos (issue 16 item 3): the old default against the new one, on real photos.

Old default (before issue 16): efficientnet-lite0 at 128 px, fine-tuned (all of it under 5,000 images, else
its last stage), lr 0.001, up to 30 epochs with patience 5, under the same time budget as the new one.
New default: what `train --dataset D` now chooses (`engine.train.recipes.suggest`): frozen features at the
pretrained resolution, computed once and cached, and a regularised MLP head on them; then, time permitting, the
last stage fine-tuned from that head (`engine.train.head_first`). "new, head only" is the same with
`--finetune-epochs 0`, so the fine-tune's gain (or loss) is measured, not assumed.

Data: a class-balanced subset of Imagenette (`../shared/data/imagenette-224.zip`, skipped with a note when
absent), N_TRAIN/N_VAL/N_TEST images per class, copied into train/val/test folders. Imagenette is an
ImageNet subset, so every ImageNet-pretrained figure here is optimistic: compare the recipes with each other.

    .venv/bin/python bench/bench_transfer.py [--train 60] [--val 20] [--test 20] [--budget 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zipfile
from pathlib import Path

from common import table  # noqa: F401  (also puts the repo on sys.path)

#: `../shared/data/` beside the clone (a worktree under wt/ has it one level further up)
ZIPS = [Path(__file__).resolve().parents[k] / "shared" / "data" / "imagenette-224.zip" for k in (2, 3)]


def subset(zip_path: Path, out: Path, per_split: dict[str, int]) -> Path:
    """train/val/test class folders: the first images of each class of fast.ai's train split (train) and
    of its val split (val, then test), so no photo is in two splits."""
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpeg"))
        by = {}
        for n in names:
            _, split, cls, _ = n.split("/")
            by.setdefault((split, cls), []).append(n)
        for (split, cls), files in by.items():
            if split == "train":
                plan = {"train": files[: per_split["train"]]}
            else:
                plan = {
                    "val": files[: per_split["val"]],
                    "test": files[per_split["val"] : per_split["val"] + per_split["test"]],
                }
            for dst, chosen in plan.items():
                d = out / dst / cls
                d.mkdir(parents=True, exist_ok=True)
                for n in chosen:
                    (d / Path(n).name).write_bytes(z.read(n))
    return out


def train(argv: list[str], runs: Path) -> dict:
    from engine.cli.main import build_parser
    from engine.cli.train import build_config
    from engine.runs.folder import Run
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    cfg, reasons = build_config(build_parser().parse_args(["train", *argv, "--runs-dir", str(runs)]))
    run = prepare_run(cfg, runs)
    t0 = time.perf_counter()
    summary = run_training(cfg, Run(run.path), log=lambda m: None)
    wall = time.perf_counter() - t0
    test = (summary.get("final") or {}).get("test") or {}
    recipe = f"{cfg.model} {cfg.image_size}px {cfg.strategy} head={cfg.head} epochs={cfg.epochs}"
    if cfg.finetune_epochs:
        kept = (summary.get("head_first") or {}).get("kept", "?")
        ran = len([r for r in Run(run.path).metrics() if r.get("split") == "val"])
        recipe += f", then fine-tune {ran} of {cfg.finetune_epochs} epochs (kept: {kept})"
    return {
        "recipe": recipe,
        "test acc": f"{test.get('accuracy', float('nan')):.4f}",
        "wall s": f"{wall:.0f}",
        "reasons": reasons,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=60, help="training images per class")
    p.add_argument("--val", type=int, default=20)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--budget", type=float, default=300.0, help="time budget (s) of both recipes")
    args = p.parse_args()
    found = [z for z in ZIPS if z.is_file()]
    if not found:
        print(f"skipped: {ZIPS[0]} is not here (the benchmark needs Imagenette; the tests never do)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    os.environ.setdefault("LOUPE_CACHE_DIR", str(tmp / "cache"))
    data = subset(found[0], tmp / "imagenette", {"train": args.train, "val": args.val, "test": args.test})
    budget = ["--time-budget-s", str(args.budget)]
    n = args.train + args.val + args.test
    old = ["--model", "tf_efficientnet_lite0", "--pretrained", "--image-size", "128", "--lr", "0.001"]
    old += ["--strategy", "finetune_all" if n * 10 < 5000 else "finetune_last", "--epochs", "30", "--patience", "5"]
    rows = []
    for name, argv in [("old default", old), ("new, head only", ["--finetune-epochs", "0"]), ("new default", [])]:
        r = train(["--dataset", str(data), *argv, *budget], tmp / "runs")
        rows.append({"defaults": name, **{k: v for k, v in r.items() if k != "reasons"}})
        print(name, "reasons:", "; ".join(r["reasons"]), flush=True)
    print(
        f"Imagenette subset: {args.train}/{args.val}/{args.test} images per class (10 classes), budget {args.budget:.0f} s"
    )
    heads = list(rows[0])
    print(table(heads, [[r[h] for h in heads] for r in rows]))


if __name__ == "__main__":
    main()

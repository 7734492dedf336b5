"""Unlabelled images: labelled-only vs pseudo-labelled, and 200 queue-picked labels vs 200 random ones.

Protocol (issue 17, part 2): real Fashion-MNIST (and its multi-label mosaic variant) written as PNG files with a
CSV whose split column fixes train / val / test; 90% of the training labels are hidden (empty cells: the
unlabelled pool). Four runs per dataset, the same model, epochs and seed, scored on the same test images:

- labelled only: the 10% labelled training images;
- pseudo-labelled: `--pseudo-label T` (round 1 = the run above, round 2 adds the pool images that clear their
  class's threshold; the table shows round 2);
- + 200 queue-picked: the labelled-only run's label queue (`engine.evaluate.queue.label_queue`), its first
  200 pool images given their hidden true label through `labels.loupe.csv` (a person labelling them, simulated);
- + 200 random: 200 pool images drawn at random, revealed the same way.

    .venv/bin/python bench/bench_labels.py [--train 2000] [--val 400] [--test 1000] [--epochs 10] [--reveal 200] [--pseudo 0.95]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from common import OUT, machine, table
from PIL import Image


def write_dataset(root: Path, spec: str, n_train: int, n_val: int, n_test: int, seed: int) -> tuple[Path, dict]:
    """root/labels.csv + root/img/*.png from a built-in: n_train training images with 10% labelled, and labelled
    val and test images. Returns the folder and the hidden labels of the pool (image id -> label cell)."""
    from engine.data.sources.builtin import load_builtin

    src = load_builtin(spec)
    images = src.arrays()
    rng = np.random.default_rng(seed)
    train_pool = rng.permutation(np.flatnonzero(src.split_of == 0))
    test_pool = rng.permutation(np.flatnonzero(src.split_of == 2))
    chosen = {"train": train_pool[:n_train], "val": train_pool[n_train : n_train + n_val], "test": test_pool[:n_test]}
    shutil.rmtree(root, ignore_errors=True)
    (root / "img").mkdir(parents=True)
    rows, hidden = ["filename,labels,split"], {}
    labelled = set(chosen["train"][: n_train // 10].tolist())

    names = [c.replace(" ", "_") for c in src.classes]  # "Ankle boot": a space separates labels in a CSV cell

    def cell(i: int) -> str:
        if src.multilabel:  # an empty cell is "none of the labels" (a mosaic of no listed item)
            return ";".join(names[j] for j in np.flatnonzero(src.labels[i]))
        return names[int(src.labels[i])]

    for split, idx in chosen.items():
        for i in idx:
            name = f"img/{i}.png"
            Image.fromarray(np.asarray(images[i]).squeeze()).save(root / name)
            if split == "train" and i not in labelled:
                hidden[name] = cell(i)
                text = "nan" if src.multilabel else ""  # hidden: the unlabelled pool
            else:
                text = cell(i)
            rows.append(f"{name},{text},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, hidden


def train(spec: str, runs: Path, epochs: int, pseudo: float = 0.0):
    from engine.config import RunConfig
    from engine.train.jobs import prepare_run
    from engine.train.run import run_training

    cfg = RunConfig(dataset=spec, model="small_cnn", epochs=epochs, batch_size=32, seed=0, pseudo_label=pseudo)
    run = prepare_run(cfg.validate(), runs)
    t0 = time.perf_counter()
    summary = run_training(cfg, run, log=lambda m: None)
    return run, summary, time.perf_counter() - t0


def reveal(root: Path, hidden: dict, images: list[str]) -> None:
    """Give `images` their hidden true labels in labels.loupe.csv (what a person labelling them would write)."""
    from engine.data.labels_file import set_label
    from engine.data.sources.detect import resolve_source

    source = resolve_source(str(root))
    for image in images:
        set_label(source, image, hidden[image])


def row(name: str, what: str, summary: dict, seconds: float, multilabel: bool, extra: str = "") -> list[str]:
    from engine.metrics.display import format_metric

    test = summary["final"].get("test", {})
    keys = ("micro_f1", "accuracy") if multilabel else ("accuracy", "macro_f1")
    return [name, what, *(format_metric(k, test.get(k)) for k in keys), f"{seconds:.0f}", extra]


def bench(spec: str, args: argparse.Namespace, work: Path) -> list[list[str]]:
    from engine.data.sources.detect import resolve_source
    from engine.evaluate.queue import label_queue

    multilabel = "multilabel" in spec
    root, hidden = write_dataset(work / spec.split(":")[1], spec, args.train, args.val, args.test, args.seed)
    runs = work / "runs"
    out = []
    base, s, sec = train(str(root), runs, args.epochs)
    out.append(row(spec, f"labelled only ({args.train // 10} train)", s, sec, multilabel))
    _, s, sec = train(str(root), runs, args.epochs, pseudo=args.pseudo)
    pl = s["pseudo_label"]
    out.append(
        row(spec, f"pseudo-labelled (T={args.pseudo})", s, sec, multilabel, f"{pl['added']} of {pl['pool']} added")
    )
    queue = [q.id for q in label_queue(base, resolve_source(str(root))) if q.kind == "pool"][: args.reveal]
    reveal(root, hidden, queue)
    _, s, sec = train(str(root), runs, args.epochs)
    out.append(row(spec, f"+ {args.reveal} queue-picked labels", s, sec, multilabel))
    (root / "labels.loupe.csv").rename(root / "labels.queue.bak")
    rng = np.random.default_rng(args.seed + 1)
    random = [str(x) for x in rng.choice(sorted(hidden), size=args.reveal, replace=False)]
    reveal(root, hidden, random)
    _, s, sec = train(str(root), runs, args.epochs)
    out.append(row(spec, f"+ {args.reveal} random labels", s, sec, multilabel))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reveal", type=int, default=200)
    ap.add_argument("--pseudo", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", default="builtin:fashion-mnist,builtin:fashion-multilabel")
    args = ap.parse_args()
    work = OUT / "labels"
    print(machine())
    rows = []
    t0 = time.perf_counter()
    for spec in args.datasets.split(","):
        rows += bench(spec, args, work)
    print(
        table(
            ["dataset", "training labels", "test acc / micro-F1", "test macro-F1 / subset acc", "train s", "note"], rows
        )
    )
    print(f"total {time.perf_counter() - t0:.0f} s; {machine()}")


if __name__ == "__main__":
    main()

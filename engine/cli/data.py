"""`python -m engine data stats SPEC`: the statistics of a dataset spec, as text or JSON.

Label conflicts and data-quality warnings come first; `class_weights` are the loss weights training
would apply with `--imbalance weighted_loss` (from `engine.train.imbalance`, the one formula).

The data command group, registered by `engine.cli.main` like the other groups (`register(sub)`).
It imports the data layer only when the command runs, so `python -m engine --help` stays fast.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.flags import JSON, NO_PROGRESS
from engine.cli.labels import register_labels
from engine.cli.progress import TqdmProgress
from engine.cli.values import SEED, image_size, whole


def cmd_data_stats(args: argparse.Namespace) -> int:
    from engine.data.dataset import dataset_stats, open_dataset, quick_stats
    from engine.data.stats import format_stats_text
    from engine.train.imbalance import suggested_class_weights

    progress = TqdmProgress(enabled=not args.no_progress)
    try:
        if args.quick:
            stats = quick_stats(args.spec, task=args.task, seed=args.seed, progress=progress)
        else:
            ds = open_dataset(args.spec, image_size=args.image_size, task=args.task, seed=args.seed, progress=progress)
            stats = dataset_stats(ds)
    finally:
        progress.close()
    stats["class_weights"] = suggested_class_weights(stats)
    if args.json:
        print(json.dumps(stats, indent=2, allow_nan=False))
    else:
        print(format_stats_text(stats))
        for line in corrupt_lines(stats):
            print(line)
    return 0


def corrupt_lines(stats: dict, limit: int = 20) -> list[str]:
    """Each unusable file with its reason, as the Dataset page lists them (the first `limit`)."""
    corrupt = stats.get("corrupt") or []
    lines = [f"corrupt: {c['path']}: {c['reason']}" for c in corrupt[:limit]]
    if len(corrupt) > limit:
        lines.append(f"corrupt: ... {len(corrupt) - limit} more (--json lists them all)")
    return lines


def cmd_data_quality(args: argparse.Namespace) -> int:
    """Blurry, dark, bright, near-constant, odd-sized and grayscale images, each ranked worst first with its score
    (cleanvision's definitions on the decoded images: `engine.data.quality`)."""
    from engine.data.dataset import open_dataset
    from engine.data.quality import format_quality_text, json_dumps, quality_json, quality_report

    progress = TqdmProgress(enabled=not args.no_progress)
    try:
        ds = open_dataset(args.spec, image_size=args.image_size, seed=args.seed, progress=progress)
        summary = quality_json(ds, quality_report(ds, progress=progress), limit=args.limit)
    finally:
        progress.close()
    print(json_dumps(summary) if args.json else format_quality_text(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    stats = data_sub.add_parser(
        "stats",
        parents=[JSON, NO_PROGRESS],
        help="class balance, splits, image sizes, corrupt files and duplicates of a dataset",
        description="Print the statistics of a dataset spec (builtin:NAME, a folder, a .zip, a .csv or a .npz).",
    )
    stats.add_argument("spec", help="dataset spec, e.g. builtin:fashion-mnist or path/to/folder")
    stats.add_argument("--quick", action="store_true", help="headers only: no decoding, no corrupt/duplicate check")
    stats.add_argument("--image-size", type=image_size(), default=None, help="working resolution of the decode cache")
    stats.add_argument(
        "--task", choices=["binary", "multiclass", "multilabel"], default=None, help="override the inferred task"
    )
    stats.add_argument("--seed", type=SEED, default=0, help="seed for splits and derived datasets")
    stats.set_defaults(func=cmd_data_stats)
    register_labels(data_sub)
    quality = data_sub.add_parser(
        "quality",
        parents=[JSON, NO_PROGRESS],
        help="blurry, too dark, too bright, near-constant, odd-sized and grayscale images, worst first",
        description="Score every image of a dataset spec with cleanvision's quality measures (computed on the "
        "decoded images, cached per dataset) and list the flagged ones, worst first, with their scores.",
    )
    quality.add_argument("spec", help="dataset spec, e.g. builtin:digits or path/to/folder")
    quality.add_argument("--image-size", type=image_size(), default=None, help="working resolution of the decode cache")
    quality.add_argument("--seed", type=SEED, default=0, help="seed for splits and derived datasets")
    quality.add_argument(
        "--limit", type=whole(1, 100_000), default=100, help="flagged images listed per measure with --json"
    )
    quality.set_defaults(func=cmd_data_quality)

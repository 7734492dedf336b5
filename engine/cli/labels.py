"""`data pool` and `data label`: the unlabelled pool, the label queue and labelling, from the command line.

Registered into the `data` group by `engine.cli.data` (so `python -m engine data --help` lists them), in a
module of its own so the labelling loop's commands stay together. Labels go to the dataset's
`labels.loupe.csv` (`engine.data.labels_file`), never into the user's own files.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.flags import JSON, RUNS_DIR
from engine.cli.values import whole


def _source(spec: str):
    from engine.data.sources.detect import resolve_source

    return resolve_source(spec)


def cmd_data_pool(args: argparse.Namespace) -> int:
    from engine.evaluate.queue import label_queue, queue_runs
    from engine.metrics.display import number, percent
    from engine.runs.folder import find_run

    source = _source(args.dataset)
    if args.run:
        run = find_run(args.run, args.runs_dir)
    else:
        runs = queue_runs(source.spec, args.runs_dir)
        run = runs[0] if runs else None
    items = label_queue(run, source, n=args.top) if run is not None else []
    if args.json:
        out = {
            "dataset": source.spec,
            "pool": len(source.pool_files),
            "unlabelled": source.unlabelled,
            "run": run.id if run is not None else None,
            "queue": [i.to_dict() for i in items],
        }
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0
    print(f"unlabelled pool: {len(source.pool_files):,} images in {source.spec}")
    if run is None:
        if source.pool_files:
            print("no completed run on this dataset to rank the pool with; train one, then run this again")
        return 0
    if not items:
        print(f"the queue from run {run.id} is empty")
        return 0
    print(f"label queue from run {run.id} (most useful first):")
    print(f"{'rank':>4}  {'kind':<11}  {'suggested':<20}  {'confidence':>10}  {'margin':>7}  image")
    for i in items:
        suggested = ";".join(i.suggested) or "(none)"
        if i.given is not None:
            suggested = f"{';'.join(i.given) or '(none)'} -> {suggested}"
        print(f"{i.rank:>4}  {i.kind:<11}  {suggested:<20}  {percent(i.confidence):>10}  {number(i.margin):>7}  {i.id}")
    return 0


def cmd_data_label(args: argparse.Namespace) -> int:
    from engine.data.labels_file import labels_path, set_label, undo_label
    from engine.errors import DatasetError

    source = _source(args.dataset)
    if args.undo:
        if args.label is not None:
            raise DatasetError("--undo takes no --label; give --image to undo that image's latest change.")
        change = undo_label(source, args.image)
        print(f"undid: {change.image} -> {change.label or '(none)'} (change {change.seq}) in {labels_path(source)}")
        return 0
    if args.image is None or args.label is None:
        raise DatasetError("Give --image ID and --label L (or --undo).")
    change = set_label(source, args.image, args.label)
    print(f"labelled: {change.image} -> {change.label or '(none)'} (change {change.seq}) in {labels_path(source)}")
    return 0


def register_labels(data_sub: argparse._SubParsersAction) -> None:
    """Add `pool` and `label` to the `data` group's subparsers."""
    pool = data_sub.add_parser(
        "pool",
        parents=[JSON, RUNS_DIR],
        help="the unlabelled pool and the label queue ranked by a run",
        description="Print the pool size and the label queue: unlabelled images the run is least sure of (round-robin "
        "over predicted classes), then images cleanlab finds likely mislabelled.",
    )
    pool.add_argument("--dataset", required=True, help="dataset spec (a folder, .zip or .csv)")
    pool.add_argument("--run", default=None, help="the run whose predictions rank the queue (default: the newest)")
    pool.add_argument("--top", type=whole(1, 100_000), default=50, help="how many queue rows to print")
    pool.set_defaults(func=cmd_data_pool)
    label = data_sub.add_parser(
        "label",
        help="label an image (writes the dataset's labels.loupe.csv), or undo the latest change",
        description="Record a label in the dataset's labels.loupe.csv (an append-only log beside the dataset; the "
        "dataset's own files are never changed).",
    )
    label.add_argument("--dataset", required=True, help="dataset spec (a folder, .zip or .csv)")
    label.add_argument("--image", default=None, help="the image's id, as `data pool` lists it")
    label.add_argument("--label", default=None, help="a class name (multi-label: several separated by ';')")
    label.add_argument("--undo", action="store_true", help="undo the latest change (of --image, when given)")
    label.set_defaults(func=cmd_data_label)

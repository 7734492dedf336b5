"""`python -m engine predict MODEL IMAGE...` and `python -m engine export RUN`: using a model outside the app.

The predict command group (registered by `engine.cli.main`). These load a model (and for export, the
ONNX exporter), which the data and training commands never need, so the engine is imported only
when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.cli.flags import JSON, NO_PROGRESS, RUNS_DIR
from engine.cli.progress import TqdmProgress
from engine.cli.values import number, whole

DEFAULT_MARGIN = (
    0.1  # engine.predict.unsure.DEFAULT_MARGIN, spelled out so building the parser imports no torch (tested equal)
)


def _resolve(ref: str, runs_dir: str | None) -> str:
    """A run id under --runs-dir becomes its folder; builtin refs pass through."""
    if ref.startswith("builtin:"):
        return ref
    from engine.runs.folder import find_run

    return str(find_run(ref, runs_dir).path)


def _line(r: dict, limit: float) -> str:
    """One image: the decision (multi-label: the decided set, "(none)" when no label passes its threshold), the
    unsure and out-of-distribution flags, then the top-k (multi-label: every label with its threshold)."""
    from engine.metrics.display import number, threshold
    from engine.predict.ood import verdict

    if not r["ok"]:
        return f"error: {r['file']}: {r['error']}"
    flag = f"  [unsure: margin {r['margin']:.4f} < {limit:g}]" if r["unsure"] and r.get("margin") is not None else ""
    flag = flag or ("  [unsure]" if r["unsure"] else "")
    unlike = "  [" + verdict(r) + "]" if r.get("unlike_training") else ""
    if isinstance(r["label"], list):
        ranked = sorted(r.get("labels") or [], key=lambda lab: -lab["prob"])
        per_label = "\n".join(
            f"    {lab['class']}: {number(lab['prob'])} {'>=' if lab['accepted'] else '<'} threshold "
            f"{threshold(lab['threshold'])}: {'accepted' if lab['accepted'] else 'rejected'}"
            for lab in ranked
        )
        return f"{r['file']}: {', '.join(r['label']) or '(none)'}{flag}{unlike}\n{per_label}"
    tops = "  ".join(f"{t['class']} {t['prob']:.4f}" for t in r["top"])
    coarse = f"\n    coarse: {r['coarse']} ({r['coarse_confidence']:.4f})" if "coarse" in r else ""
    return f"{r['file']}: {r['label']} ({r['confidence']:.4f}){flag}{unlike}\n    top: {tops}{coarse}"


def cmd_predict(args: argparse.Namespace) -> int:
    from engine.predict.predictor import PredictError, Predictor, predict_folder

    if args.unsure_below is not None:
        raise PredictError(
            "--unsure-below was replaced by --unsure-margin: a prediction is unsure when it is within "
            "the margin of changing its decision (see predict --help)."
        )
    if not 0 <= args.unsure_margin <= 1:
        raise PredictError(f"--unsure-margin must be between 0 and 1 (probability units); got {args.unsure_margin:g}.")
    pred = Predictor.from_ref(_resolve(args.model, args.runs_dir), labels=args.labels)
    pred.unsure_margin = args.unsure_margin
    sources = [Path(p) for p in args.images]
    bulk = [p for p in sources if p.is_dir() or p.suffix.lower() == ".zip"]
    if bulk:
        if len(sources) != 1:
            raise PredictError("Give either one folder/zip (with --out FILE.csv) or image files, not both.")
        if args.out is None:  # the table on stdout: nothing is written where the user did not ask (issue 15)
            if args.json:
                raise PredictError("--json with a folder or zip needs --out FILE.csv (the CSV is the result).")
            progress = TqdmProgress(enabled=not args.no_progress)
            try:
                predict_folder(pred, bulk[0], sys.stdout, top_k=args.top_k, progress=progress)
            finally:
                progress.close()
            return 0
        out = Path(args.out)
        progress = TqdmProgress(enabled=not args.no_progress)
        try:
            predict_folder(pred, bulk[0], out, top_k=args.top_k, progress=progress)
        finally:
            progress.close()
        print(json.dumps({"csv": str(out)}) if args.json else f"predictions of {bulk[0]} -> {out}")
        return 0
    results = pred.predict_paths(sources, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
    else:
        from engine.predict.ood import describe

        print(f"model: {pred.name} ({pred.task}, {pred.image_size} px)")
        print(describe(pred.ood))
        for r in results:  # an image that could not be read is an error: stderr, like every other error
            print(_line(r, pred.unsure_margin), file=sys.stdout if r["ok"] else sys.stderr)
    return 0 if any(r["ok"] for r in results) else 2


def cmd_export(args: argparse.Namespace) -> int:
    from engine.predict.export import card_path, export

    out = export(_resolve(args.run, args.runs_dir), args.format, Path(args.out))
    print(f"exported {args.format} -> {out} (model card {card_path(out)})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "predict",
        parents=[RUNS_DIR, JSON, NO_PROGRESS],
        help="classify images with a run or builtin:imagenet",
        description="Predict image files (or a folder/.zip of images into a CSV) with a run's model "
        "and its saved thresholds, or with builtin:imagenet. Multi-label: the decision is the set of labels "
        "at or above their thresholds, each listed with its probability and threshold (CSV: prob:LABEL, "
        "threshold:LABEL). For a run, each image is also checked against the training data (Mahalanobis "
        "distance in the model's penultimate features, calibrated on the first use so that 95%% of validation "
        "images pass, cached in RUN/ood.npz): 'looks unlike the training data' when it is far from them "
        "(CSV: unlike_training, ood_score, ood_threshold).",
    )
    pr.add_argument("model", help="run id or folder, or builtin:imagenet")
    pr.add_argument("images", nargs="+", help="image files, or one folder or .zip (then --out FILE.csv)")
    pr.add_argument("--top-k", type=whole(1, 1000), default=5, help="how many classes to list per image (default 5)")
    pr.add_argument(
        "--unsure-margin",
        type=number(0, 1),
        default=DEFAULT_MARGIN,
        metavar="M",
        help="flag a prediction 'unsure' when it is within M of changing its decision: binary, the positive "
        "score within M of the run's threshold (the saved one, else 0.5); multi-class, the top two "
        "probabilities less than M apart; multi-label, a label's score within M of its threshold, or no "
        f"label at all (default {DEFAULT_MARGIN:g})",
    )
    pr.add_argument(
        "--labels",
        default=None,
        metavar="SUBSET",
        help="builtin:imagenet only: answer among these ImageNet classes, probabilities renormalised over them: "
        "dogs-cats (the 118 dog breeds and 5 domestic cats), dogs, cats, a comma list of class names "
        "('beagle,tabby'), or a text file with one name a line (default: all 1000)",
    )
    pr.add_argument("--unsure-below", type=float, default=None, help=argparse.SUPPRESS)  # replaced: says so
    pr.add_argument("--out", default=None, help="CSV file for a folder/zip (default: the CSV on stdout)")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        parents=[RUNS_DIR],
        help="write a run's model as ONNX or TorchScript plus a JSON model card",
        description="Export a run's best model; it takes float32 NCHW pixels in [0, 1] and returns logits.",
    )
    ex.add_argument("run", help="run id or folder (or builtin:imagenet)")
    ex.add_argument(
        "--format", choices=["onnx", "torchscript"], required=True, help="ONNX (onnxruntime and others) or TorchScript"
    )
    ex.add_argument("--out", required=True, help="output file; the model card goes to OUT.json")
    ex.set_defaults(func=cmd_export)

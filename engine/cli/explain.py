"""`python -m engine explain RUN IMAGE` and `python -m engine attack RUN`: explanations and robustness.

The explain command group (registered by `engine.cli.main`). These commands load a model and pull in
Captum, which the data and training commands never need, so the engine is imported only when they run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.flags import JSON, NO_PROGRESS, RUNS_DIR
from engine.cli.progress import TqdmProgress
from engine.cli.values import SEED, image_out, number, numbers, whole

if TYPE_CHECKING:
    import numpy as np


def _class_index(value: str | None, classes: list[str]) -> int | None:
    from engine.explain.attributions import ExplainError

    if value is None:
        return None
    if value in classes:
        return classes.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(classes):
        return int(value)
    raise ExplainError(f"Unknown class '{value}'; give a class name or an index below {len(classes)}.")


def full_size_overlay(
    original: np.ndarray, heatmap: np.ndarray, alpha: float, sign: str
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The overlay at the input image's own resolution: the heatmap over the centred square the model saw
    (`engine.data.decode.resize` crops it before resizing), the rest of the image dimmed. Returns the image
    and the square (left, top, right, bottom) in the input's pixels."""
    import numpy as np

    from engine.explain.render import overlay

    img = original if original.ndim == 3 else original[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    h, w = img.shape[:2]
    side = min(w, h)
    left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
    out = (img.astype(np.float32) * 0.4).round().astype(np.uint8)  # outside what the model saw
    out[top : top + side, left : left + side] = overlay(
        img[top : top + side, left : left + side], heatmap, alpha=alpha, sign=sign
    )
    return out, (left, top, left + side, top + side)


def cmd_explain(args: argparse.Namespace) -> int:
    import sys

    from PIL import Image

    from engine.data.decode import ImageDecodeError, decode
    from engine.explain.attributions import explain
    from engine.explain.gradcam import coarse_warning
    from engine.predict.run_model import RunModelError, load_run_model, predict_tensor, prepare_image
    from engine.runs.folder import find_run

    run = find_run(args.run, args.runs_dir)
    rm = load_run_model(run)
    path = Path(args.image)
    _, x = prepare_image(path, path.name, rm)
    try:
        original, _ = decode(path, path.name, size=None, channels=rm.channels)
    except ImageDecodeError as e:
        raise RunModelError(f"The image '{path.name}' cannot be used: {e}.") from None
    probs = predict_tensor(rm, x)[0]
    top = int(probs.argmax())
    target = _class_index(args.target, rm.classes)
    decided = f"prediction: {rm.classes[top]} ({probs[top]:.4f})"
    if rm.task == "multilabel":
        accepted = _accepted(run, rm, probs)
        names = ", ".join(f"{rm.classes[i]} ({probs[i]:.4f})" for i in accepted) or "(none)"
        decided = f"decided labels: {names}"
        if target is None and accepted:
            target = accepted[0]  # the most probable decided label, not a top label its threshold rejects
    ex = explain(rm, x, args.method, target=target, baseline=args.baseline, n_steps=args.n_steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture, (left, top_px, right, bottom) = full_size_overlay(original, ex.heatmap, args.alpha, args.sign)
    Image.fromarray(picture).save(out)
    h, w = original.shape[:2]
    seen = (
        ""
        if (right - left, bottom - top_px) == (w, h)
        else f"; the model saw the centre {right - left}x{bottom - top_px} square, the rest is dimmed"
    )
    print(
        f"{decided}; explained class {rm.classes[ex.target]} "
        f"({probs[ex.target]:.4f}) with {ex.method} in {ex.seconds:.2f} s -> {out} ({w}x{h}, the input's size{seen})"
    )
    note = coarse_warning(ex.params.get("feature_map"), rm.image_size)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _accepted(run, rm, probs) -> list[int]:
    """A multi-label run's decided labels for one image at its saved thresholds, most probable first."""
    from engine.evaluate.thresholds import load_thresholds
    from engine.predict.predictor import accepted_labels, multilabel_thresholds

    return accepted_labels(probs, multilabel_thresholds(load_thresholds(run), len(rm.classes)))


def cmd_attack(args: argparse.Namespace) -> int:
    from engine.explain.attacks import epsilon_sweep
    from engine.metrics.display import format_metric
    from engine.runs.folder import find_run

    run = find_run(args.run, args.runs_dir)
    eps = list(args.eps)  # validated by its flag type: finite, in [0, 1]
    progress = TqdmProgress(enabled=not args.no_progress)
    try:
        res = epsilon_sweep(
            run,
            eps,
            split=args.split,
            limit=args.limit,
            attack=args.attack,
            steps=args.steps,
            progress=progress,
            min_eps=not args.no_min_eps,
            seed=args.seed,
        )
    finally:
        progress.close()
    if args.save:  # the same file the Explain page saves and shows
        from engine.runs.sweeps import save_sweep, sweep_params

        params = sweep_params(eps, args.split, args.limit, args.attack, args.steps, not args.no_min_eps, args.seed)
        path = save_sweep(run, params, res)
        if not args.json:
            print(f"saved -> {path}")
    if args.json:
        print(json.dumps(res, indent=2, allow_nan=False))
        return 0
    counts = ", ".join(f"{n} {c}" for c, n in res["class_counts"].items())
    print(
        f"{res['attack']} on {res['n']} of {res['split_size']} {res['split']} images of {res['run']} ({counts}; "
        f"stratified by class, seed {res['seed']}); clean accuracy {format_metric('accuracy', res['clean_accuracy'])}"
    )
    cols = ("accuracy", "far", "frr", "hter") if res["task"] == "binary" else ("accuracy",)
    print("  " + "eps".ljust(8) + "".join(f"{c.upper() if c != 'accuracy' else c:>10}" for c in cols))
    for i, e in enumerate(res["eps"]):
        print(f"  {e:<8g}" + "".join(f"{format_metric(c, res[c][i]):>10}" for c in cols))
    if res["task"] == "binary" and None in (res["far"][0], res["frr"][0]):
        print("  n/a: the sample holds no image of that rate's class (FAR needs negatives, FRR positives)")
    if res.get("min_eps_median") is not None:
        print(f"median minimal epsilon (of images flipped below 0.1): {res['min_eps_median']:.4f}")
    return 0


#: engine.explain.attributions.METHODS / BASELINES, spelled out so building the parser does not import torch (tested equal)
METHOD_NAMES = (
    "saliency",
    "integrated_gradients",
    "smoothgrad",
    "gradient_shap",
    "occlusion",
    "gradcam",
    "guided_gradcam",
)
BASELINE_NAMES = ("black", "blur", "noise")


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "explain",
        parents=[RUNS_DIR],
        help="attribution map of one image, written as an overlay PNG",
        description="Explain a run's prediction on one image; writes the heatmap over the image.",
    )
    ex.add_argument("run", help="run id or run folder")
    ex.add_argument("image", help="image file")
    ex.add_argument(
        "--method",
        choices=METHOD_NAMES,
        default="integrated_gradients",
        help="attribution method (default %(default)s)",
    )
    ex.add_argument("--target", default=None, help="class name or index to explain (default: the predicted class)")
    ex.add_argument(
        "--baseline",
        choices=BASELINE_NAMES,
        default="black",
        help="the 'absent' image that integrated gradients, GradientShap and occlusion compare with (default black)",
    )
    ex.add_argument(
        "--n-steps", type=whole(1, 1024), default=32, help="Integrated Gradients steps (capped by image size)"
    )
    ex.add_argument(
        "--alpha", type=number(0, 1), default=0.5, help="opacity of the heatmap over the image, 0 to 1 (default 0.5)"
    )
    ex.add_argument(
        "--sign",
        choices=["positive", "absolute", "all"],
        default="positive",
        help="which attributions to draw: those for the class (positive), their size (absolute), or both signs (all)",
    )
    ex.add_argument("--out", type=image_out, required=True, help="output image (.png, .jpg, ...)")
    ex.set_defaults(func=cmd_explain)

    at = sub.add_parser(
        "attack",
        parents=[RUNS_DIR, JSON, NO_PROGRESS],
        help="accuracy under FGSM/PGD at several epsilons (pixel units of [0, 1])",
        description="Sweep adversarial epsilons over a run's evaluation images.",
    )
    at.add_argument("run", help="run id or run folder")
    at.add_argument(
        "--eps", type=numbers(0, 1), default="0,0.004,0.01,0.03", help="comma-separated epsilons in [0, 1] pixel units"
    )
    at.add_argument(
        "--split", default="val", choices=["val", "test"], help="split whose images are attacked (default val)"
    )
    at.add_argument(
        "--limit",
        type=whole(0),
        default=200,
        help="N images of the split, drawn stratified by class so each class keeps its share (0: all)",
    )
    at.add_argument("--seed", type=SEED, default=0, help="seed of the stratified sample (recorded in the result)")
    at.add_argument(
        "--attack", choices=["fgsm", "pgd"], default="fgsm", help="FGSM (one step) or PGD (--steps steps); default fgsm"
    )
    at.add_argument("--steps", type=whole(1, 1000), default=10, help="PGD steps")
    at.add_argument("--no-min-eps", action="store_true", help="skip the per-image minimal-epsilon search")
    at.add_argument(
        "--save", action="store_true", help="also save the sweep in RUN/robustness/ (the Explain page shows it)"
    )
    at.set_defaults(func=cmd_attack)

"""`python -m engine evaluate RUN`: every metric of a run's stored predictions, thresholds tuned on val.

The evaluation command group (registered by `engine.cli.main`): the command and its text report.
The metrics themselves are `engine.evaluate.report`'s; this module only chooses what to print.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.flags import JSON, RUNS_DIR
from engine.cli.values import SEED, whole
from engine.metrics import display

DEFAULT_RULE = "min_hter"  # engine.evaluate.report's default rule for binary runs


def format_text(res: dict, top: list[dict], suspects: list[dict]) -> str:
    """A readable report: headline metrics, binary/multi-label extras, per class, calibration, items.

    Every number is written by `engine.metrics.display`, as the Evaluate page writes it (rates as
    percentages, scores and thresholds to 4 decimals, "n/a" when missing).
    """
    lines = [
        f"task {res['task']}, {res['n']} items; thresholds tuned on {res['tuned_on'] or 'nothing (given)'}, "
        f"reported on {res['reported_on']}" + ("  [OPTIMISTIC: same split]" if res["optimistic"] else "")
    ]
    if res.get("coarse"):
        lines.append(f"fine level ({len(res['classes'])} classes, what the model was trained on):")
    ci = res.get("ci", {})
    keys = ["accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "weighted_f1", "log_loss", "roc_auc", "pr_auc"]
    keys += (
        ["threshold", "far", "frr", "hter", "eer", "eer_threshold", "min_hter", "min_hter_threshold", "f1_threshold"]
        if res["task"] == "binary"
        else []
    )
    keys += ["samples_f1", "hamming_loss", "subset_accuracy"] if res["task"] == "multilabel" else []
    binary = res["task"] == "binary"
    for k in keys:
        band = f"  (95% CI {display.interval(k, ci[k])})" if ci.get(k) else ""
        at = f"  at the threshold {display.threshold(res.get('threshold'))}" if binary and k == "accuracy" else ""
        lines.append(f"  {k:<20} {display.format_metric(k, res.get(k))}{at}{band}")
    if res["task"] == "binary":
        lines.append(f"  rule {res['rule']}, positive class '{res['positive_class']}'")
        for name in ("frr_at_far", "far_at_frr"):
            fixed = name.split("_at_")[1].upper()
            for x, v in (res.get(name) or {}).items():
                lines.append(
                    f"  {display.label(name.split('_at_')[0])} at {fixed} {display.percent(_float(x))}: "
                    f"{display.format_metric(name, v)}"
                )
    for k, v in res.get("top_k", {}).items():
        argmax = "  by argmax (highest probability), no threshold" if binary and str(k) == "1" else ""
        lines.append(f"  {f'top-{k} accuracy':<20} {display.percent(v)}{argmax}")
    lines.append(
        f"  {'per class':<20} {'precision':>9}  {'recall':>8}  {'f1':>8}  support"
        + ("  threshold" if res["task"] == "multilabel" else "")
    )
    for row in res["per_class"]:
        extra = f"  {display.threshold(row['threshold'])}" if "threshold" in row else ""
        lines.append(
            f"  {row['class'][:20]:<20} {display.percent(row['precision']):>9}  {display.percent(row['recall']):>8}"
            f"  {display.percent(row['f1']):>8}  {row['support']}{extra}"
        )
    for m in res.get("most_confused", [])[:5]:
        lines.append(f"  confused: {m['true']} -> {m['predicted']} x{m['count']}")
    cal = res["calibration"]
    lines.append(
        f"calibration: ECE {display.format_metric('ece', cal['ece'])}"
        + (
            f", temperature {display.number(cal['temperature'])} -> ECE {display.format_metric('ece', cal['ece_after'])}"
            if "temperature" in cal
            else ""
        )
    )
    if res.get("coarse"):
        lines += coarse_lines(res["coarse"])
    for t in top[:10]:
        if "missed" in t or "extra" in t:  # multi-label: which labels are wrong, not one probability
            wrong = f"missed: {display.label_probs(t.get('missed') or [])}; extra: {display.label_probs(t.get('extra') or [])}"
        else:
            wrong = f"true {t['true']} predicted {t['predicted']} ({display.percent(t['confidence'])})"
        lines.append(f"  top loss: {t['id']} {wrong}")
    for t in suspects[:10]:
        lines.append(
            f"  likely mislabelled: {t['id']} given {t['given']} suggested {t['suggested']} "
            f"(margin {display.number(t['margin'])})"
        )
    return "\n".join(lines)


def coarse_lines(res: dict) -> list[str]:
    """The coarse level of a two-level run: its headline metrics, per class and confusion matrix.

    The coarse prediction is the argmax of the summed fine probabilities (`engine.metrics.hierarchy`)."""
    members = res.get("members") or {}
    lines = [
        f"coarse level ({len(res['classes'])} classes; P(coarse) = sum of its fine classes' P, predicted by argmax):"
    ]
    lines += [f"  {c}: {', '.join(fs)}" for c, fs in members.items()]
    ci = res.get("ci", {})
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss"):
        band = f"  (95% CI {display.interval(k, ci[k])})" if ci.get(k) else ""
        lines.append(f"  {k:<20} {display.format_metric(k, res.get(k))}{band}")
    for k, v in res.get("top_k", {}).items():
        lines.append(f"  {f'top-{k} accuracy':<20} {display.percent(v)}")
    lines.append(f"  {'per class':<20} {'precision':>9}  {'recall':>8}  {'f1':>8}  support")
    for row in res["per_class"]:
        lines.append(
            f"  {row['class'][:20]:<20} {display.percent(row['precision']):>9}  {display.percent(row['recall']):>8}"
            f"  {display.percent(row['f1']):>8}  {row['support']}"
        )
    names = [c[:12] for c in res["classes"]]
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("  " + " " * 20 + " ".join(f"{n:>12}" for n in names))
    for name, row in zip(names, res["confusion_matrix"]):
        lines.append(f"  {name:<20}" + " ".join(f"{int(v):>12,}" for v in row))
    return lines


def _float(x: object) -> float | None:
    """A JSON key back to a number ("0.01" -> 0.01); None when it is not one."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluate.predictions import EvaluateError, load_predictions
    from engine.evaluate.report import evaluate_run, likely_mislabelled, top_losses
    from engine.evaluate.thresholds import save_thresholds
    from engine.runs.folder import find_run

    run = find_run(args.run, args.runs_dir)
    task = run.config().get("task")
    if args.rule is not None and task not in (None, "binary"):
        raise EvaluateError(
            f"--rule picks the threshold of a binary run; '{run.id}' is {task} "
            f"({'one F1-optimal threshold per label' if task == 'multilabel' else 'decided by argmax, no threshold'}), "
            "so leave --rule out."
        )
    res = evaluate_run(
        run,
        split=args.split,
        tune_split=args.tune_split,
        rule=args.rule or DEFAULT_RULE,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    chosen = res["threshold_config"]
    top = top_losses(
        load_predictions(run, res["reported_on"]), args.top, chosen.get("binary", chosen.get("multilabel"))
    )
    suspects = likely_mislabelled(run, args.top)
    if args.save_thresholds:
        save_thresholds(run, chosen)
    if args.json:
        print(
            json.dumps(
                {
                    **res,
                    "top_losses": top,
                    "likely_mislabelled": suspects,
                    "saved_thresholds": bool(args.save_thresholds),
                },
                indent=2,
                allow_nan=False,
            )
        )
    else:
        print(format_text(res, top, suspects))
        if args.save_thresholds:
            print(f"saved thresholds to {run.path / 'thresholds.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate",
        parents=[RUNS_DIR, JSON],
        help="metrics, tuned thresholds, calibration and top losses of a run",
        description="Evaluate a run from its stored predictions: thresholds and temperature are "
        "tuned on --tune-split and reported on --split (val, flagged optimistic, when "
        "the run has no test split).",
    )
    ev.add_argument("run", help="run id or run folder")
    ev.add_argument("--split", default="test", choices=["val", "test", "oof"], help="split to report on (default test)")
    ev.add_argument("--tune-split", default="val", choices=["val", "test", "oof"], help="split to tune thresholds on")
    ev.add_argument(
        "--rule",
        default=None,
        choices=["min_hter", "f1", "eer"],
        help=f"binary runs only: the rule that picks the threshold on --tune-split (default {DEFAULT_RULE}); "
        "multi-label runs tune one F1-optimal threshold per label, multi-class runs use argmax",
    )
    ev.add_argument("--save-thresholds", action="store_true", help="write the chosen thresholds to thresholds.json")
    ev.add_argument(
        "--bootstrap",
        type=whole(0, 100_000),
        default=1000,
        help="bootstrap resamples for confidence intervals (0: none)",
    )
    ev.add_argument("--seed", type=SEED, default=0, help="bootstrap seed")
    ev.add_argument("--top", type=whole(0, 10_000), default=24, help="how many top losses / likely mislabelled items")
    ev.set_defaults(func=cmd_evaluate)

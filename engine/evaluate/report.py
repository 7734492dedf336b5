"""The evaluation report of a finished run, from its stored predictions (never re-running the model).

Protocol (ARCHITECTURE.md): thresholds and the temperature are tuned on `val` (`engine.evaluate.thresholds`)
and applied to `test`; the result says `tuned_on` and `reported_on`, and `optimistic: true` whenever both
are the same split (for example a run without a test split). Every decision goes through
`engine.metrics.core.decide`, so the report, the page's live slider, attacks and Predict agree.
Also here: the items worth a look (top losses, likely mislabelled images, the most confused pairs).
"""

from __future__ import annotations

import numpy as np

from engine.evaluate.predictions import (
    EvaluateError,
    Predictions,
    coarse_predictions,
    load_predictions,
    splits_available,
)
from engine.evaluate.thresholds import tune_predictions
from engine.metrics.binary import binary_report
from engine.metrics.bootstrap import confusion_bootstrap, multilabel_bootstrap
from engine.metrics.calibration import apply_temperature, fit_temperature, nll, reliability
from engine.metrics.core import (
    MetricsError,
    average_precision,
    balanced_accuracy,
    confusion_matrix,
    decide,
    f1_averages,
    far_frr,
    log_loss,
    multilabel_summary,
    normalise_cm,
    ovr_auc,
    per_class,
    roc_auc,
    summarize,
    top_k_accuracy,
)
from engine.metrics.multilabel import multilabel_report
from engine.runs.folder import Run

# --- metrics -------------------------------------------------------------------------------------------


def metrics_at(
    labels: np.ndarray, probs: np.ndarray, task: str, positive: int = 1, threshold: float | np.ndarray | None = 0.5
) -> dict:
    """Quick recompute at one threshold (a slider): the training summary plus F1 averages (and FAR/FRR).

    The summary and the confusion matrix decide at the same threshold (0.5 when None), 0.0 included.
    """
    if task == "multilabel":
        rep = multilabel_report(labels, probs, np.broadcast_to(np.asarray(threshold, float), probs.shape[1:]))
        return {k: v for k, v in rep.items() if isinstance(v, float)}
    t = 0.5 if threshold is None else float(threshold)
    out = summarize(labels, probs, task, positive=positive, threshold=t)
    cm = confusion_matrix(labels, decide(probs, task, positive, t), probs.shape[1])
    out.update(f1_averages(cm), confusion_matrix=cm.tolist())
    return out


def most_confused(cm: np.ndarray, classes: list[str], n: int = 10) -> list[dict]:
    """The n largest off-diagonal cells of a confusion matrix, largest first (row-major order breaks ties):
    [{"true", "predicted", "count"}], empty cells left out."""
    off = np.asarray(cm).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    t, p = np.unravel_index(flat, off.shape)
    return [
        {"true": classes[i], "predicted": classes[j], "count": int(off[i, j])} for i, j in zip(t, p) if off[i, j] > 0
    ]


def _single_label(pred: Predictions, chosen: dict, bootstrap: int, seed: int) -> dict:
    probs, labels, c = pred.probs, pred.labels.astype(np.int64), pred.probs.shape[1]
    binary = pred.task == "binary"
    threshold = chosen.get("binary", 0.5) if binary else None
    cm = confusion_matrix(labels, decide(probs, pred.task, pred.positive, threshold), c)
    pc = per_class(cm)
    out: dict = {
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "balanced_accuracy": balanced_accuracy(cm),
        **f1_averages(cm),
        "log_loss": log_loss(labels, probs),
        "top_k": {str(k): top_k_accuracy(labels, probs, k) for k in (1, 3, 5) if k < c},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalised": normalise_cm(cm).tolist(),
        "per_class": [
            {
                "class": pred.classes[i],
                "precision": float(pc["precision"][i]),
                "recall": float(pc["recall"][i]),
                "f1": float(pc["f1"][i]),
                "support": int(pc["support"][i]),
            }
            for i in range(c)
        ],
        "most_confused": most_confused(cm, pred.classes),
        "ci": confusion_bootstrap(cm, bootstrap, seed, binary_positive=pred.positive if binary else None),
    }
    if binary:
        y_pos, score = labels == pred.positive, probs[:, pred.positive]
        far, frr = far_frr(y_pos, score, threshold)
        out.update(
            far=far,
            frr=frr,
            hter=(far + frr) / 2,
            threshold=float(threshold),
            rule=chosen.get("rule", "manual"),
            positive_class=pred.classes[pred.positive],
        )
        out["roc_auc"] = out["auc"] = roc_auc(y_pos, score)
        out["pr_auc"] = average_precision(y_pos, score)
        try:
            out.update(binary_report(y_pos, score))
        except MetricsError:  # one class only in this split: the curve figures do not exist
            out.update(
                {
                    k: None
                    for k in (
                        "eer",
                        "eer_threshold",
                        "min_hter",
                        "min_hter_threshold",
                        "best_f1",
                        "f1_threshold",
                        "frr_at_far",
                        "far_at_frr",
                    )
                }
            )
    else:
        out["roc_auc"] = ovr_auc(labels, probs, "roc")
        out["pr_auc"] = ovr_auc(labels, probs, "pr")
    return out


def _multilabel(pred: Predictions, chosen: dict, bootstrap: int, seed: int) -> dict:
    c = pred.probs.shape[1]
    t = np.asarray(chosen.get("multilabel") or [0.5] * c, np.float64)
    rep = multilabel_report(pred.labels, pred.probs, t)
    per_label = [
        {
            "class": pred.classes[i],
            "precision": float(rep["precision"][i]),
            "recall": float(rep["recall"][i]),
            "f1": float(rep["f1"][i]),
            "support": int(rep["support"][i]),
            "threshold": float(t[i]),
        }
        for i in range(c)
    ]
    support = rep["support"].astype(np.float64)
    pred_bool = decide(pred.probs, "multilabel", threshold=t)
    return {
        "accuracy": rep["subset_accuracy"],
        "subset_accuracy": rep["subset_accuracy"],
        "balanced_accuracy": multilabel_summary(pred.labels, pred.probs, t)["balanced_accuracy"],
        "micro_f1": rep["micro_f1"],
        "macro_f1": rep["macro_f1"],
        "samples_f1": rep["samples_f1"],
        "weighted_f1": float((rep["f1"] * support).sum() / support.sum()) if support.sum() else 0.0,
        "hamming_loss": rep["hamming_loss"],
        "log_loss": log_loss(pred.labels, pred.probs, multilabel=True),
        "top_k": {},
        "confusion_matrix": rep["confusion"].tolist(),
        "confusion_matrix_normalised": [normalise_cm(m).tolist() for m in rep["confusion"]],
        "per_class": per_label,
        "per_label": per_label,
        "most_confused": [],
        "thresholds": {pred.classes[i]: float(t[i]) for i in range(c)},
        "roc_auc": ovr_auc(pred.labels, pred.probs, "roc"),
        "pr_auc": ovr_auc(pred.labels, pred.probs, "pr"),
        "ci": multilabel_bootstrap(pred.labels, pred_bool, bootstrap, seed),
    }


def report_at(pred: Predictions, thresholds: dict, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of `pred` at `thresholds` (the thresholds.json format: "binary" for a binary run, one
    "multilabel" threshold per label, nothing for multi-class), with bootstrap intervals; JSON-serialisable.

    Why public: the Evaluate page shows its cards at the threshold in force (its slider, a saved or a tuned
    one), and those cards must be counted exactly as `evaluate_run` counts its report.
    """
    if pred.task == "multilabel":
        return _multilabel(pred, thresholds, bootstrap, seed)
    return _single_label(pred, thresholds, bootstrap, seed)


def evaluate_run(
    run: Run,
    split: str = "test",
    tune_split: str = "val",
    rule: str = "min_hter",
    thresholds: dict | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Every metric of `split` at thresholds tuned on `tune_split` (or the given ones); JSON-serialisable."""
    available = splits_available(run)
    if not available:
        raise EvaluateError(f"The run '{run.id}' has no predictions yet; train it to completion first.")
    if split not in available and split == "test" and tune_split in available:
        split = tune_split  # no test split: report on val, flagged optimistic below
    report = load_predictions(run, split)
    tune = load_predictions(run, tune_split) if tune_split != split else report
    if thresholds is None:
        chosen = tune_predictions(tune, rule)
    else:  # given thresholds keep their own provenance; None means "not tuned on any split"
        chosen = {"rule": "manual", "tuned_on": None, **thresholds}
        if "temperature" not in chosen:
            chosen["temperature"] = fit_temperature(tune.labels, tune.probs)
    out = report_at(report, chosen, bootstrap, seed)
    if report.hierarchy is not None:
        out["coarse"] = coarse_report(report, chosen, bootstrap, seed)
    temperature = chosen.get("temperature")
    calib = reliability(report.labels, report.probs)
    if temperature:
        after = apply_temperature(report.probs, temperature, report.task == "multilabel")
        calib.update(
            temperature=float(temperature),
            ece_after=reliability(report.labels, after)["ece"],
            nll_before=nll(report.labels, report.probs),
            nll_after=nll(report.labels, after),
        )
    out.update(
        calibration=calib,
        task=report.task,
        classes=report.classes,
        n=int(len(report.labels)),
        tuned_on=chosen.get("tuned_on"),
        reported_on=split,
        optimistic=chosen.get("tuned_on") == split,
        threshold_config=chosen,
    )
    return out


def coarse_report(fine: Predictions, chosen: dict, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of the coarse level (probabilities summed over fine members, decided by their argmax),
    counted by the same multi-class report as the fine level, with its own calibration (the fine level's
    temperature is fitted on fine logits, so none is applied here) and the fine -> coarse mapping."""
    coarse = coarse_predictions(fine)
    out = report_at(coarse, {}, bootstrap, seed)
    out.update(
        calibration=reliability(coarse.labels, coarse.probs),
        task=coarse.task,
        classes=coarse.classes,
        n=int(len(coarse.labels)),
        tuned_on=chosen.get("tuned_on"),
        reported_on=fine.split,
        optimistic=chosen.get("tuned_on") == fine.split,
        level="coarse",
        members=fine.hierarchy.members() if fine.hierarchy is not None else {},
    )
    return out


# --- inspecting items ----------------------------------------------------------------------------------


def decisions(pred: Predictions, threshold=None) -> tuple[np.ndarray, np.ndarray]:
    """Each item's decision by `decide` at `threshold` (binary: one threshold, 0.5 when None, never argmax;
    multi-label: one per label) and whether it is wrong (multi-label: any label wrong): what top losses and the
    Dataset page's embedding map ("prediction error") both call wrong."""
    p = pred.probs
    if pred.task == "multilabel":
        decided = decide(p, "multilabel", threshold=threshold)
        return decided, (decided != pred.labels.astype(bool)).any(axis=1)
    binary_t = 0.5 if threshold is None else threshold  # binary items are decided at t, never by argmax
    decided = decide(p, pred.task, pred.positive, binary_t if pred.task == "binary" else None)
    return decided, decided != pred.labels.astype(np.int64)


def top_losses(pred: Predictions, n: int = 24, threshold=None) -> list[dict]:
    """The n wrongly decided items with the highest loss (the most confidently wrong first): id, true, predicted,
    confidence, loss. A correct decision is never listed, however high its loss ("most confidently wrong").

    Decisions follow `decide` at `threshold` (binary: one threshold, 0.5 when None; multi-label: one per label).
    Multi-label items also carry `missed` (true labels not decided) and `extra` (decided labels not true), each
    as [{"label", "prob"}]: what a single "p%" cannot say; their `confidence` is that of the most confident
    wrong label decision (p for an extra label, 1 - p for a missed one)."""
    p, eps = pred.probs, 1e-12
    decided, wrong = decisions(pred, threshold)
    if pred.task == "multilabel":
        y = pred.labels.astype(bool)
        q = np.clip(p, eps, 1 - eps)
        loss = -np.where(y, np.log(q), np.log1p(-q)).sum(axis=1)
    else:
        y = pred.labels.astype(np.int64)
        loss = -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))
    candidates = np.flatnonzero(wrong)
    order = candidates[np.argsort(-loss[candidates], kind="stable")][:n]
    out = []
    for i in order:
        item = {"id": str(pred.ids[i]), "index": int(pred.indices[i])}
        if pred.task == "multilabel":
            missed = np.flatnonzero(y[i] & ~decided[i])
            extra = np.flatnonzero(~y[i] & decided[i])
            item.update(
                true=[pred.classes[j] for j in np.flatnonzero(y[i])],
                predicted=[pred.classes[j] for j in np.flatnonzero(decided[i])],
                missed=[{"label": pred.classes[j], "prob": float(p[i, j])} for j in missed],
                extra=[{"label": pred.classes[j], "prob": float(p[i, j])} for j in extra],
                confidence=float(max([1 - p[i, j] for j in missed] + [p[i, j] for j in extra])),
            )
        else:
            item.update(true=pred.classes[y[i]], predicted=pred.classes[decided[i]], confidence=float(p[i, decided[i]]))
        item["loss"] = float(loss[i])
        out.append(item)
    return out


def label_issues(labels: np.ndarray, probs: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cleanlab's confident learning (`cleanlab.filter.find_label_issues`) on out-of-sample probabilities: the
    indices of the items whose given label is likely wrong, most likely first (ranked by normalised margin,
    cleanlab's default), and each class's threshold (its mean self-confidence, cleanlab's t_j). `labels` are (N,)
    class ids or (N, C) multi-hot (cleanlab's multi-label mode). Why cleanlab: its pruning by estimated noise
    rates is the published method, tested far beyond a hand-written copy. Fewer than 2 items: nothing."""
    from cleanlab.filter import find_label_issues

    probs = np.asarray(probs, np.float64)
    c = probs.shape[1] if probs.ndim == 2 else 0
    if len(probs) < 2 or c < 2:
        return np.zeros(0, np.int64), np.ones(max(c, 0))
    if labels.ndim == 2:
        given = [np.flatnonzero(row).tolist() for row in labels]
        on = labels.astype(bool)
        counts = on.sum(axis=0)
        thresholds = np.divide((probs * on).sum(axis=0), counts, out=np.ones(c), where=counts > 0)
        idx = find_label_issues(given, probs, multi_label=True, return_indices_ranked_by="self_confidence", n_jobs=1)
    else:
        y = labels.astype(np.int64)
        counts = np.bincount(y, minlength=c)
        self_conf = probs[np.arange(len(y)), y]
        thresholds = np.divide(np.bincount(y, self_conf, minlength=c), counts, out=np.ones(c), where=counts > 0)
        if (counts == 0).any():  # cleanlab needs every class present once; the missing ones get a tiny share
            probs = np.where(counts > 0, probs, 0.0)
            probs = probs / probs.sum(axis=1, keepdims=True).clip(1e-12)
        idx = find_label_issues(y, probs, return_indices_ranked_by="normalized_margin", n_jobs=1)
    idx = np.asarray(idx, np.int64)
    return (idx if n is None else idx[:n]), thresholds


def likely_mislabelled(run: Run, n: int = 24) -> list[dict]:
    """The out-of-fold items (k-fold runs) cleanlab finds likely mislabelled (`label_issues`), most likely first:
    given and suggested label, their probabilities, the given class's threshold and the margin (best other
    class's probability minus the given one's). Multi-label: given = the label set, suggested = the labels at
    p >= 0.5, margin = the largest |p - given| over labels. Empty when the run has no oof.npz."""
    if "oof" not in splits_available(run):
        return []
    pred = load_predictions(run, "oof")
    p = pred.probs
    idx, thresholds = label_issues(pred.labels, p, n)
    out = []
    if pred.task == "multilabel":
        y = pred.labels.astype(bool)
        for i in idx:
            wrong = np.abs(p[i] - y[i])
            given = [pred.classes[j] for j in np.flatnonzero(y[i])]
            suggested = [pred.classes[j] for j in np.flatnonzero(p[i] >= 0.5)]
            out.append(
                {
                    "id": str(pred.ids[i]),
                    "index": int(pred.indices[i]),
                    "given": ", ".join(given) or "(none)",
                    "suggested": ", ".join(suggested) or "(none)",
                    "given_prob": float(p[i][y[i]].min()) if y[i].any() else float("nan"),
                    "suggested_prob": float(wrong.max()),
                    "class_threshold": float(thresholds[y[i]].min()) if y[i].any() else float("nan"),
                    "margin": float(wrong.max()),
                }
            )
        return out
    y = pred.labels.astype(np.int64)
    for i in idx:
        other = p[i].copy()
        other[y[i]] = -np.inf
        s = int(other.argmax())
        out.append(
            {
                "id": str(pred.ids[i]),
                "index": int(pred.indices[i]),
                "given": pred.classes[y[i]],
                "suggested": pred.classes[s],
                "given_prob": float(p[i, y[i]]),
                "suggested_prob": float(p[i, s]),
                "class_threshold": float(thresholds[y[i]]),
                "margin": float(p[i, s] - p[i, y[i]]),
            }
        )
    return out

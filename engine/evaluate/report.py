"""Evaluate a finished run from its stored predictions (never re-running the model).

Protocol (DESIGN.md): thresholds and the temperature are tuned on `val` and applied to `test`; the
result says `tuned_on` and `reported_on`, and `optimistic: true` whenever both are the same split
(for example a run without a test split). Chosen thresholds go to the run's `thresholds.json` so
Predict and export use the same decision rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import metrics as M
from engine.errors import LoupeError
from engine.runs.folder import Run, atomic_write_json, read_json

SPLITS = ("val", "test", "oof")
RULES = ("min_hter", "f1", "eer")


class EvaluateError(LoupeError):
    """A run that cannot be evaluated as asked (missing predictions, unknown split or rule)."""


@dataclass
class Predictions:
    """One split's stored predictions plus what is needed to read them."""

    ids: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    task: str
    positive: int
    split: str = ""


def _task_and_positive(run: Run, labels: np.ndarray, n_classes: int) -> tuple[str, int]:
    header = run.config()
    task = header.get("task") or header.get("config", {}).get("task")
    if task not in ("binary", "multiclass", "multilabel"):
        task = "multilabel" if labels.ndim == 2 else ("binary" if n_classes == 2 else "multiclass")
    positive = int(header.get("config", {}).get("positive_class", 1)) if task == "binary" else 0
    return task, positive


def load_predictions(run: Run, split: str) -> Predictions:
    """predictions/<split>.npz as a `Predictions`; a clear error when the file is missing."""
    if split not in SPLITS:
        raise EvaluateError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    path = run.predictions / f"{split}.npz"
    if not path.exists():
        raise EvaluateError(f"The run '{run.id}' has no {split} predictions ({path} is missing); train it to completion first.")
    with np.load(path, allow_pickle=False) as z:
        probs = np.asarray(z["probs"], np.float64)
        labels = np.asarray(z["labels"])
        ids = z["ids"].astype(str) if "ids" in z else np.arange(len(labels)).astype(str)
        indices = z["indices"] if "indices" in z else np.arange(len(labels))
    classes = run.classes() or [str(i) for i in range(probs.shape[1])]
    task, positive = _task_and_positive(run, labels, probs.shape[1])
    return Predictions(ids, indices, labels, probs, list(classes), task, positive, split)


def splits_available(run: Run) -> list[str]:
    return [s for s in SPLITS if (run.predictions / f"{s}.npz").exists()]


# --- thresholds ------------------------------------------------------------------------------------


def _tune(pred: Predictions, rule: str) -> dict:
    if pred.task == "binary":
        if rule not in RULES:
            raise EvaluateError(f"Unknown threshold rule '{rule}'; use one of {', '.join(RULES)}.")
        t = M.choose_threshold(pred.labels == pred.positive, pred.probs[:, pred.positive], rule)
        out = {"binary": t, "positive_class": pred.positive, "rule": rule, "tuned_on": pred.split}
    elif pred.task == "multilabel":
        out = {"multilabel": M.f1_thresholds(pred.probs, pred.labels).tolist(), "rule": "f1", "tuned_on": pred.split}
    else:
        out = {"tuned_on": pred.split}
    out["temperature"] = M.fit_temperature(pred.probs, pred.labels)
    return out


def tune_thresholds(run: Run, rule: str = "min_hter", split: str = "val") -> dict:
    """The thresholds (and temperature) a rule picks on `split`, in the thresholds.json format."""
    return _tune(load_predictions(run, split), rule)


def save_thresholds(run: Run, thresholds: dict) -> None:
    atomic_write_json(run.path / "thresholds.json", thresholds)


def load_thresholds(run: Run) -> dict:
    """thresholds.json, else summary.json's "thresholds" (training's defaults), else {}."""
    saved = read_json(run.path / "thresholds.json")
    if isinstance(saved, dict):
        return saved
    return dict((run.summary() or {}).get("thresholds") or {})


def fit_temperature(probs_val: np.ndarray, labels_val: np.ndarray) -> float:
    return M.fit_temperature(probs_val, labels_val)


# --- metrics -------------------------------------------------------------------------------------------


def binary_curves(probs_pos: np.ndarray, labels_pos: np.ndarray) -> dict[str, np.ndarray]:
    """Chart arrays over every distinct score (ascending thresholds): FAR/FRR/HTER, ROC, PR and DET."""
    return M.curves(labels_pos, probs_pos)


def _decide(probs: np.ndarray, task: str, positive: int, threshold) -> np.ndarray:
    if task == "binary":
        return np.where(probs[:, positive] >= float(threshold), positive, 1 - positive)
    if task == "multilabel":
        return probs >= np.asarray(threshold if threshold is not None else 0.5)
    return probs.argmax(axis=1)


def metrics_at(probs: np.ndarray, labels: np.ndarray, task: str, positive: int = 1, threshold=0.5) -> dict:
    """Quick recompute at one threshold (a slider): the training summary plus F1 averages (and FAR/FRR)."""
    if task == "multilabel":
        rep = M.multilabel_report(probs, labels, np.broadcast_to(np.asarray(threshold, float), probs.shape[1:]))
        return {k: v for k, v in rep.items() if isinstance(v, float)}
    out = M.summarize(probs, labels, task, positive=positive, threshold=float(threshold or 0.5))
    cm = M.confusion_matrix(labels, _decide(probs, task, positive, threshold), probs.shape[1])
    out.update(M.f1_averages(cm), confusion_matrix=cm.tolist())
    return out


def _most_confused(cm: np.ndarray, classes: list[str], n: int = 10) -> list[dict]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    t, p = np.unravel_index(flat, cm.shape)
    return [{"true": classes[i], "predicted": classes[j], "count": int(off[i, j])} for i, j in zip(t, p) if off[i, j] > 0]


def _single_label(pred: Predictions, chosen: dict, bootstrap: int, seed: int) -> dict:
    probs, labels, c = pred.probs, pred.labels.astype(np.int64), pred.probs.shape[1]
    binary = pred.task == "binary"
    threshold = chosen.get("binary", 0.5) if binary else None
    cm = M.confusion_matrix(labels, _decide(probs, pred.task, pred.positive, threshold), c)
    pc = M.per_class(cm)
    out: dict = {
        "accuracy": float(np.trace(cm) / max(1, cm.sum())), "balanced_accuracy": M.balanced_accuracy(cm),
        **M.f1_averages(cm), "log_loss": M.log_loss(probs, labels),
        "top_k": {str(k): M.top_k_accuracy(probs, labels, k) for k in (1, 3, 5) if k < c},
        "confusion_matrix": cm.tolist(), "confusion_matrix_normalised": M.normalise_cm(cm).tolist(),
        "per_class": [{"class": pred.classes[i], "precision": float(pc["precision"][i]), "recall": float(pc["recall"][i]),
                       "f1": float(pc["f1"][i]), "support": int(pc["support"][i])} for i in range(c)],
        "most_confused": _most_confused(cm, pred.classes),
        "ci": M.confusion_bootstrap(cm, bootstrap, seed, binary_positive=pred.positive if binary else None),
    }
    if binary:
        y_pos, score = labels == pred.positive, probs[:, pred.positive]
        far, frr = M.far_frr(y_pos, score, threshold)
        out.update(far=far, frr=frr, hter=(far + frr) / 2, threshold=float(threshold),
                   rule=chosen.get("rule", "manual"), positive_class=pred.classes[pred.positive])
        out["roc_auc"] = out["auc"] = M.roc_auc(y_pos, score)
        out["pr_auc"] = M.average_precision(y_pos, score)
        try:
            out.update(M.binary_report(y_pos, score))
        except M.MetricsError:  # one class only in this split: the curve figures do not exist
            out.update({k: None for k in ("eer", "eer_threshold", "min_hter", "min_hter_threshold", "best_f1",
                                          "f1_threshold", "frr_at_far", "far_at_frr")})
    else:
        out["roc_auc"] = M.ovr_auc(probs, labels, "roc")
        out["pr_auc"] = M.ovr_auc(probs, labels, "pr")
    return out


def _multilabel(pred: Predictions, chosen: dict, bootstrap: int, seed: int) -> dict:
    c = pred.probs.shape[1]
    t = np.asarray(chosen.get("multilabel") or [0.5] * c, np.float64)
    rep = M.multilabel_report(pred.probs, pred.labels, t)
    per_label = [{"class": pred.classes[i], "precision": float(rep["precision"][i]), "recall": float(rep["recall"][i]),
                  "f1": float(rep["f1"][i]), "support": int(rep["support"][i]), "threshold": float(t[i])} for i in range(c)]
    support = rep["support"].astype(np.float64)
    pred_bool = pred.probs >= t[None, :]
    return {
        "accuracy": rep["subset_accuracy"], "subset_accuracy": rep["subset_accuracy"],
        "balanced_accuracy": M.multilabel_summary(pred.probs, pred.labels, t)["balanced_accuracy"],
        "micro_f1": rep["micro_f1"], "macro_f1": rep["macro_f1"], "samples_f1": rep["samples_f1"],
        "weighted_f1": float((rep["f1"] * support).sum() / support.sum()) if support.sum() else 0.0,
        "hamming_loss": rep["hamming_loss"], "log_loss": M.log_loss(pred.probs, pred.labels, multilabel=True),
        "top_k": {}, "confusion_matrix": rep["confusion"].tolist(),
        "confusion_matrix_normalised": [M.normalise_cm(m).tolist() for m in rep["confusion"]],
        "per_class": per_label, "per_label": per_label, "most_confused": [],
        "thresholds": {pred.classes[i]: float(t[i]) for i in range(c)},
        "roc_auc": M.ovr_auc(pred.probs, pred.labels, "roc"), "pr_auc": M.ovr_auc(pred.probs, pred.labels, "pr"),
        "ci": M.multilabel_bootstrap(pred_bool, pred.labels, bootstrap, seed),
    }


def evaluate_run(run: Run, split: str = "test", tune_split: str = "val", rule: str = "min_hter",
                 thresholds: dict | None = None, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of `split` at thresholds tuned on `tune_split` (or the given ones); JSON-serialisable."""
    available = splits_available(run)
    if not available:
        raise EvaluateError(f"The run '{run.id}' has no predictions yet; train it to completion first.")
    if split not in available and split == "test" and tune_split in available:
        split = tune_split  # no test split: report on val, flagged optimistic below
    report = load_predictions(run, split)
    tune = load_predictions(run, tune_split) if tune_split != split else report
    if thresholds is None:
        chosen = _tune(tune, rule)
    else:  # given thresholds keep their own provenance; None means "not tuned on any split"
        chosen = {"rule": "manual", "tuned_on": None, **thresholds}
        if "temperature" not in chosen:
            chosen["temperature"] = M.fit_temperature(tune.probs, tune.labels)
    if report.task == "multilabel":
        out = _multilabel(report, chosen, bootstrap, seed)
    else:
        out = _single_label(report, chosen, bootstrap, seed)
    temperature = chosen.get("temperature")
    calib = M.reliability(report.probs, report.labels)
    if temperature:
        after = M.apply_temperature(report.probs, temperature, report.task == "multilabel")
        calib.update(temperature=float(temperature), ece_after=M.reliability(after, report.labels)["ece"],
                     nll_before=M.nll(report.probs, report.labels), nll_after=M.nll(after, report.labels))
    out.update(calibration=calib, task=report.task, classes=report.classes, n=int(len(report.labels)),
               tuned_on=chosen.get("tuned_on"), reported_on=split, optimistic=chosen.get("tuned_on") == split,
               threshold_config=chosen)
    return out


# --- inspecting items ----------------------------------------------------------------------------------


def top_losses(pred: Predictions, n: int = 24, threshold=None) -> list[dict]:
    """The n items with the highest loss (most confidently wrong first): id, true, predicted, confidence, loss."""
    p, eps = pred.probs, 1e-12
    if pred.task == "multilabel":
        y = pred.labels.astype(bool)
        q = np.clip(p, eps, 1 - eps)
        loss = -np.where(y, np.log(q), np.log1p(-q)).sum(axis=1)
        decided = _decide(p, "multilabel", 0, threshold)
    else:
        y = pred.labels.astype(np.int64)
        loss = -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))
        decided = _decide(p, pred.task, pred.positive, 0.5 if threshold is None else threshold) if pred.task == "binary" \
            else p.argmax(axis=1)
    order = np.argsort(-loss, kind="stable")[:n]
    out = []
    for i in order:
        if pred.task == "multilabel":
            true = [pred.classes[j] for j in np.flatnonzero(y[i])]
            predicted = [pred.classes[j] for j in np.flatnonzero(decided[i])]
            confidence = float(np.abs(p[i] - 0.5).mean() * 2)
        else:
            true, predicted, confidence = pred.classes[y[i]], pred.classes[decided[i]], float(p[i, decided[i]])
        out.append({"id": str(pred.ids[i]), "index": int(pred.indices[i]), "true": true, "predicted": predicted,
                    "confidence": confidence, "loss": float(loss[i])})
    return out


def likely_mislabelled(run: Run, n: int = 24) -> list[dict]:
    """Confident learning on out-of-fold probabilities (k-fold runs): an item is suspect when its given
    label's probability is below that class's mean self-confidence; ranked by margin = best other class's
    probability minus the given label's. Empty when the run has no oof.npz (or is multi-label)."""
    if "oof" not in splits_available(run):
        return []
    pred = load_predictions(run, "oof")
    if pred.task == "multilabel":
        return []
    p, y = pred.probs, pred.labels.astype(np.int64)
    c = p.shape[1]
    rows = np.arange(len(y))
    self_conf = p[rows, y]
    counts = np.bincount(y, minlength=c)
    per_class_t = np.divide(np.bincount(y, self_conf, minlength=c), counts, out=np.ones(c), where=counts > 0)
    other = p.copy()
    other[rows, y] = -np.inf
    suggested = other.argmax(axis=1)
    margin = other[rows, suggested] - self_conf
    suspect = np.flatnonzero(self_conf < per_class_t[y])
    suspect = suspect[np.argsort(-margin[suspect], kind="stable")][:n]
    return [{"id": str(pred.ids[i]), "index": int(pred.indices[i]), "given": pred.classes[y[i]],
             "suggested": pred.classes[suggested[i]], "given_prob": float(self_conf[i]),
             "suggested_prob": float(p[i, suggested[i]]), "class_threshold": float(per_class_t[y[i]]),
             "margin": float(margin[i])} for i in suspect]

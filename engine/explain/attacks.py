"""L-inf adversarial attacks (FGSM, PGD) and robustness sweeps over a run's evaluation images.

Epsilon is in pixel units of [0, 1] images, because normalisation lives inside the model (ARCHITECTURE.md):
eps = 8/255 means "each pixel moves by at most 8 grey levels", whatever the model's mean/std.
Attacks run on the shared cached model under its lock and never need parameter gradients. Images come
in through `engine.data.pixels.to_tensor` and decisions through `engine.metrics.core.decide` (at the
run's saved threshold), so "flipped" means what Evaluate and Predict would call a different decision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.pixels import to_tensor
from engine.errors import LoupeError
from engine.evaluate.predictions import load_predictions
from engine.evaluate.report import metrics_at
from engine.evaluate.thresholds import load_thresholds
from engine.metrics.core import decide
from engine.predict.run_model import RunModel, load_run_model, predict_tensor
from engine.runs.folder import Run

ATTACKS = ("fgsm", "pgd")


class AttackError(LoupeError):
    """An attack or sweep that cannot run as asked."""


def _eps(eps, x: torch.Tensor) -> torch.Tensor:
    """A float or one epsilon per image, shaped to broadcast over (N, C, H, W)."""
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    return e.view(-1, 1, 1, 1) if e.dim() else e


def _loss_grad(rm: RunModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed loss w.r.t. the input (per-image losses are independent, so summing is exact)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = rm.model(x)
        if rm.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum")
        else:
            loss = F.cross_entropy(logits, y.long(), reduction="sum")
        return torch.autograd.grad(loss, x)[0]


def _prep(rm: RunModel, x: torch.Tensor, y, targeted: bool, target) -> tuple[torch.Tensor, torch.Tensor, float]:
    x = x.detach().to(rm.device).float()
    if targeted:
        if target is None:
            raise AttackError("A targeted attack needs a target class.")
        y = (
            torch.as_tensor(target, device=x.device).expand(len(x))
            if np.ndim(target) == 0
            else torch.as_tensor(target, device=x.device)
        )
    else:
        y = torch.as_tensor(y, device=x.device)
    return x, y, -1.0 if targeted else 1.0  # targeted: descend the loss towards the target


def fgsm(rm: RunModel, x: torch.Tensor, y, eps, targeted: bool = False, target=None) -> torch.Tensor:
    """One signed-gradient step of size eps (float or one per image); result clipped to [0, 1]."""
    x, y, sign = _prep(rm, x, y, targeted, target)
    with rm.lock:
        g = _loss_grad(rm, x, y)
    return (x + sign * _eps(eps, x) * g.sign()).clamp(0, 1).detach()


def pgd(
    rm: RunModel,
    x: torch.Tensor,
    y,
    eps,
    steps: int = 10,
    step_size=None,
    random_start: bool = True,
    targeted: bool = False,
    target=None,
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient descent in the L-inf ball of radius eps around x, inside [0, 1]."""
    x, y, sign = _prep(rm, x, y, targeted, target)
    e = _eps(eps, x)
    alpha = _eps(step_size, x) if step_size is not None else 2.5 * e / max(1, steps)
    adv = x.clone()
    if random_start:
        g = torch.Generator().manual_seed(seed)
        adv = (adv + (torch.rand(x.shape, generator=g).to(x) * 2 - 1) * e).clamp(0, 1)
    with rm.lock:
        for _ in range(steps):
            grad = _loss_grad(rm, adv, y)
            adv = adv + sign * alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - e), x + e).clamp(0, 1).detach()
    return adv


def run_attack(rm: RunModel, x: torch.Tensor, y, eps, method: str = "fgsm", steps: int = 10, **kw) -> torch.Tensor:
    if method == "fgsm":
        return fgsm(rm, x, y, eps, **kw)
    if method == "pgd":
        return pgd(rm, x, y, eps, steps=steps, **kw)
    raise AttackError(f"Unknown attack '{method}'; choose one of {', '.join(ATTACKS)}.")


def perturbation_image(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[np.ndarray, float]:
    """The perturbation of the first image, amplified to fill [0, 255] around mid-grey, and the scale used."""
    d = (x_adv[:1] - x[:1]).detach().float()[0].permute(1, 2, 0).cpu().numpy()
    m = float(np.abs(d).max())
    scale = 0.5 / m if m > 0 else 1.0
    img = ((d * scale + 0.5) * 255).round().clip(0, 255).astype(np.uint8)
    return (np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img), scale


def _flipped(rm: RunModel, x: torch.Tensor, y: torch.Tensor, threshold: float | None) -> np.ndarray:
    """Which images the model now decides wrongly (binary at `threshold` when given, else argmax)."""
    probs = predict_tensor(rm, x)
    return decide(probs, rm.task, rm.positive, threshold) != y.cpu().numpy()


def minimal_epsilon(
    rm: RunModel,
    x: torch.Tensor,
    y,
    attack: str = "fgsm",
    hi: float = 0.1,
    iters: int = 8,
    threshold: float | None = None,
    steps: int = 10,
) -> np.ndarray:
    """Per image, the smallest eps (to hi / 2**iters) that flips the decision; 0 if already wrong, inf if
    even `hi` does not flip it. Bisection assumes a larger eps flips at least as often (true for PGD in
    practice; FGSM is not strictly monotone, so this is the bisection's answer, an upper-bound estimate)."""
    if rm.multilabel:
        raise AttackError("Minimal epsilon is defined for single-label tasks only.")
    y = torch.as_tensor(y, device=x.device)
    kw = {"steps": steps} if attack == "pgd" else {}
    wrong = _flipped(rm, x, y, threshold)
    lo, up = torch.zeros(len(x)), torch.full((len(x),), float(hi))
    ok = _flipped(rm, run_attack(rm, x, y, up, attack, **kw), y, threshold)
    for _ in range(iters):
        mid = (lo + up) / 2
        flip = _flipped(rm, run_attack(rm, x, y, mid, attack, **kw), y, threshold)
        up = torch.where(torch.from_numpy(flip), mid, up)
        lo = torch.where(torch.from_numpy(flip), lo, mid)
    out = up.numpy().astype(np.float64)
    out[~ok] = np.inf
    out[wrong] = 0.0
    return out


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of `n` items drawn without replacement, each class in proportion to its share.

    Why not the first `n`: splits are stored in dataset order, and class-folder datasets are ordered by
    class, so the first 200 validation images of a binary dataset are often all negatives (FRR 0%, HTER
    = FAR / 2). Quotas are proportional with the largest remainders rounded up, and every class present
    gets at least one item when `n` allows, so a rare class is never dropped. Seeded: the same seed
    gives the same sample. `n <= 0` or `n >= len(labels)` takes every item.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n <= 0 or n >= total:
        return np.arange(total)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / total)
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)
    while take.sum() > n:  # the floor of one per class overshot: trim the classes most above their quota
        over = np.where(take > 1, take - quota, -np.inf)
        take[int(np.argmax(over))] -= 1
    while take.sum() < n:  # hand out what rounding down left, largest remainder first
        rest = np.where(take < counts, quota - take, -np.inf)
        take[int(np.argmax(rest))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), int(k), replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _load_split(run: Run, split: str, limit: int, seed: int = 0) -> tuple:
    """A stratified sample of `limit` images of the split (`stratified_sample`), as stored in its
    predictions, decoded as training saw them: (predictions, positions, x, labels, stored probs)."""
    from engine.data.dataset import open_dataset

    pred = load_predictions(run, split)
    header, cfg = run.config(), run.config().get("config", {})
    task = cfg.get("task", "auto")
    ds = open_dataset(
        cfg["dataset"],
        image_size=header.get("image_size") or None,
        task=None if task == "auto" else task,
        seed=cfg.get("seed", 0),
        val_fraction=cfg.get("val_fraction", 0.15),
        test_fraction=cfg.get("test_fraction", 0.15),
    )
    labels = np.asarray(pred.labels)
    pos = stratified_sample(labels, int(limit or 0), seed)  # single-label: sweeps refuse multi-label runs
    x = to_tensor(ds.images[np.asarray(pred.indices)[pos]])
    return pred, pos, x, labels[pos], np.asarray(pred.probs)[pos]


def _binary_rates(m: dict, labels: np.ndarray, positive: int) -> dict:
    """FAR, FRR and HTER of one row, None where a rate's class is absent from the sample (FAR needs
    negatives, FRR positives): a rate over no items is unknown, not 0%."""
    has_pos, has_neg = bool((labels == positive).any()), bool((labels != positive).any())
    far = float(m["far"]) if has_neg and "far" in m else None
    frr = float(m["frr"]) if has_pos and "frr" in m else None
    return {"far": far, "frr": frr, "hter": (far + frr) / 2 if far is not None and frr is not None else None}


def epsilon_sweep(
    run: Run,
    eps: list[float],
    split: str = "val",
    limit: int = 200,
    attack: str = "fgsm",
    steps: int = 10,
    progress: Callable | None = None,
    batch_size: int = 64,
    min_eps: bool = True,
    min_eps_hi: float = 0.1,
    seed: int = 0,
) -> dict:
    """Accuracy (and FAR/FRR/HTER for binary, at the saved threshold) under attack at each eps, on a
    stratified sample of `limit` images of the split (seeded; the seed, the sample's dataset indices and
    its class counts are in the result). A rate whose class is not in the sample is None."""
    if attack not in ATTACKS:
        raise AttackError(f"Unknown attack '{attack}'; choose one of {', '.join(ATTACKS)}.")
    rm = load_run_model(run)
    if rm.multilabel:
        raise AttackError("Epsilon sweeps support binary and multiclass runs; this run is multi-label.")
    pred, pos, x, labels, stored = _load_split(run, split, limit, seed)
    thr = load_thresholds(run).get("binary", 0.5) if rm.task == "binary" else 0.5
    y = torch.from_numpy(np.asarray(labels, np.int64))
    eps = sorted(float(e) for e in eps)
    total = len(eps) * len(x)
    rows, done = [], 0
    for e in eps:
        probs = []
        for s in range(0, len(x), batch_size):
            xb, yb = x[s : s + batch_size], y[s : s + batch_size]
            xa = xb if e == 0 else run_attack(rm, xb, yb, e, attack, steps=steps)
            probs.append(predict_tensor(rm, xa))
            done += len(xb)
            if progress:
                progress(done, total, f"{attack} eps={e:g}")
        p = np.concatenate(probs)
        m = metrics_at(labels, p, rm.task, positive=rm.positive, threshold=thr)
        dec = decide(p, rm.task, rm.positive, thr if rm.task == "binary" else None)
        per_class = {c: float((dec[labels == i] == i).mean()) for i, c in enumerate(rm.classes) if (labels == i).any()}
        row = {"eps": e, "accuracy": float(m["accuracy"]), "per_class": per_class}
        if rm.task == "binary":
            row.update(_binary_rates(m, labels, rm.positive))
        rows.append(row)
    clean = metrics_at(labels, stored, rm.task, positive=rm.positive, threshold=thr)
    out = {
        "run": run.id,
        "split": split,
        "n": int(len(x)),
        "attack": attack,
        "steps": steps if attack == "pgd" else 1,
        "task": rm.task,
        "threshold": thr if rm.task == "binary" else None,
        "eps": eps,
        "accuracy": [r["accuracy"] for r in rows],
        "per_class": [r["per_class"] for r in rows],
        "clean_accuracy": float(clean["accuracy"]),
        "sample": "stratified",
        "seed": int(seed),
        "split_size": int(len(pred.labels)),
        "indices": [int(i) for i in np.asarray(pred.indices)[pos]],
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(rm.classes)},
    }
    if rm.task == "binary":
        for k in ("far", "frr", "hter"):
            out[k] = [r.get(k) for r in rows]
    if min_eps:
        me = np.concatenate(
            [
                minimal_epsilon(
                    rm,
                    x[s : s + batch_size],
                    y[s : s + batch_size],
                    attack,
                    hi=min_eps_hi,
                    threshold=thr if rm.task == "binary" else None,
                    steps=steps,
                )
                for s in range(0, len(x), batch_size)
            ]
        )
        out["min_eps"] = [None if not np.isfinite(v) else float(v) for v in me]  # None: not flipped at min_eps_hi
        finite = me[np.isfinite(me) & (me > 0)]
        out["min_eps_median"] = float(np.median(finite)) if len(finite) else None
    return out

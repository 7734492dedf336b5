"""Stratified train/val/test splits and k-fold indices, deterministic given a seed."""

from __future__ import annotations

import numpy as np

from engine.data.source import SPLIT_NAMES, TEST, TRAIN, UNASSIGNED, VAL


def strata(labels: np.ndarray, min_size: int = 3) -> np.ndarray:
    """One stratum id per item: the class, or for multi-label the label set.

    Label sets rarer than `min_size` share one 'rare' stratum, since a stratum of one item cannot
    be spread over splits anyway.
    """
    if labels.ndim == 1:
        return labels.astype(np.int64)
    _, inverse, counts = np.unique(labels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    rare = counts[inverse] < min_size
    inverse = inverse.copy()
    inverse[rare] = -1
    return inverse


def carve(
    groups: np.ndarray, items: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split `items` into len(fractions)+1 parts, each stratum in the same proportions.

    Rounding is done per stratum, but any stratum with at least len(fractions)+1 items gets at least
    one item in every part, so small classes are never missing from val or test.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for g in np.unique(groups[items]):
        members = items[groups[items] == g]
        members = members[rng.permutation(len(members))]
        n = len(members)
        counts = [int(round(n * f)) for f in fractions]
        if n > len(fractions):
            counts = [max(1, c) for c in counts]
        start = 0
        for k, c in enumerate(counts):
            c = min(c, n - start)
            parts[k + 1].append(members[start : start + c])
            start += c
        parts[0].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def make_splits(
    labels: np.ndarray,
    ok: np.ndarray,
    split_of: np.ndarray | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Index arrays per split over usable (`ok`) items, plus notes on what was decided.

    Given splits are kept. Without a val split, val is carved from train (stratified); a dataset that
    comes without a test split keeps none (results on val are then optimistic, and the UI says so).
    """
    rng = np.random.default_rng(seed)
    groups = strata(labels)
    usable = np.flatnonzero(ok)
    notes: list[str] = []
    if split_of is None:
        train, val, test = carve(groups, usable, (val_fraction, test_fraction), rng)
        notes.append(
            f"No split given: made a stratified {1 - val_fraction - test_fraction:.0%}/{val_fraction:.0%}/"
            f"{test_fraction:.0%} train/val/test split with seed {seed}."
        )
        return {"train": train, "val": val, "test": test}, notes
    codes = split_of[usable]
    train = usable[(codes == TRAIN) | (codes == UNASSIGNED)]
    val, test = usable[codes == VAL], usable[codes == TEST]
    if len(val) == 0:
        train, val = carve(groups, train, (val_fraction,), rng)
        notes.append(f"No val split given: carved {val_fraction:.0%} of train, stratified, seed {seed}.")
    if len(test) == 0:
        notes.append("No test split given: thresholds tuned and reported on val are optimistic.")
    out = {"train": train, "val": val, "test": test}
    return {k: v for k, v in out.items() if len(v) or k != "test"}, notes


def missing_from_train(labels: np.ndarray, splits: dict[str, np.ndarray]) -> list[int]:
    """Classes (labels, for multi-hot) that occur in val or test but never in train.

    Only given splits can do this (carved ones are stratified): a model never shown a class cannot
    predict it, so its test results would be misleading without a word about it.
    """

    def present(idx: np.ndarray) -> np.ndarray:
        if labels.ndim == 2:
            return np.flatnonzero(labels[idx].sum(axis=0) > 0)
        return np.unique(labels[idx])

    train = set(present(splits.get("train", np.zeros(0, np.int64))).tolist())
    held_out = set()
    for name in ("val", "test"):
        if name in splits:
            held_out |= set(present(splits[name]).tolist())
    return sorted(held_out - train)


def kfold_indices(
    labels: np.ndarray, indices: np.ndarray, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds over `indices`: [(train_idx, held_out_idx)] with every index held out once."""
    if k < 2:
        raise ValueError("k-fold cross-validation needs k >= 2")
    if len(indices) < k:
        raise ValueError(f"cannot make {k} folds from {len(indices)} items")
    rng = np.random.default_rng(seed)
    groups = strata(labels)
    fold = np.empty(len(indices), dtype=np.int64)
    offset = 0
    for g in np.unique(groups[indices]):
        where = np.flatnonzero(groups[indices] == g)
        where = where[rng.permutation(len(where))]
        # continue the round-robin across strata so fold sizes stay within one of each other
        fold[where] = (np.arange(len(where)) + offset) % k
        offset += len(where)
    return [(np.sort(indices[fold != f]), np.sort(indices[fold == f])) for f in range(k)]


__all__ = ["SPLIT_NAMES", "make_splits", "kfold_indices", "missing_from_train", "strata"]

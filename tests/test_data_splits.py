"""Splits: stratified, deterministic, disjoint, covering; k-fold holds every item out once."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.source import TEST, TRAIN
from engine.data.splits import kfold_indices, make_splits, strata


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_stratified_three_way_split_keeps_class_proportions():
    labels = _labels([800, 120, 80])  # the long-tail job: 80/12/8
    splits, notes = make_splits(labels, np.ones(len(labels), bool), seed=1)
    assert sum(len(v) for v in splits.values()) == 1000
    assert len(np.unique(np.concatenate(list(splits.values())))) == 1000  # disjoint, covering
    for name in ("val", "test"):
        counts = np.bincount(labels[splits[name]], minlength=3)
        assert counts.tolist() == [120, 18, 12]
    assert "stratified" in notes[0]


def test_every_class_reaches_val_and_test_even_when_tiny():
    labels = _labels([50, 3])
    splits, _ = make_splits(labels, np.ones(53, bool))
    for name in ("train", "val", "test"):
        assert 1 in labels[splits[name]]


def test_deterministic_given_seed_and_different_across_seeds():
    labels = _labels([100, 100])
    ok = np.ones(200, bool)
    a, _ = make_splits(labels, ok, seed=3)
    b, _ = make_splits(labels, ok, seed=3)
    c, _ = make_splits(labels, ok, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])


def test_unusable_items_are_left_out():
    labels = _labels([10, 10])
    ok = np.ones(20, bool)
    ok[[0, 15]] = False
    splits, _ = make_splits(labels, ok)
    used = np.concatenate(list(splits.values()))
    assert 0 not in used and 15 not in used and len(used) == 18


def test_given_splits_kept_and_missing_test_reported():
    labels = _labels([10, 10])
    split_of = np.full(20, TRAIN, dtype=np.int8)
    splits, notes = make_splits(labels, np.ones(20, bool), split_of)
    assert "test" not in splits and len(splits["val"]) == 4
    assert any("optimistic" in n for n in notes)
    split_of[[0, 10]] = TEST
    splits, _ = make_splits(labels, np.ones(20, bool), split_of)
    assert splits["test"].tolist() == [0, 10]


def test_multilabel_strata_group_rare_label_sets():
    labels = np.array([[1, 0]] * 10 + [[0, 1]] * 10 + [[1, 1]] * 2, dtype=np.uint8)
    s = strata(labels)
    assert len(set(s[:10])) == 1 and len(set(s[10:20])) == 1 and (s[20:] == -1).all()
    splits, _ = make_splits(labels, np.ones(len(labels), bool))
    for name in ("val", "test"):
        assert labels[splits[name]].sum(axis=0).min() >= 1  # both labels present


@pytest.mark.parametrize("k", [2, 5])
def test_kfold_holds_each_item_out_once_and_stratifies(k):
    labels = _labels([60, 15])
    idx = np.arange(75)
    folds = kfold_indices(labels, idx, k=k, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == idx.tolist()
    for train, hold in folds:
        assert not set(train) & set(hold)
        assert abs(np.bincount(labels[hold], minlength=2)[1] - 15 / k) <= 1


def test_kfold_rejects_bad_k():
    with pytest.raises(ValueError):
        kfold_indices(_labels([3, 3]), np.arange(6), k=1)

"""Dataset statistics on hand-built sources and scans (no image files needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.source import ScanResult, Source
from engine.data.stats import compute_stats, format_stats_text


def make_scan(n: int, corrupt: list[int] = (), deep: bool = False, **kw) -> ScanResult:
    ok = np.ones(n, bool)
    ok[list(corrupt)] = False
    width = np.where(ok, 32, 0).astype(np.int32)
    height = np.where(ok, 32, 0).astype(np.int32)
    width[:3] = np.where(ok[:3], 64, 0)  # a few wider images
    return ScanResult(
        ok=ok,
        width=width,
        height=height,
        mode=["RGB" if o else "" for o in ok],
        format=["PNG" if o else "" for o in ok],
        corrupt=[{"path": f"img{i}.png", "reason": "truncated file"} for i in corrupt],
        deep=deep,
        **kw,
    )


def make_source(labels: np.ndarray, classes: list[str], multilabel: bool = False) -> Source:
    n = labels.shape[0]
    return Source(
        spec="/data/toy",
        name="toy",
        kind="folder",
        classes=classes,
        labels=labels,
        multilabel=multilabel,
        files=[f"img{i}.png" for i in range(n)],
        notes=["val carved from train (10%)"],
    )


def single_label_case() -> tuple[Source, ScanResult, dict]:
    # 12 items: cat x8, dog x4; item 11 (a dog) is corrupt -> usable counts cat 8, dog 3
    labels = np.array([0] * 8 + [1] * 4)
    source = make_source(labels, ["cat", "dog"])
    scan = make_scan(12, corrupt=[11])
    splits = {"train": np.array([0, 1, 2, 3, 4, 5, 8, 9]), "val": np.array([6, 10]), "test": np.array([7])}
    return source, scan, splits


def test_single_label_counts_and_balance() -> None:
    source, scan, splits = single_label_case()
    stats = compute_stats(source, scan, splits, "binary")
    assert stats["num_images"] == 11 and stats["num_files"] == 12
    assert stats["classes"] == ["cat", "dog"]
    assert stats["class_counts"] == {"cat": 8, "dog": 3}
    assert stats["imbalance_ratio"] == pytest.approx(8 / 3)
    assert stats["minority_share"] == pytest.approx(3 / 11)
    assert stats["majority_class"] == "cat" and stats["minority_class"] == "dog"
    assert stats["class_weights"] == pytest.approx({"cat": 11 / (2 * 8), "dog": 11 / (2 * 3)})
    assert stats["splits"]["train"] == {"num_images": 8, "class_counts": {"cat": 6, "dog": 2}}
    assert stats["splits"]["val"] == {"num_images": 2, "class_counts": {"cat": 1, "dog": 1}}
    assert stats["splits"]["test"]["num_images"] == 1
    assert list(stats["splits"]) == ["train", "val", "test"]
    assert stats["corrupt"] == [{"path": "img11.png", "reason": "truncated file"}]
    assert stats["duplicates"] == {"checked": False}
    assert stats["deep"] is False
    assert stats["notes"] == ["val carved from train (10%)"]
    assert "multilabel" not in stats
    json.dumps(stats, allow_nan=False)


def test_image_summary() -> None:
    source, scan, splits = single_label_case()
    images = compute_stats(source, scan, splits, "binary")["images"]
    assert images["width"] == {"min": 32, "max": 64, "mean": pytest.approx((3 * 64 + 8 * 32) / 11, abs=1e-3)}
    assert images["height"]["min"] == 32 and images["height"]["max"] == 32
    assert images["aspect"]["max"] == pytest.approx(2.0)
    assert images["modes"] == {"RGB": 11} and images["formats"] == {"PNG": 11}
    assert images["sizes"] == [[32, 32, 8], [64, 32, 3]]


def test_empty_class_gives_none_not_nan() -> None:
    labels = np.array([0, 0, 1, 1])
    source = make_source(labels, ["a", "b", "never"])
    stats = compute_stats(source, make_scan(4), {"train": np.arange(4)}, "multiclass")
    assert stats["class_counts"]["never"] == 0
    assert stats["imbalance_ratio"] is None
    assert stats["minority_share"] == 0.0 and stats["minority_class"] == "never"
    assert stats["class_weights"]["never"] is None
    json.dumps(stats, allow_nan=False)
    assert "undefined" in format_stats_text(stats)


def test_no_usable_images() -> None:
    source = make_source(np.array([0, 1]), ["a", "b"])
    stats = compute_stats(source, make_scan(2, corrupt=[0, 1]), {}, "binary")
    assert stats["num_images"] == 0 and stats["images"]["width"]["mean"] is None
    assert stats["images"]["sizes"] == []
    json.dumps(stats, allow_nan=False)
    format_stats_text(stats)


def test_multilabel() -> None:
    y = np.array(
        [
            [1, 1, 0],
            [1, 0, 0],
            [0, 0, 0],
            [1, 1, 1],
            [0, 1, 0],
            [1, 1, 0],
            [1, 0, 1],  # corrupt: must not count
        ],
        dtype=np.uint8,
    )
    source = make_source(y, ["sky", "tree", "car"], multilabel=True)
    scan = make_scan(7, corrupt=[6])
    stats = compute_stats(source, scan, {"train": np.arange(4), "test": np.array([4, 5])}, "multilabel")
    assert stats["class_counts"] == {"sky": 4, "tree": 4, "car": 1}
    ml = stats["multilabel"]
    assert ml["label_cardinality"] == pytest.approx(9 / 6)
    assert ml["no_label_images"] == 1
    co = np.array(ml["cooccurrence"])
    assert (co == co.T).all() and co.diagonal().tolist() == [4, 4, 1]
    assert co[0, 1] == 3 and co[0, 2] == 1
    assert ml["label_set_counts"][0] == {"labels": ["sky", "tree"], "count": 2}
    assert {"labels": [], "count": 1} in ml["label_set_counts"]
    # pos_weight style: negatives per positive among the 6 usable images
    assert stats["class_weights"] == pytest.approx({"sky": 2 / 4, "tree": 2 / 4, "car": 5 / 1})
    assert stats["imbalance_ratio"] == pytest.approx(4.0)
    assert stats["minority_share"] == pytest.approx(1 / 9)
    assert stats["splits"]["test"]["class_counts"] == {"sky": 1, "tree": 2, "car": 0}
    json.dumps(stats, allow_nan=False)
    assert "labels per image" in format_stats_text(stats)


def test_duplicates_and_cross_split_leakage() -> None:
    n = 8
    labels = np.array([0, 1] * 4)
    source = make_source(labels, ["a", "b"])
    sha = [f"h{i}" for i in range(n)]
    sha[5] = sha[0]  # byte-identical copy of a train image in test
    sha[7] = ""  # unreadable
    dhash = (np.arange(n, dtype=np.uint64) * np.uint64(0x0F0F0F0F0F0F0F)).astype(np.uint64)
    dhash[5] = dhash[0]
    dhash[3] = dhash[1] ^ np.uint64(0b101)  # near copy, both in train: no leak
    scan = make_scan(n, corrupt=[7], deep=True, sha=sha, dhash=dhash)
    splits = {"train": np.array([0, 1, 2, 3]), "val": np.array([4]), "test": np.array([5, 6])}
    stats = compute_stats(source, scan, splits, "binary")
    dup = stats["duplicates"]
    assert dup["checked"] is True
    assert dup["exact"] == [["img0.png", "img5.png"]]
    assert dup["near"] == [["img1.png", "img3.png"]]
    assert dup["cross_split"] == [{"items": ["img0.png", "img5.png"], "splits": ["train", "test"]}]
    assert (dup["num_exact_groups"], dup["num_near_groups"], dup["num_cross_split"]) == (1, 1, 1)
    assert stats["deep"] is True
    json.dumps(stats, allow_nan=False)
    text = format_stats_text(stats)
    assert "1 exact duplicate groups" in text and "1 leaking across splits" in text


def test_format_stats_text_mentions_classes_and_ratio() -> None:
    source, scan, splits = single_label_case()
    stats = compute_stats(source, scan, splits, "binary")
    text = format_stats_text(stats)
    for name in stats["classes"]:
        assert name in text
    assert "2.67" in text  # imbalance ratio 8/3
    assert "1 corrupt" in text and "train 8" in text and "32x32" in text


def test_unknown_task_rejected() -> None:
    source, scan, splits = single_label_case()
    with pytest.raises(ValueError):
        compute_stats(source, scan, splits, "regression")

"""Dataset statistics on hand-built sources and scans (no image files needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import RunConfig
from engine.data.source import ScanResult, Source
from engine.data.stats import MIN_EVAL_PER_CLASS, compute_stats, format_stats_text
from engine.train.imbalance import make_loss, suggested_class_weights


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
    # the weights training applies: inverse frequency over the train split (cat 6, dog 2 of 8)
    assert suggested_class_weights(stats) == pytest.approx({"cat": 8 / (2 * 6), "dog": 8 / (2 * 2)})
    assert "class_weights" not in stats  # no second formula in the data layer
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
    assert suggested_class_weights(stats)["never"] == 0.0  # what training weighs a class without images by
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
    # pos_weight: negatives per positive among the train split's 4 images (sky 3, tree 2, car 1)
    assert suggested_class_weights(stats) == pytest.approx({"sky": 1 / 3, "tree": 2 / 2, "car": 3 / 1})
    assert stats["imbalance_ratio"] == pytest.approx(4.0)
    assert stats["minority_share"] == pytest.approx(1 / 6)  # share of IMAGES with the rarest label (car: 1 of 6)
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


# --- suggested class weights: the same numbers training uses -----------------------------------------


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_suggested_class_weights_are_what_the_training_loss_applies(task: str) -> None:
    source, scan, splits = single_label_case()
    if task == "multilabel":
        y = (np.random.default_rng(0).random((12, 3)) < [0.7, 0.4, 0.15]).astype(np.uint8)
        source = make_source(y, ["sky", "tree", "car"], multilabel=True)
    stats = compute_stats(source, scan, splits, task)
    loss = make_loss(task, len(stats["classes"]), RunConfig(imbalance="weighted_loss"), source.labels[splits["train"]])
    applied = (loss.pos_weight if task == "multilabel" else loss.weight).tolist()
    assert list(suggested_class_weights(stats).values()) == pytest.approx(applied)


# --- label conflicts: the same picture under two labels ----------------------------------------------


def conflict_case(
    labels: np.ndarray, classes: list[str], sha: list[str], dhash: np.ndarray | None = None, task: str = "multiclass"
) -> dict:
    n = len(labels)
    source = make_source(labels, classes, multilabel=labels.ndim == 2)
    if dhash is None:  # far apart (~32 of 64 bits), except for identical content
        far = np.random.default_rng(1).integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        dhash = np.array([far[sha.index(h)] for h in sha], dtype=np.uint64)
    scan = make_scan(n, deep=True, sha=sha, dhash=dhash)
    splits = {"train": np.arange(0, n, 2), "val": np.arange(1, n, 2)}
    return compute_stats(source, scan, splits, task)


def test_an_exact_copy_under_another_class_is_a_label_conflict() -> None:
    labels = np.array([0, 1, 0, 1, 2, 0])  # neg, pos, neg, pos, other, neg
    sha = ["a", "a", "b", "c", "d", "b"]  # 0 and 1: one picture as neg and pos; 2 and 5: a copy within neg
    dup = conflict_case(labels, ["negatives", "positives", "other"], sha)["duplicates"]
    assert dup["num_label_conflicts"] == 1 and dup["num_exact_groups"] == 2
    assert dup["label_conflicts"] == [
        {
            "kind": "exact",
            "items": ["img0.png", "img1.png"],
            "labels": ["negatives", "positives"],
            "splits": ["train", "val"],
        }
    ]
    assert list(dup)[:3] == ["checked", "max_distance", "label_conflicts"]  # listed before the other duplicates


def test_a_near_copy_under_another_class_is_a_label_conflict() -> None:
    labels = np.array([0, 1, 1, 0])
    dhash = np.array([0, 0b11, 0xFFFF << 40, 0xFFFF << 10], dtype=np.uint64)  # 0 and 1 differ in 2 bits
    dup = conflict_case(labels, ["cat", "dog"], ["a", "b", "c", "d"], dhash, task="binary")["duplicates"]
    assert dup["label_conflicts"] == [
        {"kind": "near", "items": ["img0.png", "img1.png"], "labels": ["cat", "dog"], "splits": ["train", "val"]}
    ]


def test_multilabel_conflicts_compare_label_sets() -> None:
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=np.uint8)
    sha = ["a", "a", "b", "b", "c", "c"]  # 0/1: {sky, tree} vs {sky}; 2/3: the same set; 4/5: none vs {sky}
    dup = conflict_case(y, ["sky", "tree", "car"], sha, task="multilabel")["duplicates"]
    assert [c["items"] for c in dup["label_conflicts"]] == [["img0.png", "img1.png"], ["img4.png", "img5.png"]]
    assert dup["label_conflicts"][0]["labels"] == ["sky + tree", "sky"]
    assert dup["label_conflicts"][1]["labels"] == ["(no label)", "sky"]


def test_label_conflicts_come_first_in_the_text() -> None:
    stats = conflict_case(np.array([0, 1, 0, 1]), ["negatives", "positives"], ["a", "a", "b", "c"], task="binary")
    text = format_stats_text(stats)
    assert text.index("LABEL CONFLICTS: 1 duplicate group carries different labels") < text.index("class counts")
    assert "img0.png [negatives, train] = img1.png [positives, val]" in text
    assert "problems: 1 label conflicts, 0 corrupt" in text


def test_label_conflicts_in_real_class_folders(tmp_path) -> None:
    """The issue's case, on files: the same photo in negatives/ and positives/, and a harmless copy within one class."""
    import shutil

    from engine.data.dataset import dataset_stats, open_dataset
    from tests.conftest import make_class_folders

    root = make_class_folders(tmp_path / "faces", {"negatives": 12, "positives": 5}, size=(24, 24))
    shutil.copy(root / "negatives" / "3.png", root / "positives" / "also-3.png")
    shutil.copy(root / "negatives" / "4.png", root / "negatives" / "4-again.png")
    stats = dataset_stats(open_dataset(str(root)))
    dup = stats["duplicates"]
    assert dup["num_exact_groups"] == 2 and dup["num_label_conflicts"] == 1
    (conflict,) = dup["label_conflicts"]
    assert sorted(zip(conflict["items"], conflict["labels"])) == [
        ("negatives/3.png", "negatives"),
        ("positives/also-3.png", "positives"),
    ]
    assert conflict["kind"] == "exact"


# --- data-quality warnings: evaluation splits too small to measure anything on ------------------------


def test_a_handful_of_validation_images_per_class_is_warned_about() -> None:
    labels = np.array([0] * 20 + [1] * 20)  # a 40-image upload
    source = make_source(labels, ["cat", "dog"])
    val = np.r_[0:3, 20:23]  # 3 of each
    splits = {"train": np.r_[3:17, 23:37], "val": val, "test": np.r_[17:20, 37:40]}
    stats = compute_stats(source, make_scan(40), splits, "binary")
    (val_w, test_w) = stats["warnings"]
    assert (val_w["kind"], val_w["split"], val_w["min_per_class"]) == ("small_split", "val", MIN_EVAL_PER_CLASS)
    assert val_w["classes"] == {"cat": 3, "dog": 3} and test_w["split"] == "test"
    assert f"fewer than {MIN_EVAL_PER_CLASS} images of 2 classes ('cat' 3, 'dog' 3)" in val_w["message"]
    assert "validation split" in val_w["message"]
    text = format_stats_text(stats)
    assert f"warning: The validation split has fewer than {MIN_EVAL_PER_CLASS} images" in text
    assert text.index("warning:") < text.index("class counts")
    # the message says what to do; the terminal adds the flag that does it (a page names its own control)
    assert val_w["message"].endswith("or use k-fold cross-validation.") and val_w["kfold"] == 5
    assert "or use k-fold cross-validation (train --kfold 5).\n" in text


def test_enough_images_per_class_gives_no_warning() -> None:
    labels = np.array([0] * 100 + [1] * 100)
    splits = {"train": np.r_[0:80, 100:180], "val": np.r_[80:90, 180:190], "test": np.r_[90:100, 190:200]}
    stats = compute_stats(make_source(labels, ["cat", "dog"]), make_scan(200), splits, "binary")
    assert stats["warnings"] == []
    assert "warning" not in format_stats_text(stats)


def test_class_shares_are_shares_of_images() -> None:
    source, scan, splits = single_label_case()
    text = format_stats_text(compute_stats(source, scan, splits, "binary"))
    assert "72.73%" in text and "27.27%" in text and "minority share 27.27% of images" in text

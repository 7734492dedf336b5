"""Issue 17, part 2: the unlabelled pool, labels.loupe.csv, the label queue, pseudo-labelling and cleanlab.

Tiny real data built in tmp_path: scikit-learn's digits (8x8 scans of handwritten digits) as PNG files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from engine.cli.main import main
from engine.config import RunConfig
from engine.data.dataset import open_dataset
from engine.data.labels_file import LABELS_FILE, read_changes, set_label, undo_label
from engine.data.sources.detect import resolve_source
from engine.errors import DatasetError
from engine.evaluate.predictions import load_pool
from engine.evaluate.queue import label_queue, rank_pool
from engine.evaluate.report import label_issues
from engine.runs.folder import Run, StorageError
from engine.train.jobs import prepare_run
from engine.train.pseudo import class_thresholds, pick
from engine.train.run import run_training


def digits(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n real digit images (8x8 uint8) and their labels."""
    x, y = load_digits(return_X_y=True)
    return (x[start : start + n].reshape(-1, 8, 8) * 255 / 16).astype(np.uint8), y[start : start + n]


def digits_csv(root: Path, labelled: int, pool: int, classes: int = 10) -> Path:
    """root/labels.csv naming root/img/<i>.png: the first `labelled` with their digit, the next `pool` with an empty
    label cell (the unlabelled pool). Only digits < `classes` are used."""
    x, y = digits(4 * (labelled + pool))
    keep = np.flatnonzero(y < classes)[: labelled + pool]
    (root / "img").mkdir(parents=True)
    rows = ["filename,label"]
    for k, i in enumerate(keep):
        Image.fromarray(x[i]).save(root / "img" / f"{k}.png")
        rows.append(f"img/{k}.png,{y[i] if k < labelled else ''}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the pool from each source ---------------------------------------------------------------------------


def test_the_pool_from_a_csv_an_unlabeled_folder_and_a_label_file(tmp_path: Path):
    x, y = digits(12)
    # a CSV with empty label cells
    csv_root = digits_csv(tmp_path / "csv", labelled=8, pool=3)
    src = resolve_source(str(csv_root))
    assert len(src) == 8 and src.unlabelled == 3 and src.pool_files == ["img/8.png", "img/9.png", "img/10.png"]
    # class folders with an unlabelled/ folder beside them (either spelling, any case): never a class
    for name in ("unlabeled", "Unlabelled"):
        root = tmp_path / name
        for i in range(9):
            folder = root / (str(y[i] % 2) if i < 6 else name)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i}.png")
        src = resolve_source(str(root))
        assert src.classes == ["0", "1"] and len(src) == 6
        assert src.pool_files == [f"{name}/6.png", f"{name}/7.png", f"{name}/8.png"]
        assert any("3 unlabelled images (the unlabelled pool)" in n for n in src.notes)
    # numbered images + a label file whose -1 and empty lines are unlabelled
    root = tmp_path / "labelfile"
    root.mkdir()
    for i in range(6):
        Image.fromarray(x[i]).save(root / f"img{i}.png")
    (root / "labels.txt").write_text("cat\n-1\ndog\n\ncat\ndog\n")
    src = resolve_source(str(root))
    assert src.classes == ["cat", "dog"] and src.files == ["img0.png", "img2.png", "img4.png", "img5.png"]
    assert src.pool_files == ["img1.png", "img3.png"] and src.unlabelled == 2


def test_signed_binary_labels_keep_minus_one_as_a_class(tmp_path: Path):
    x, _ = digits(4)
    for i in range(4):
        Image.fromarray(x[i]).save(tmp_path / f"img{i}.png")
    (tmp_path / "labels.txt").write_text("-1\n1\n-1\n1\n")
    src = resolve_source(str(tmp_path))
    assert src.classes == ["-1", "1"] and len(src) == 4 and not src.pool_files


# --- labels.loupe.csv: atomic, undoable, on top of the source, never the user's file -----------------------


def test_labels_are_logged_atomically_applied_on_top_and_undone(tmp_path: Path, monkeypatch):
    root = digits_csv(tmp_path / "d", labelled=40, pool=5)
    user_file = sha(root / "labels.csv")
    before = open_dataset(str(root), image_size=8)
    src = before.source
    set_label(src, "img/40.png", "3")  # a pool image
    set_label(resolve_source(str(root)), "img/0.png", "7")  # relabel a labelled one
    after = open_dataset(str(root), image_size=8)
    assert sha(root / "labels.csv") == user_file  # the user's own file is never written
    assert len(after) == 41 and after.source.pool_files == [f"img/{i}.png" for i in range(41, 45)]
    assert after.source.item_id(40) == "img/40.png" and after.labels[40] == 3 and after.labels[0] == 7
    assert after.fingerprint != before.fingerprint  # a new decode cache, never the stale one
    assert 40 in after.splits["train"]  # labelled from the pool: it trains
    for split in ("val", "test"):  # and no other image moved between splits
        assert set(before.splits[split].tolist()) == set(after.splits[split].tolist())
    # undo: the latest change first, then that of a named image; every change stays in the log
    assert undo_label(resolve_source(str(root))).image == "img/0.png"
    assert undo_label(resolve_source(str(root)), "img/40.png").image == "img/40.png"
    changes = read_changes(root / LABELS_FILE)
    assert [c.action for c in changes] == ["set", "set", "undo", "undo"] and [c.undoes for c in changes[2:]] == [2, 1]
    restored = resolve_source(str(root))
    assert restored.fingerprint == src.fingerprint and len(restored.pool_files) == 5
    with pytest.raises(DatasetError, match="no label change to undo"):
        undo_label(restored)
    # atomic: a failed write leaves the log exactly as it was, and no temp file behind
    log = sha(root / LABELS_FILE)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(StorageError):
        set_label(restored, "img/41.png", "1")
    assert sha(root / LABELS_FILE) == log and not [p for p in root.iterdir() if ".tmp-" in p.name]


def test_a_label_the_dataset_does_not_have_is_one_sentence(tmp_path: Path, capsys):
    root = digits_csv(tmp_path / "d", labelled=20, pool=2, classes=3)
    assert main(["data", "label", "--dataset", str(root), "--image", "img/20.png", "--label", "cow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'cow' is not a label of 'd'; use one of: 0, 1, 2.") and "Traceback" not in err
    assert main(["data", "label", "--dataset", str(root), "--image", "nope.png", "--label", "1"]) == 2
    assert "is not an image of 'd'" in capsys.readouterr().err
    assert not (root / LABELS_FILE).exists()


# --- the queue ------------------------------------------------------------------------------------------


def test_the_queue_ranks_by_margin_round_robin_over_predicted_classes():
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # 0: class 0, sure
            [0.50, 0.45, 0.05],  # 1: class 0, margin 0.05
            [0.40, 0.35, 0.25],  # 2: class 0, margin 0.05 (tie: row order)
            [0.10, 0.60, 0.30],  # 3: class 1, margin 0.30
            [0.20, 0.42, 0.38],  # 4: class 1, margin 0.04: the least sure of all
            [0.05, 0.15, 0.80],  # 5: class 2, margin 0.65
        ]
    )
    # round 1: class 1's 4 (0.04) then class 0's 1 (0.05) then class 2's 5; round 2: 3, 2; round 3: 0
    assert rank_pool(probs, multilabel=False).tolist() == [4, 1, 5, 3, 2, 0]
    ml = np.array([[0.9, 0.1], [0.55, 0.1], [0.9, 0.48], [0.2, 0.05]])
    assert rank_pool(ml, multilabel=True).tolist() == [2, 1, 3, 0]  # smallest |p - 0.5| first, per label


# --- a real run: pool predictions, the queue from them, pseudo-labelling ---------------------------------


def test_pseudo_labelling_adds_the_pool_images_that_clear_their_class_threshold(tmp_path: Path, capsys):
    root = digits_csv(tmp_path / "d", labelled=90, pool=30, classes=3)
    cfg = RunConfig(
        dataset=str(root),
        image_size=8,
        model="small_cnn",
        strategy="scratch",
        epochs=2,
        batch_size=8,
        lr=1e-2,
        precision="fp32",
        pseudo_label=0.95,
    ).validate()
    run = prepare_run(cfg, tmp_path / "runs")
    summary = run_training(cfg, run, log=lambda m: None)
    round1 = Run(run.path / "round1")
    pool = load_pool(round1)  # round 1 saved its predictions on all 30 pool images
    assert pool is not None and sorted(pool.ids.tolist()) == sorted(f"img/{i}.png" for i in range(90, 120))
    with np.load(round1.predictions / "val.npz") as z:
        thresholds = class_thresholds(z["probs"], 0.95, multilabel=False)
    rows, labels = pick(pool.probs, thresholds, multilabel=False)
    pl = summary["pseudo_label"]
    assert pl["added"] == len(rows) and 0 < len(rows) < 30 and pl["pool"] == 30  # some, not all
    assert pl["per_class"] == {c: int((labels == k).sum()) for k, c in enumerate(["0", "1", "2"])}
    assert set(pl["round1"]) == set(pl["round2"]) == {"val", "test"}
    assert run.config()["num_train"] == round1.config()["num_train"] + len(rows)
    assert (run.predictions / "pool.npz").exists()  # round 2's predictions feed the queue
    # the queue from that run: every pool image once, least sure first within the round-robin; the CLI prints it
    queue = label_queue(run, resolve_source(str(root)))
    pool_items = [q for q in queue if q.kind == "pool"]
    assert sorted(q.id for q in pool_items) == sorted(f"img/{i}.png" for i in range(90, 120))
    assert main(["data", "pool", "--dataset", str(root), "--runs-dir", str(tmp_path / "runs"), "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "unlabelled pool: 30 images" in out and pool_items[0].id in out.splitlines()[3]
    # labelling the first one from the CLI takes it out of the queue and the pool; undo puts it back
    first = pool_items[0].id
    assert main(["data", "label", "--dataset", str(root), "--image", first, "--label", "2"]) == 0
    assert first not in {q.id for q in label_queue(run, resolve_source(str(root)))}
    assert main(["data", "label", "--dataset", str(root), "--undo"]) == 0
    assert len(resolve_source(str(root)).pool_files) == 30


def test_pseudo_label_thresholds_are_per_class_and_multilabel_needs_every_label_sure():
    # val: class 0 predicted at 0.9 on average, class 1 at 0.6 -> t = (0.9, 0.9 * 0.6 / 0.9 = 0.6)
    val = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    t = class_thresholds(val, 0.9, multilabel=False)
    assert t == pytest.approx([0.9, 0.6])
    rows, labels = pick(np.array([[0.85, 0.15], [0.35, 0.65], [0.95, 0.05], [0.45, 0.55]]), t, multilabel=False)
    assert rows.tolist() == [1, 2] and labels.tolist() == [1, 0]  # 0.85 misses class 0's bar, 0.55 class 1's
    assert class_thresholds(np.array([[0.55, 0.45]]), 0.6, multilabel=False).min() >= 0.5  # never below 0.5
    ml_t = np.array([0.9, 0.9])
    rows, labels = pick(np.array([[0.95, 0.02], [0.95, 0.5], [0.05, 0.08]]), ml_t, multilabel=True)
    assert rows.tolist() == [0, 2] and labels.tolist() == [[1, 0], [0, 0]]


def test_pseudo_label_is_refused_with_kfold_and_below_one_half():
    with pytest.raises(Exception, match="pseudo_label"):
        RunConfig(pseudo_label=0.9, kfold=3).validate()
    with pytest.raises(Exception, match="0.5 to 0.999"):
        RunConfig(pseudo_label=0.3).validate()


# --- cleanlab -------------------------------------------------------------------------------------------


def test_cleanlab_finds_planted_label_errors_on_real_digits():
    """Out-of-fold probabilities of a logistic regression on 600 real digits, 20 labels flipped on purpose."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x, y = load_digits(return_X_y=True)
    x, y = x[:600] / 16, y[:600].copy()
    rng = np.random.default_rng(0)
    planted = rng.choice(600, 20, replace=False)
    y[planted] = (y[planted] + rng.integers(1, 10, 20)) % 10
    probs = cross_val_predict(LogisticRegression(max_iter=300), x, y, cv=3, method="predict_proba")
    found, thresholds = label_issues(y, probs)
    assert len(set(found[:20].tolist()) & set(planted.tolist())) >= 12  # most of the top 20 are planted flips
    assert thresholds.shape == (10,) and (thresholds > 0).all()
    # multi-label mode: each digit as a one-label set, the same flips
    multi = np.eye(10, dtype=np.uint8)[y]
    found_ml, _ = label_issues(multi, probs)
    assert len(set(found_ml.tolist()) & set(planted.tolist())) >= 12

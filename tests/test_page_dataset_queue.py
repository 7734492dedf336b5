"""The Dataset page's label queue (issue 17, part 2): the pool counted, ranked by a real run, labelled with one
click into labels.loupe.csv (the user's table untouched), and the label undone."""

from __future__ import annotations

from pathlib import Path

from engine.data.labels_file import LABELS_FILE, read_changes
from engine.data.sources.detect import resolve_source
from engine.evaluate.queue import label_queue
from tests.pagetools import open_page, train_tiny
from tests.test_labels_pool import digits_csv, sha


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_queue_labels_an_image_with_a_click_and_undoes_it(tmp_path: Path):
    root = digits_csv(tmp_path / "d", labelled=90, pool=12, classes=3)
    user_file = sha(root / "labels.csv")
    run = train_tiny(tmp_path / "runs", str(root), image_size=8)
    first = label_queue(run, resolve_source(str(root)))[0]
    assert first.kind == "pool"
    at = open_page("pages/dataset.py", "Dataset", dataset=str(root))
    assert not at.exception and not at.error
    assert metric(at, "Unlabelled pool") == "12" and metric(at, "Labelled in Loupe") == "0"
    assert at.selectbox(key="dataset.queue.run").value == run.id
    assert any(first.id in m.value and m.value.startswith("1. Suggested") for m in at.markdown)
    # one click on class "2" for the first image of the queue
    at.button(key=f"dataset.queue.{first.id}.2").click().run()
    assert not at.exception and not at.error
    assert metric(at, "Unlabelled pool") == "11" and metric(at, "Labelled in Loupe") == "1"
    assert any(s.value == f"Labelled {first.id} as 2." for s in at.success)
    assert not any(first.id in m.value for m in at.markdown if m.value[:1].isdigit())  # it left the queue
    [change] = read_changes(root / LABELS_FILE)
    assert (change.image, change.label, change.action) == (first.id, "2", "set")
    assert sha(root / "labels.csv") == user_file
    # undo: the image is back in the pool, and the log keeps both changes
    at.button(key="dataset.queue.undo").click().run()
    assert metric(at, "Unlabelled pool") == "12" and metric(at, "Labelled in Loupe") == "0"
    assert [c.action for c in read_changes(root / LABELS_FILE)] == ["set", "undo"]
    assert at.button(key="dataset.queue.undo").disabled

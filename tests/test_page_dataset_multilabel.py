"""The Dataset page on a multi-label set (issue 14, item 5): the images without labels have their own sample row;
the minority share is one number in one format on the card, its chart and the Train page's advice; duplicates
whose label sets differ are flagged as label conflicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.pagetools import open_page
from tests.test_page_train import open_train
from tests.test_page_train_multilabel import multilabel_csv


def tagged_set(root: Path) -> Path:
    """The multi-label CSV set, plus an exact copy of img0.png filed under another label set."""
    path = multilabel_csv(root)
    shutil.copy(root / "img0.png", root / "copy0.png")
    rows = path.read_text().splitlines()
    first = rows[1].split(",", 1)[1].split()
    other = "sky" if "sky" not in first else "sea"
    rows.append(f"copy0.png,{other}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_unlabelled_row_one_minority_share_and_multilabel_label_conflicts(tmp_path: Path):
    spec = str(tagged_set(tmp_path / "tags"))
    at = open_page("pages/dataset.py", "Dataset", dataset=spec)
    assert not at.exception and not at.error
    # the images without labels: counted, and shown in a row of their own
    assert any(m.value == "**(no labels)**" for m in at.markdown)
    assert next(m.value for m in at.metric if m.label == "Images without labels") == "4"
    # one minority share, one format: the card, the chart's annotation and the Train page's advice
    share = next(m.value for m in at.metric if m.label == "Minority share")
    assert share.endswith("%") and len(share.split(".")[-1]) == 3  # two decimals
    fig = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "").startswith("Images per label")
    )
    notes = [a["text"] for a in fig["layout"].get("annotations", [])]
    assert f"minority · {share}" in notes, (share, notes)
    train = open_train(spec)
    advice = " ".join(i.value for i in train.info)
    assert f"on only {share} of images" in advice, (share, advice)
    # the copy under another label set is a label conflict
    assert any("label conflict" in w.value for w in [*at.warning, *at.error, *at.info]) or any(
        "Label conflicts" in m.value for m in at.markdown
    )
    conflicts = [t for t in at.table if "labels" in t.value.columns and "copies" in t.value.columns]
    assert conflicts and len(conflicts[0].value) == 1
    assert "copy0.png" in conflicts[0].value.iloc[0]["items"]

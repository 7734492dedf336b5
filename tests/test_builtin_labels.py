"""The built-in ImageNet model's label subsets (issue 16 item 4): "dogs and cats only" (or a user's list)
renormalises the 1000-way probabilities over the subset without changing their order, names the subset in
the result, and is offered by `predict --labels` and the Predict page; unknown names are refused by name."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.predict.labels import CAT_INDICES, DOG_INDICES, LabelSubsetError, resolve_labels
from engine.predict.predictor import Predictor

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def chelsea_jpeg() -> bytes:
    from skimage.data import chelsea

    buf = io.BytesIO()
    Image.fromarray(chelsea()).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_subset_renormalises_over_its_classes_and_keeps_their_order():
    full = Predictor.from_ref("builtin:imagenet")
    pets = Predictor.from_ref("builtin:imagenet", labels="dogs-cats")
    assert len(full.classes) == 1000 and len(pets.classes) == len(DOG_INDICES) + len(CAT_INDICES) == 123
    assert pets.classes == [full.classes[i] for i in (*DOG_INDICES, *CAT_INDICES)]
    item = [("chelsea.jpg", chelsea_jpeg())]
    (a,) = full.predict_bytes(item, top_k=1000)
    (b,) = pets.predict_bytes(item, top_k=123)
    p_full = {t["class"]: t["prob"] for t in a["top"]}
    p_sub = np.array([t["prob"] for t in b["top"]])
    assert p_sub.sum() == pytest.approx(1.0, abs=1e-4)
    share = sum(p_full[c] for c in pets.classes)
    expected = np.array([p_full[t["class"]] / share for t in b["top"]])
    np.testing.assert_allclose(p_sub, expected, atol=2e-3)  # bf16 on the CPU: the last digits differ
    order_full = [c for c in (t["class"] for t in a["top"]) if c in set(pets.classes)]
    assert [t["class"] for t in b["top"]][:10] == order_full[:10]
    assert b["label"] in CATS and b["confidence"] > a["confidence"]
    assert b["label_subset"] == "dogs-cats" and "label_subset" not in a
    assert "labels: dogs-cats (dogs and cats only, 123 of 1000 classes)" in pets.name


def test_own_lists_resolve_and_unknown_names_are_named(tmp_path):
    assert resolve_labels("all") is None and resolve_labels("") is None
    assert resolve_labels(" Beagle , tabby").indices == (162, 281)
    listed = tmp_path / "pets.txt"
    listed.write_text("# my pets\nbeagle\nTabby  # the cat\n")
    assert resolve_labels(str(listed)).indices == (162, 281)
    with pytest.raises(LabelSubsetError, match=r"'beagel' \(did you mean .*'beagle'"):
        resolve_labels("beagel,tabby")
    with pytest.raises(LabelSubsetError, match="'crane' matches 2 ImageNet classes"):
        resolve_labels("crane")
    with pytest.raises(LabelSubsetError, match="does not exist"):
        resolve_labels(str(tmp_path / "missing.txt"))
    with pytest.raises(LabelSubsetError, match="'etc/passwd'"):  # the app never reads a file it is told of
        resolve_labels("etc/passwd", files=False)


def test_cli_labels_flag_names_the_subset_and_refuses_unknown_names(tmp_path, capsys):
    img = tmp_path / "chelsea.jpg"
    img.write_bytes(chelsea_jpeg())
    assert main(["predict", "builtin:imagenet", str(img), "--labels", "dogs-cats", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "labels: dogs-cats (dogs and cats only, 123 of 1000 classes)" in out.splitlines()[0]
    top = out.split("top:")[1]
    assert any(c in top for c in CATS) and "lynx" not in top  # lynx is a wild cat, not in the subset
    assert main(["predict", "builtin:imagenet", str(img), "--labels", "beagle,dachshundd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown ImageNet class name(s) 'dachshundd'") and "Traceback" not in err


def test_predict_page_offers_dogs_and_cats_only():
    from tests.test_page_predict import big_lines, open_predict, top_k_classes, upload

    at = open_predict()
    labels = at.selectbox(key="pred.labels")
    assert labels.value == "all" and labels.options == [
        "All 1,000 ImageNet classes",
        "Dogs and cats only (123 classes)",
        "Dogs only (118 classes)",
        "Cats only (5 classes)",
        "Your own list of ImageNet classes…",
    ]
    labels.set_value("dogs-cats").run()
    assert not at.exception and not at.error
    assert any("labels: dogs-cats" in c.value for c in at.caption)
    upload(at, ("chelsea.jpg", chelsea_jpeg(), "image/jpeg"))
    (top,) = top_k_classes(at)
    pets = set(Predictor.from_ref("builtin:imagenet", labels="dogs-cats").classes)
    assert len(top) == 5 and set(top) <= pets and set(top[:3]) <= CATS, top
    assert big_lines(at)[0][1] in CATS
    at.selectbox(key="pred.labels").set_value("own").run()
    at.text_input(key="pred.labels_own").set_value("beagle, tabbby").run()
    assert not at.exception
    assert [e.value for e in at.error] and "'tabbby'" in at.error[0].value
    assert at.file_uploader(key="pred.uploader")  # still there, so the uploaded photo is kept
    at.text_input(key="pred.labels_own").set_value("beagle, tabby").run()
    assert not at.error and any("labels: custom (your list, 2 of 1000 classes)" in c.value for c in at.caption)
    assert big_lines(at)[0][1] == "tabby"  # the photo uploaded before the typo is predicted among the two

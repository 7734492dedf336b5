"""The Dataset page, driven through Streamlit's AppTest: metrics, source choices, problems, errors, persistence."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import make_class_folders, needs_fashion

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


def run_app(dataset: str | None = "builtin:digits") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if dataset:
        at.query_params["dataset"] = dataset
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table_with(at: AppTest, column: str):
    """The first table (st.table) that has `column`, as a DataFrame."""
    return next(t.value for t in at.table if column in t.value.columns)


def saved_state() -> dict:
    return json.loads(Path(os.environ["LOUPE_STATE_FILE"]).read_text())


def open_path(at: AppTest, path: str) -> AppTest:
    at.segmented_control(key="dataset.source").set_value("Server path").run()
    return at.text_input(key="dataset.path").input(path).run()


def tiny_dataset(root: Path, problems: bool = True) -> Path:
    """4 cats + 3 dogs as distinct noise PNGs; with `problems`, also a byte-for-byte copy of a cat
    and a file that only pretends to be a PNG."""
    make_class_folders(root, {"cat": 4, "dog": 3})
    if problems:
        shutil.copy(root / "cat" / "0.png", root / "cat" / "0-copy.png")
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image")
    return root


def test_digits_metrics_and_sections():
    at = run_app("builtin:digits")
    assert not at.exception and not at.error
    m = metrics(at)
    assert m["Images"] == "1,797"
    assert m["Classes"] == "10"
    assert m["Task"] == "multiclass"
    assert float(m["Imbalance ratio"].split(":")[0]) == pytest.approx(183 / 174, abs=0.05)
    assert at.selectbox(key="dataset.builtin").value == "digits"
    assert [s.value for s in at.subheader][:1] == ["digits"]
    assert [s.value for s in at.subheader][1:] == [
        "Classes",
        "Image sizes",
        "Samples",
        "Problems",
        "Image quality",
        "Embedding map",
    ]
    assert len(at.get("plotly_chart")) == 4  # the embedding map is drawn on request
    # a row of thumbnails per class, then the 16 lowest-information digits (8x8 images hold little entropy)
    assert [len(row.value) for row in at.image] == [8] * 10 + [16]


def test_chosen_dataset_goes_to_query_params_and_state_file():
    at = run_app("builtin:digits")
    assert at.query_params["dataset"] == "builtin:digits"
    assert saved_state()["dataset"] == "builtin:digits"


@needs_fashion
def test_choosing_fashion_binary():
    at = run_app("builtin:digits")
    at.selectbox(key="dataset.builtin").set_value("fashion-binary").run()
    assert not at.exception and not at.error
    m = metrics(at)
    assert m["Classes"] == "2"
    assert m["Task"] == "binary"
    assert float(m["Imbalance ratio"].split(":")[0]) == pytest.approx(88 / 12, abs=0.15)
    assert float(m["Minority share"].rstrip("%")) == pytest.approx(12, abs=0.5)
    assert at.query_params["dataset"] == "builtin:fashion-binary"
    assert saved_state()["dataset"] == "builtin:fashion-binary"
    assert "builtin:fashion-binary" in "\n".join(x.value for x in at.sidebar.markdown)


def test_server_path_with_a_corrupt_file_and_a_duplicate(tmp_path: Path):
    root = tiny_dataset(tmp_path / "pets")
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error
    m = metrics(at)
    assert m["Images"] == "8"  # usable images: the broken file is not one
    assert m["Classes"] == "2"
    assert m["Imbalance ratio"] == "1.7 : 1"  # 5 cats / 3 dogs
    assert at.query_params["dataset"] == str(root)
    assert saved_state()["dataset"] == str(root)
    summary = " ".join(w.value for w in at.warning)
    assert "1 unreadable file," in summary and "1 group of exact duplicates" in summary
    corrupt, exact = table_with(at, "reason"), table_with(at, "items")  # short tables: whole, names wrapped
    assert list(corrupt.index) == ["dog/broken.png"]
    assert corrupt["reason"].iloc[0]
    assert exact["images"].tolist() == [2]
    assert set(exact["items"].iloc[0].split(", ")) == {"cat/0.png", "cat/0-copy.png"}
    # the duplicates can be looked at
    rows = len(at.image)
    at.toggle(key="dataset.gallery.exact").set_value(True).run()
    assert not at.exception and len(at.image) == rows + 1
    assert sorted(at.image[-1].captions) == ["cat · cat/0-copy.png", "cat · cat/0.png"]  # class · folder/file


def test_a_clean_dataset_says_no_problems(tmp_path: Path):
    # clean means big enough to measure on too: 70 per class leaves over 10 of each in val and test
    root = make_class_folders(tmp_path / "clean", {"cat": 70, "dog": 70})
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error and not at.warning
    assert metrics(at)["Images"] == "140"
    assert any("No problems found" in s.value for s in at.success)
    assert not at.dataframe and not [t for t in at.table if "items" in t.value.columns]  # only "none" captions


def test_switching_sources_keeps_showing_the_active_dataset(tmp_path: Path):
    root = str(tiny_dataset(tmp_path / "pets", problems=False))
    at = run_app(root)
    assert at.segmented_control(key="dataset.source").value == "Server path"
    assert at.text_input(key="dataset.path").value == root
    at.segmented_control(key="dataset.source").set_value("Built-in").run()
    assert at.selectbox(key="dataset.builtin").value is None  # nothing built-in is active
    at.segmented_control(key="dataset.source").set_value("Server path").run()
    assert at.text_input(key="dataset.path").value == root  # restored after Streamlit dropped it
    assert at.query_params["dataset"] == root and metrics(at)["Images"] == "7"


def test_nonexistent_path_shows_an_error(tmp_path: Path):
    missing = str(tmp_path / "no-such-dataset")
    at = open_path(run_app("builtin:digits"), missing)
    assert not at.exception
    assert len(at.error) == 1 and "does not exist" in at.error[0].value
    assert not at.metric  # the page stopped before drawing the dataset
    assert saved_state()["dataset"] == "builtin:digits"  # only datasets that open are offered next time
    # the page recovers: choosing a built-in again works
    at.segmented_control(key="dataset.source").set_value("Built-in").run()
    at.selectbox(key="dataset.builtin").set_value("digits").run()
    assert not at.error and metrics(at)["Images"] == "1,797"


def test_upload_zip_then_offered_as_earlier_upload(tmp_path: Path):
    root = tiny_dataset(tmp_path / "src" / "pets")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*")):
            zf.write(f, f.relative_to(root.parent).as_posix())
    at = run_app("builtin:digits")
    at.segmented_control(key="dataset.source").set_value("Upload .zip").run()
    at.file_uploader(key="dataset.upload").upload("pets.zip", buf.getvalue(), "application/zip").run()
    assert not at.exception and not at.error
    spec = at.query_params["dataset"]
    assert Path(spec).is_relative_to(Path(os.environ["LOUPE_DATA_DIR"]).resolve())
    assert metrics(at)["Images"] == "8"
    # a fresh visit lists it under earlier uploads, selected
    again = run_app(None)
    assert again.query_params["dataset"] == spec
    assert again.segmented_control(key="dataset.source").value == "Earlier uploads"
    assert again.selectbox(key="dataset.earlier").value == spec


def test_upload_of_a_non_zip_shows_an_error():
    at = run_app("builtin:digits")
    at.segmented_control(key="dataset.source").set_value("Upload .zip").run()
    at.file_uploader(key="dataset.upload").upload("pets.zip", b"not a zip at all", "application/zip").run()
    assert not at.exception
    assert any("not a zip" in e.value for e in at.error)
    assert metrics(at)["Images"] == "1,797"  # the active dataset is unchanged


def test_shuffle_samples_draws_other_images():
    at = run_app("builtin:digits")
    before = [row.value for row in at.image]
    at.button(key="dataset.shuffle").click().run()
    assert not at.exception
    after = [row.value for row in at.image]
    assert len(after) == 11 and after[:10] != before[:10] and after[10] == before[10]  # the quality gallery stays


# --- issue 13: first visit, label conflicts, class weights, small splits, no raw values -----------------


def test_a_first_visit_decodes_nothing_until_a_dataset_is_chosen(count_opens: list[str]):
    from app.common import scans

    at = run_app(None)  # no ?dataset=, no earlier choice in the state file
    assert not at.exception and not at.error
    assert count_opens == [] and scans.peek(("open", "builtin:fashion-mnist")) is None  # no decode started
    assert "dataset" not in at.query_params  # nor a default written into the URL (a reload would open it)
    assert not at.metric and "none chosen yet" in "\n".join(m.value for m in at.sidebar.markdown)
    assert at.segmented_control(key="dataset.source").value == "Built-in"
    assert at.selectbox(key="dataset.builtin").value is None
    offered = at.table[0].value  # the built-ins with their header-only summary
    assert list(offered.index) == [
        "fashion-mnist",
        "fashion-binary",
        "fashion-longtail",
        "fashion-multilabel",
        "fashion-coarse",
        "digits",
    ]
    assert offered.loc["digits", "images"] == "1,797" and offered.loc["digits", "classes"] == "10"
    at.run()  # a rerun (any click) still opens nothing
    assert count_opens == []
    at.selectbox(key="dataset.builtin").set_value("digits").run()  # the choice opens it
    assert not at.exception and not at.error
    assert count_opens == ["builtin:digits"] and metrics(at)["Images"] == "1,797"
    assert at.query_params["dataset"] == "builtin:digits"


def test_a_deep_link_still_opens_its_dataset(count_opens: list[str]):
    at = run_app("builtin:digits")
    assert count_opens == ["builtin:digits"] and metrics(at)["Images"] == "1,797"


def conflict_folders(root: Path) -> Path:
    """faces/negatives (12) and faces/positives (6), 24x24 noise; negatives/3.png also filed as positives/also-3.png."""
    make_class_folders(root, {"negatives": 12, "positives": 5}, size=(24, 24))
    shutil.copy(root / "negatives" / "3.png", root / "positives" / "also-3.png")
    return root


def test_label_conflicts_are_listed_first_with_class_and_file_on_every_thumbnail(tmp_path: Path):
    root = conflict_folders(tmp_path / "faces")
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error
    assert at.warning[0].value.startswith("**1 label conflict:** the same picture is filed under different labels")
    assert "Problems found: 1 label conflict (the same picture under different labels), 1 group of exact" in (
        " ".join(w.value for w in at.warning)
    )
    problems = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert problems.index("**Label conflicts (the same picture under different labels)**") < problems.index(
        "**Unreadable files**"
    )  # listed first
    table = table_with(at, "labels")
    assert table["labels"].tolist() == ["negatives vs positives"] and table["copies"].tolist() == ["exact"]
    items = table["items"].iloc[0]
    assert "negatives/3.png (negatives)" in items and "positives/also-3.png (positives)" in items
    # the pictures are shown without asking, each captioned with its class and folder/file
    conflict_row = next(img for img in at.image if any("also-3.png" in c for c in img.captions))
    assert sorted(conflict_row.captions) == ["negatives · negatives/3.png", "positives · positives/also-3.png"]


def test_the_suggested_class_weights_are_the_engines(tmp_path: Path):
    from engine.data import dataset_stats, open_dataset
    from engine.metrics.display import number
    from engine.train.imbalance import suggested_class_weights

    root = make_class_folders(tmp_path / "pets", {"cat": 60, "dog": 15})
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error
    expected = suggested_class_weights(dataset_stats(open_dataset(str(root))))
    weights = next(t.value for t in at.table if "weight" in t.value.columns)
    assert weights["weight"].to_dict() == {c: number(w, 2) for c, w in expected.items()}
    assert expected["dog"] > expected["cat"] > 0
    why = next(c.value for c in at.caption if c.value.startswith("Why: with Imbalance = weighted_loss"))
    assert "train split's 53 images" in why and "The Train page suggests **oversample**" in why


def test_a_handful_of_images_per_class_gets_a_warning_box(tmp_path: Path):
    root = make_class_folders(tmp_path / "upload", {"cat": 20, "dog": 20})  # a 40-image upload
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error
    texts = [w.value for w in at.warning]
    assert any(
        t.startswith("The validation split has fewer than 10 images of 2 classes ('cat' 3, 'dog' 3)") for t in texts
    )
    assert any(t.startswith("The test split has fewer than 10 images") for t in texts)
    # the advice names the page's control, not the command line's flag
    assert all("--kfold" not in t for t in texts)
    assert all(
        t.endswith("or use k-fold cross-validation: on the Train page, set **K-fold folds** (under Stopping) to 5.")
        for t in texts
        if "split has fewer than" in t
    )


def test_no_raw_python_values_on_the_page(tmp_path: Path):
    """A class without images (imbalance ratio undefined) and a multi-label built-in: "n/a", never None or nan."""
    root = make_class_folders(tmp_path / "odd", {"a": 12, "b": 12})
    (root / "empty").mkdir()  # a class whose only file is unreadable: no usable images
    (root / "empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for at in (open_path(run_app("builtin:digits"), str(root)), run_app("builtin:digits")):
        assert not at.exception
        if at.query_params["dataset"] != "builtin:digits":
            assert metrics(at)["Imbalance ratio"] == "n/a" and metrics(at)["Minority share"] == "0.00%"
        shown = [m.value for m in at.metric] + [x.value for x in (*at.markdown, *at.caption, *at.info, *at.warning)]
        shown += [str(v) for t in at.table for v in t.value.to_numpy().ravel()]
        for text in shown:
            assert not re.search(r"\b(nan|NaN|inf)\b|\bNone\b(?! found|:)", text), text  # "None found." is a word

"""The Dataset page, driven through Streamlit's AppTest: metrics, source choices, problems, errors, persistence."""

from __future__ import annotations

import io
import json
import os
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
    assert [s.value for s in at.subheader][1:] == ["Classes", "Image sizes", "Samples", "Problems"]
    assert len(at.get("plotly_chart")) == 4
    assert [len(row.value) for row in at.image] == [8] * 10  # a row of thumbnails per class


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
    corrupt, exact = at.dataframe[0].value, at.dataframe[1].value
    assert list(corrupt["path"]) == ["dog/broken.png"]
    assert corrupt["reason"].iloc[0]
    assert exact["images"].tolist() == [2]
    assert set(exact["items"].iloc[0].split(", ")) == {"cat/0.png", "cat/0-copy.png"}
    # the duplicates can be looked at
    rows = len(at.image)
    at.toggle(key="dataset.gallery.exact").set_value(True).run()
    assert not at.exception and len(at.image) == rows + 1
    assert sorted(at.image[-1].captions) == ["0-copy.png", "0.png"]


def test_a_clean_dataset_says_no_problems(tmp_path: Path):
    root = tiny_dataset(tmp_path / "clean", problems=False)
    at = open_path(run_app("builtin:digits"), str(root))
    assert not at.exception and not at.error and not at.warning
    assert metrics(at)["Images"] == "7"
    assert any("No problems found" in s.value for s in at.success)
    assert not at.dataframe  # no problem tables, only "none" captions


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
    assert len(after) == 10 and after != before

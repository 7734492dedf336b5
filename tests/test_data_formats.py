"""Format detection: every dataset spec of ARCHITECTURE.md's contract 1, and each bad input's one sentence."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import open_dataset, resolve_source
from engine.errors import DatasetError
from tests.conftest import make_class_folders, write_image


def test_class_folders_without_splits(tmp_path: Path):
    make_class_folders(tmp_path / "ds", {"cat": 6, "dog": 4})
    src = resolve_source(str(tmp_path / "ds"))
    assert src.kind == "folder" and src.classes == ["cat", "dog"]
    assert np.bincount(src.labels).tolist() == [6, 4]
    assert src.split_of is None and not src.multilabel


def test_class_folders_with_split_folders(tmp_path: Path):
    root = tmp_path / "ds"
    make_class_folders(root, {"a": 5, "b": 3}, split="train")
    make_class_folders(root, {"a": 2, "b": 2}, split="val")
    make_class_folders(root, {"a": 2, "b": 1, "c": 1}, split="test")
    ds = open_dataset(str(root))
    assert ds.classes == ["a", "b", "c"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 4, "test": 4}
    assert all(ds.source.files[i].startswith("test/") for i in ds.splits["test"])


def test_train_and_test_folders_carve_a_stratified_val(tmp_path: Path):
    root = tmp_path / "ds"
    make_class_folders(root, {"a": 20, "b": 20}, split="train")
    make_class_folders(root, {"a": 4, "b": 4}, split="test")
    ds = open_dataset(str(root))
    assert len(ds.splits["test"]) == 8
    val_labels = ds.labels[ds.splits["val"]]
    assert np.bincount(val_labels).tolist() == [3, 3]  # 15% of 20 per class
    assert any("carved" in n for n in ds.notes)


def _numbered_with_labels(root: Path, labels: list[str], image_dir: str = "") -> None:
    # pixel value = index, so we can check labels line up with files in *numeric* order
    for i in range(len(labels)):
        write_image(root / image_dir / f"{i + 1}.png", value=i * 10)
    (root / "labels.txt").write_text("\n".join(labels) + "\n")


def test_numbered_images_with_label_file_in_natural_order(tmp_path: Path):
    labels = ["0", "1", "0", "0", "1", "0", "0", "0", "0", "1", "1", "0"]  # 12 files: 1..12
    _numbered_with_labels(tmp_path / "faces", labels)
    ds = open_dataset(str(tmp_path / "faces"))
    assert ds.source.kind == "labelfile" and ds.classes == ["0", "1"] and ds.task == "binary"
    order = ds.source.files
    assert order[:3] == ["1.png", "2.png", "3.png"] and order[9] == "10.png"  # not 1, 10, 11, 12, 2
    for i, f in enumerate(order):
        assert ds.images[i, 0, 0, 0] == (int(Path(f).stem) - 1) * 10
        assert ds.classes[ds.labels[i]] == labels[int(Path(f).stem) - 1]


def test_label_file_format_inside_a_zip(tmp_path: Path):
    src = tmp_path / "src"
    _numbered_with_labels(src, ["1", "0", "1", "0", "0", "1"], image_dir="images")
    zpath = tmp_path / "faces.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in src.rglob("*"):
            if p.is_file():
                z.write(p, f"faces/{p.relative_to(src)}")  # a single wrapper folder
    src_obj = resolve_source(str(zpath))
    assert src_obj.kind == "labelfile" and len(src_obj) == 6
    assert src_obj.root.is_relative_to(Path(os.environ["LOUPE_DATA_DIR"]))


def test_label_file_line_count_mismatch(tmp_path: Path):
    _numbered_with_labels(tmp_path / "faces", ["0", "1", "1"])
    write_image(tmp_path / "faces" / "4.png")
    with pytest.raises(DatasetError, match=r"has 3 labels but .* holds 4 images"):
        resolve_source(str(tmp_path / "faces"))


@pytest.mark.parametrize(
    "content, match",
    [("0\ncat dog\n", "Line 2 .* not one label")],  # an empty line is an unlabelled image
)
def test_label_file_unparseable_lines(tmp_path: Path, content: str, match: str):
    for i in range(3):
        write_image(tmp_path / "d" / f"{i}.png")
    (tmp_path / "d" / "labels.txt").write_text(content)
    with pytest.raises(DatasetError, match=match):
        resolve_source(str(tmp_path / "d"))


def _csv_dataset(root: Path, rows: list[str], header: str = "filename,labels", n: int = 6) -> Path:
    for i in range(n):
        write_image(root / f"img{i}.jpg", seed=i)
    path = root / "labels.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_single_label(tmp_path: Path):
    path = _csv_dataset(tmp_path / "d", [f"img{i}.jpg,{'cat' if i % 2 else 'dog'}" for i in range(6)])
    src = resolve_source(str(path))
    assert src.kind == "csv" and not src.multilabel and src.classes == ["cat", "dog"]
    assert src.labels.tolist() == [1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("sep", [" ", ";", "|"])
def test_csv_multilabel_separators(tmp_path: Path, sep: str):
    rows = [
        f"img0.jpg,sky{sep}sea",
        "img1.jpg,sky",
        "img2.jpg,",
        f"img3.jpg,sea{sep}sand{sep}sky",
        "img4.jpg,sand",
        "img5.jpg,sea",
    ]
    src = resolve_source(str(_csv_dataset(tmp_path / "d", rows)))
    assert src.multilabel and src.classes == ["sand", "sea", "sky"]
    assert src.labels.tolist()[0] == [0, 1, 1] and src.labels[2].sum() == 0 and src.labels[3].sum() == 3


def test_csv_one_hot_columns_found_in_folder_with_bom_and_crlf(tmp_path: Path):
    root = tmp_path / "d"
    for i in range(4):
        write_image(root / "images" / f"{i}.png", seed=i)
    text = "image,red,green,blue\r\n0.png,1,0,0\r\n1.png,0,1,0\r\n2.png,1,0,1\r\n3.png,0,0,1\r\n"
    (root / "tags.csv").write_bytes("\ufeff".encode() + text.encode())
    src = resolve_source(str(root))
    assert src.kind == "csv" and src.classes == ["red", "green", "blue"] and src.multilabel
    assert src.files[0] == "0.png" and src.root.name == "images"
    assert src.labels.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]]


def test_csv_ids_without_extension(tmp_path: Path):
    path = _csv_dataset(tmp_path / "d", [f"img{i},{i % 2}" for i in range(6)], header="id,label")
    src = resolve_source(str(path))
    assert src.files[0] == "img0.jpg"


@pytest.mark.parametrize(
    "rows, match",
    [
        (["img0.jpg,a", "missing.jpg,b"], r"names 1 files that do not exist .*'missing.jpg'"),
        (["img0.jpg,a", "img0.jpg,b"], r"lists 'img0.jpg' twice"),
        (["img0.jpg,a", "../outside.jpg,b"], r"'../outside.jpg', which lies outside"),
        (["img0.jpg,a,extra", "img1.jpg,b"], r"Row 2 .* has 3 columns"),
    ],
)
def test_csv_bad_rows(tmp_path: Path, rows: list[str], match: str):
    write_image(tmp_path / "outside.jpg")
    with pytest.raises(DatasetError, match=match):
        resolve_source(str(_csv_dataset(tmp_path / "d", rows)))


def test_csv_bad_one_hot_value(tmp_path: Path):
    path = _csv_dataset(tmp_path / "d", ["img0.jpg,1,0", "img1.jpg,yes,1"], header="filename,a,b")
    with pytest.raises(DatasetError, match=r"Row 3, column 'a' .* holds 'yes'"):
        resolve_source(str(path))


def test_npz_single_and_multilabel(tmp_path: Path):
    imgs = np.random.default_rng(0).integers(0, 256, (10, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=imgs, labels=np.array(["x", "y"] * 5))
    ds = open_dataset(str(tmp_path / "a.npz"))
    assert ds.classes == ["x", "y"] and ds.channels == 1 and ds.images.shape == (10, 8, 8, 1)
    assert np.array_equal(ds.images[:, :, :, 0], imgs)
    np.savez(
        tmp_path / "m.npz",
        images=imgs,
        labels=np.eye(3, dtype=np.uint8)[np.arange(10) % 3] | np.array([1, 0, 0], np.uint8),
    )
    assert resolve_source(str(tmp_path / "m.npz")).multilabel


def test_npz_bad_arrays(tmp_path: Path):
    np.savez(tmp_path / "f.npz", images=np.zeros((4, 8, 8), np.float32), labels=np.arange(4))
    with pytest.raises(DatasetError, match="must be uint8"):
        resolve_source(str(tmp_path / "f.npz"))
    np.savez(tmp_path / "n.npz", pixels=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match="must hold arrays named 'images' and 'labels'"):
        resolve_source(str(tmp_path / "n.npz"))


def test_missing_path(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"))


def test_empty_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is empty"):
        resolve_source(str(tmp_path / "empty"))


def test_single_class(tmp_path: Path):
    make_class_folders(tmp_path / "ds", {"only": 4})
    with pytest.raises(DatasetError, match=r"single class \('only'\)"):
        resolve_source(str(tmp_path / "ds"))


def test_symlink_loop(tmp_path: Path):
    make_class_folders(tmp_path / "ds", {"a": 2, "b": 2})
    os.symlink(tmp_path / "ds" / "a", tmp_path / "ds" / "a" / "again")
    with pytest.raises(DatasetError, match="symlink loop"):
        resolve_source(str(tmp_path / "ds"))


def test_folders_of_non_images(tmp_path: Path):
    for c in ("a", "b"):
        (tmp_path / "ds" / c).mkdir(parents=True)
        (tmp_path / "ds" / c / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="No images found"):
        resolve_source(str(tmp_path / "ds"))


def test_a_file_that_is_no_dataset(tmp_path: Path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="is not a dataset"):
        resolve_source(str(tmp_path / "x.txt"))


def test_files_that_are_not_images_are_listed_and_left_out(tmp_path: Path):
    make_class_folders(tmp_path / "ds", {"a": 8, "b": 8})
    (tmp_path / "ds" / "a" / "page.jpg").write_text("<html><body>not found</body></html>")
    Image.new("RGB", (4, 4)).save(tmp_path / "ds" / "b" / "tiff.png", format="TIFF")
    ds = open_dataset(str(tmp_path / "ds"))
    reasons = {c["path"]: c["reason"] for c in ds.scan.corrupt}
    assert "HTML" in reasons["a/page.jpg"] and "TIFF but named .png" in reasons["b/tiff.png"]
    bad = {ds.source.files.index(p) for p in reasons}
    used = set(np.concatenate(list(ds.splits.values())).tolist())
    assert not (bad & used) and len(used) == 16


def test_task_override(tmp_path: Path):
    make_class_folders(tmp_path / "ds", {"a": 4, "b": 4, "c": 4})
    assert open_dataset(str(tmp_path / "ds")).task == "multiclass"
    assert open_dataset(str(tmp_path / "ds"), task="multilabel").task == "multilabel"
    with pytest.raises(DatasetError, match="binary task needs exactly 2"):
        open_dataset(str(tmp_path / "ds"), task="binary")

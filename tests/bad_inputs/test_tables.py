"""Label files and CSV tables: each mistake gets one sentence naming the table and the row or line;
encodings and line endings that are merely unusual are read correctly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.data import open_dataset, quick_stats, resolve_source
from engine.data.sources import folders, tables
from engine.errors import DatasetError
from tests.conftest import write_image


def _images(root: Path, n: int, ext: str = "png") -> list[str]:
    names = [f"img{i}.{ext}" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / name, value=i * 20)  # pixel value identifies the file
    return names


def _labelled(root: Path, text: str | bytes, n: int) -> Path:
    _images(root, n)
    data = text.encode() if isinstance(text, str) else text
    (root / "labels.txt").write_bytes(data)
    return root


def _table(root: Path, text: str | bytes, n: int = 6, name: str = "labels.csv") -> Path:
    _images(root, n)
    path = root / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- label .txt files -------------------------------------------------------------------------------


@pytest.mark.parametrize("lines, images", [(3, 4), (5, 4), (0, 2)])
def test_label_file_with_the_wrong_line_count(tmp_path, lines, images):
    root = _labelled(tmp_path / "faces", "".join(f"{i % 2}\n" for i in range(lines)), images)
    with pytest.raises(DatasetError) as err:
        resolve_source(str(root))
    assert str(err.value) == (
        f"The label file 'labels.txt' has {lines} labels but 'faces' holds {images} images; "
        "it needs exactly one line per image, in file-name order."
    )


def test_label_file_with_bom_and_crlf(tmp_path):
    root = _labelled(tmp_path / "faces", b"\xef\xbb\xbfcat\r\ndog\r\ncat\r\ndog\r\n\r\n", 4)
    src = resolve_source(str(root))
    assert src.classes == ["cat", "dog"]  # no '\ufeffcat' class, no '\r' in names
    assert [src.classes[i] for i in src.labels] == ["cat", "dog", "cat", "dog"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\n1\ncat,dog\n", "Line 3 of 'labels.txt' holds 'cat,dog', which is not one label"),
        ("\n-1\n\n", "Every line of 'labels.txt' is empty or -1; give each image its label."),
    ],
)
def test_label_file_empty_or_several_labels(tmp_path, text, message):
    root = _labelled(tmp_path / "d", text, 3)
    with pytest.raises(DatasetError) as err:
        resolve_source(str(root))
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("text", ["0\n\n1\n", "0\n   \n1\n", "0\n-1\n1\n"])
def test_label_file_empty_or_minus_one_line_is_an_unlabelled_pool_image(tmp_path, text):
    """Issue 17: an empty or -1 line inside the label file is an unlabelled image (it used to be refused)."""
    root = _labelled(tmp_path / "d", text, 3)
    src = resolve_source(str(root))
    assert src.classes == ["0", "1"] and len(src) == 2 and src.unlabelled == 1
    assert src.pool_files == [sorted(src.files + src.pool_files)[1]]


def test_label_file_not_utf8(tmp_path):
    root = _labelled(tmp_path / "d", b"chat\n\xe9t\xe9\n", 2)
    with pytest.raises(DatasetError, match=r"^The label file 'labels.txt' is not UTF-8 text"):
        resolve_source(str(root))


def test_label_file_size_cap(tmp_path, monkeypatch):
    root = _labelled(tmp_path / "d", "0\n1\n" * 50, 4)
    monkeypatch.setattr(folders, "MAX_TABLE_BYTES", 100)
    with pytest.raises(DatasetError, match=r"^The label file 'labels.txt' is 0 MB, over the 0 MB limit"):
        resolve_source(str(root))


# --- CSV tables -------------------------------------------------------------------------------------


def test_csv_with_bom_crlf_and_the_split_column_first(tmp_path):
    """With the BOM left in, the header would read '\\ufeffsplit' and the split column would be lost."""
    text = "\ufeffsplit,filename,labels\r\n" + "".join(
        f"{'train' if i < 4 else 'test'},img{i}.png,{'cat' if i % 2 else 'dog'}\r\n" for i in range(6)
    )
    src = resolve_source(str(_table(tmp_path / "d", text)))
    assert src.split_of is not None and src.split_of.tolist() == [0, 0, 0, 0, 2, 2]
    assert src.files == [f"img{i}.png" for i in range(6)] and src.classes == ["cat", "dog"]


def test_csv_empty_label_cell_in_a_single_label_table(tmp_path):
    """Issue 15 (3): an empty label cell is an unlabelled image, left out and counted (it used to be refused)."""
    text = "filename,label\nimg0.png,cat\nimg1.png,dog\nimg2.png,\nimg3.png,cat\nimg4.png, \nimg5.png,dog\n"
    src = resolve_source(str(_table(tmp_path / "d", text)))
    assert src.classes == ["cat", "dog"] and not src.multilabel and src.unlabelled == 2
    assert src.files == ["img0.png", "img1.png", "img3.png", "img5.png"]
    assert "Left out 2 unlabelled images (label empty or NaN; rows 4, 6)" in " ".join(src.notes)


def test_csv_empty_label_set_is_fine_when_multilabel(tmp_path):
    text = "filename,labels\nimg0.png,sky sea\nimg1.png,\nimg2.png,sea\nimg3.png,sky\nimg4.png,sea\nimg5.png,sky\n"
    src = resolve_source(str(_table(tmp_path / "d", text)))
    assert src.multilabel and src.labels[1].sum() == 0 and src.labels[0].tolist() == [1, 1]


@pytest.mark.parametrize("second", ["img0.png", "./img0.png", "sub/../img0.png", "img0"])
def test_csv_duplicate_file_names(tmp_path, second):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    text = f"filename,label\nimg0.png,cat\nimg1.png,dog\n{second},dog\nimg3.png,cat\n"
    with pytest.raises(DatasetError) as err:
        resolve_source(str(_table(tmp_path / "d", text)))
    msg = str(err.value)
    assert msg.startswith("The table 'labels.csv' ")
    if second == "img0.png":
        assert "lists 'img0.png' twice (rows 2 and 4)" in msg
    else:
        assert f"names the same image twice ('img0.png' and '{second}')" in msg


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "{abs}", "/etc/passwd", "link.png"])
def test_csv_paths_escaping_the_dataset(tmp_path, name):
    root = tmp_path / "d"
    outside = write_image(tmp_path / "outside.png", value=7)
    (root / "sub").mkdir(parents=True)
    _images(root, 3)
    os.symlink(outside, root / "link.png")  # a link inside pointing out
    name = name.replace("{abs}", str(outside))
    (root / "labels.csv").write_text(f"filename,label\nimg0.png,cat\nimg1.png,dog\n{name},dog\nimg2.png,cat\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(str(root / "labels.csv"))
    assert str(err.value).startswith(f"The table 'labels.csv' names '{name}', which lies outside '{root}'")


def test_csv_unknown_labels_only_in_test(tmp_path):
    rows = [("train", "cat"), ("train", "dog"), ("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "bird")]
    text = "filename,label,split\n" + "".join(f"img{i}.png,{lab},{sp}\n" for i, (sp, lab) in enumerate(rows))
    path = _table(tmp_path / "d", text)
    note = (
        "1 class ('bird') appears in val or test but not in train, so the model cannot learn it; "
        "move some of those images to train."
    )
    assert note in quick_stats(str(path))["notes"]
    ds = open_dataset(str(path), image_size=8)
    assert note in ds.notes
    assert np.array_equal(ds.splits["test"], [4, 5])
    # all classes seen in train: no such note
    path.write_text(text.replace("test,", "train,").replace("img0.png,cat,train", "img0.png,bird,train"))
    assert not any("not in train" in n for n in quick_stats(str(path))["notes"])


def test_csv_row_cap_stops_reading_early(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_CSV_ROWS", "6")
    path = _table(tmp_path / "d", "filename,label\n" + "".join(f"img{i}.png,{i % 2}\n" for i in range(6)))
    assert len(resolve_source(str(path))) == 6  # exactly at the cap: fine
    # rows over the cap, then (1 MB on) bytes that are not UTF-8: reading must stop long before them
    more = b"".join(b"img%d.png,1\n" % i for i in range(6, 100_000))
    path.write_bytes(path.read_bytes() + more + b"\xff\xfe garbage\n" * 10)
    with pytest.raises(DatasetError) as err:
        resolve_source(str(path))
    assert (
        str(err.value)
        == "The table 'labels.csv' has more than 6 image rows; split the dataset or raise LOUPE_MAX_CSV_ROWS."
    )


def test_csv_caps_defaults_and_size_cap(tmp_path, monkeypatch):
    assert tables.MAX_CSV_ROWS == 1_000_000 and tables.MAX_CSV_BYTES == 100 * 2**20
    path = _table(tmp_path / "d", "filename,label\n" + "".join(f"img{i}.png,{i % 2}\n" for i in range(6)))
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 50)
    with pytest.raises(DatasetError, match=r"^The table 'labels.csv' is 0 MB, over the 0 MB limit; split it.$"):
        resolve_source(str(path))


def test_csv_huge_field_and_ragged_rows(tmp_path):
    path = _table(tmp_path / "d", "filename,label\nimg0.png," + "x" * 200_000 + "\nimg1.png,b\n")
    with pytest.raises(DatasetError, match=r"^The table 'labels.csv' is not valid CSV \(field larger than field limit"):
        resolve_source(str(path))
    path.write_text("filename,label\nimg0.png,a\nimg1.png\n")
    with pytest.raises(DatasetError, match=r"^Row 3 of 'labels.csv' has 1 columns but the header has 2"):
        resolve_source(str(path))


def test_good_rows_line_up_with_their_files(tmp_path):
    """After all the checks, each row's label still belongs to the image it names (pixel = 20 * index)."""
    order = [3, 0, 5, 1, 4, 2]
    text = "filename,label\n" + "".join(f"img{i}.png,{'odd' if i % 2 else 'even'}\n" for i in order)
    ds = open_dataset(str(_table(tmp_path / "d", text)), image_size=4)
    for row, i in enumerate(order):
        assert ds.images[row, 0, 0, 0] == i * 20
        assert ds.classes[ds.labels[row]] == ("odd" if i % 2 else "even")

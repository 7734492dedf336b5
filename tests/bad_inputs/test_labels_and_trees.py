"""Issue 15, classes 3 to 5: silent wrong results, noise on stderr, and the surprising-but-clear cases.

A missing label (an empty or NaN cell, a NaN in an `.npz`) is an unlabelled image: left out of training
and metrics, counted as `unlabelled` in the statistics and named in a note, never a class called 'nan'.
An (N, 1) column of class ids is single-label. Images beside class folders, empty class folders and a
label file beside class folders are explained in notes. Float TIFFs holding NaN/inf and YAML mistakes
print no warnings and no multi-line parser output. Predictions CSVs escape spreadsheet formulas, and
`predict DIR` without --out writes nothing to the working folder.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.decode import decode
from engine.runs.folder import Run
from tests.bad_inputs.conftest import cli, refused
from tests.conftest import make_class_folders, write_image


def _stats(spec: str | Path, capsys, *extra: str) -> dict:
    res = cli(["data", "stats", str(spec), "--quick", "--json", "--no-progress", *extra], capsys)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    return json.loads(res.out)


def _csv_dataset(root: Path, cells: list[str], header: str = "filename,label") -> Path:
    for i in range(len(cells)):
        write_image(root / f"img{i}.png", seed=i)
    body = "".join(f"img{i}.png,{c}\n" for i, c in enumerate(cells))
    (root / "labels.csv").write_text(f"{header}\n{body}")
    return root / "labels.csv"


MISSING_CELLS = ["nan", "NaN", "NAN", "", "  ", '""']


@pytest.mark.parametrize("missing", MISSING_CELLS, ids=["nan", "NaN", "NAN", "empty", "spaces", "quoted empty"])
def test_a_missing_label_cell_is_unlabelled_not_a_class(tmp_path: Path, missing: str, capsys, jail):
    cells = ["cat", "dog", missing, "cat", "dog", missing, "cat"]
    spec = _csv_dataset(tmp_path / "pets", cells)
    jail.seal()
    stats = _stats(spec, capsys)
    assert stats["classes"] == ["cat", "dog"] and stats["task"] == "binary"
    assert stats["unlabelled"] == 2 and stats["num_images"] == 5
    assert stats["class_counts"] == {"cat": 3, "dog": 2}
    assert any("Left out 2 unlabelled images" in n for n in stats["notes"])


def test_unlabelled_images_are_named_in_the_text_stats(tmp_path: Path, capsys):
    spec = _csv_dataset(tmp_path / "pets", ["cat", "dog", "nan", "cat", "dog"])
    res = cli(["data", "stats", str(spec), "--quick", "--no-progress"], capsys)
    assert res.code == 0
    assert "unlabelled 1 images (label empty or NaN; left out of training and metrics)" in res.out


def test_unlabelled_images_stay_out_of_the_decoded_dataset_and_its_splits(tmp_path: Path, capsys):
    from engine.data import open_dataset

    spec = _csv_dataset(tmp_path / "pets", ["cat", "dog", "nan", "cat", "dog", "", "cat", "dog"] * 3)
    ds = open_dataset(str(spec), image_size=8)
    assert len(ds.source) == 18 and ds.source.unlabelled == 6
    assert sorted(ds.source.classes) == ["cat", "dog"]
    assert sum(len(v) for v in ds.splits.values()) == 18


def test_every_label_missing_is_one_sentence(tmp_path: Path, capsys, jail):
    spec = _csv_dataset(tmp_path / "pets", ["nan", "", "NaN"])
    jail.seal()
    refused(cli(["data", "stats", str(spec), "--quick", "--no-progress"], capsys), "'labels.csv'", "empty or NaN")


def test_a_nan_cell_in_a_multilabel_table_is_unlabelled_while_an_empty_cell_means_none(tmp_path: Path, capsys):
    spec = _csv_dataset(tmp_path / "tags", ["sky sea", "nan", "", "sea", "sky"], header="filename,labels")
    stats = _stats(spec, capsys)
    assert stats["task"] == "multilabel" and stats["classes"] == ["sea", "sky"]
    assert stats["unlabelled"] == 1 and stats["num_images"] == 4
    assert stats["multilabel"]["no_label_images"] == 1


def _npz(path: Path, labels: np.ndarray, **extra) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
    np.savez(path, images=images, labels=labels, **extra)
    return path


NPZ_NAN = {
    "float ids": (np.array([0, 1, np.nan, 1, 0, np.nan]), 2, {"0": 2, "1": 2}),
    "float ids, one NaN": (np.array([2.0, 0, 1, np.nan, 2, 0]), 1, {"0": 2, "1": 1, "2": 2}),
    "float32 ids": (np.array([0, 1, np.nan, 1], np.float32), 1, {"0": 1, "1": 2}),
    "(N,1) float ids": (np.array([[0], [1], [np.nan], [1]]), 1, {"0": 1, "1": 2}),
}


@pytest.mark.parametrize("labels, unlabelled, counts", list(NPZ_NAN.values()), ids=list(NPZ_NAN))
def test_nan_labels_in_an_npz_are_unlabelled(tmp_path: Path, labels, unlabelled, counts, capsys, jail):
    path = _npz(tmp_path / "set.npz", labels)
    jail.seal()
    stats = _stats(path, capsys)
    assert stats["unlabelled"] == unlabelled and stats["class_counts"] == counts
    assert "nan" not in stats["classes"] and stats["task"] != "multilabel"


def test_nan_labels_in_an_npz_keep_images_and_labels_aligned(tmp_path: Path):
    from engine.data import open_dataset

    labels = np.array([0, 1, np.nan, 1, 0, np.nan, 1, 0] * 3)
    images = np.zeros((len(labels), 8, 8), np.uint8)
    images[:, 0, 0] = np.where(np.isnan(labels), 7, labels * 200)  # pixel (0, 0) tells the label
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    ds = open_dataset(str(tmp_path / "set.npz"), image_size=8)
    pix = np.asarray(ds.images)[:, 0, 0, 0]
    assert len(ds.source) == 18 and ds.source.unlabelled == 6
    assert (pix == np.asarray(ds.source.labels) * 200).all()


def test_all_nan_labels_in_an_npz_is_one_sentence(tmp_path: Path, capsys, jail):
    path = _npz(tmp_path / "set.npz", np.full(4, np.nan))
    jail.seal()
    refused(cli(["data", "stats", str(path), "--quick", "--no-progress"], capsys), "'set.npz'", "NaN")


COLUMN = {
    "int64": np.array([[0], [1], [2], [1]], np.int64),
    "uint8": np.array([[0], [1], [2], [1]], np.uint8),
    "int32": np.array([[3], [1], [3], [1]], np.int32),
    "bool": np.array([[True], [False], [True], [False]]),
}


@pytest.mark.parametrize("labels", list(COLUMN.values()), ids=list(COLUMN))
def test_an_n_by_1_column_of_class_ids_is_single_label(tmp_path: Path, labels, capsys):
    stats = _stats(_npz(tmp_path / "set.npz", labels), capsys)
    assert stats["task"] in ("binary", "multiclass") and len(stats["classes"]) == len(np.unique(labels))
    assert sum(stats["class_counts"].values()) == 4


def test_an_n_by_2_column_is_still_multilabel(tmp_path: Path, capsys):
    stats = _stats(_npz(tmp_path / "set.npz", np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.uint8)), capsys)
    assert stats["task"] == "multilabel"


# --- trees: what is left out is said -------------------------------------------------------------------


@pytest.mark.parametrize("loose", [1, 3])
def test_images_at_the_root_of_class_folders_are_named_as_such(tmp_path: Path, loose: int, capsys, jail):
    root = make_class_folders(tmp_path / "faces", {"a": 2, "b": 2})
    for i in range(loose):
        write_image(root / f"stray{i}.png", seed=90 + i)
    jail.seal()
    stats = _stats(root, capsys)
    assert stats["num_images"] == 4
    what = "1 image" if loose == 1 else f"{loose} images"
    assert any(
        n.startswith(f"Left out {what} lying outside any class folder (e.g. 'stray0.png')") for n in stats["notes"]
    )
    assert not any("not images by their extension" in n for n in stats["notes"])


@pytest.mark.parametrize("split", [None, "train"])
def test_an_empty_class_folder_is_noted(tmp_path: Path, split: str | None, capsys):
    root = make_class_folders(tmp_path / "faces", {"a": 2, "b": 2}, split=split)
    if split:
        make_class_folders(tmp_path / "faces", {"a": 1, "b": 1}, split="val")
    base = root / split if split else root
    (base / "zebra").mkdir()
    stats = _stats(tmp_path / "faces", capsys)
    assert stats["classes"] == ["a", "b"]
    where = f"{split}/zebra" if split else "zebra"
    assert f"Left out 1 empty class folder (no images): '{where}'." in stats["notes"]


TEACHABLE = {
    "Teachable Machine labels.txt": ("labels.txt", "0 cat\n1 dog\n"),
    "label list one per class": ("labels.txt", "cat\ndog\n"),
    "classes.csv": ("classes.csv", "id,name\n0,cat\n1,dog\n"),
}


@pytest.mark.parametrize("name, text", list(TEACHABLE.values()), ids=list(TEACHABLE))
def test_a_class_list_beside_class_folders_leaves_the_folders_read(tmp_path: Path, name: str, text: str, capsys, jail):
    root = tmp_path / "pets"
    for cls, n in (("cat", 3), ("dog", 2)):  # named like photos, so no class id ('0', '1') names an image
        for i in range(n):
            write_image(root / cls / f"{cls}_photo_{i}.png", seed=i + 10 * len(cls))
    (root / name).write_text(text)
    jail.seal()
    stats = _stats(root, capsys)
    assert stats["classes"] == ["cat", "dog"] and stats["class_counts"] == {"cat": 3, "dog": 2}
    assert stats["notes"][0].startswith(
        f"Read the class folders and set '{name}' aside: it does not label these images"
    )
    assert not any(name in n for n in stats["notes"][1:])  # not also listed as an ignored file


def test_a_table_that_names_the_images_beside_class_folders_still_has_its_say(tmp_path: Path, capsys, jail):
    root = make_class_folders(tmp_path / "pets", {"cat": 2, "dog": 2})
    rows = [
        f"{p.relative_to(root).as_posix()},{'x' if i < 2 else 'y'}" for i, p in enumerate(sorted(root.rglob("*.png")))
    ]
    (root / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    stats = _stats(root, capsys)
    assert stats["classes"] == ["x", "y"]  # the table labels these images: it wins, as before


# --- noise on stderr ------------------------------------------------------------------------------------


def _float_tiff(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.float32), "F").save(buf, format="TIFF")
    return buf.getvalue()


FLOATS = {
    "all NaN": np.full((6, 6), np.nan),
    "some NaN": np.where(np.eye(6) > 0, np.nan, np.arange(36.0).reshape(6, 6)),
    "+inf": np.where(np.eye(6) > 0, np.inf, 1.0),
    "-inf and +inf": np.where(np.eye(6) > 0, np.inf, -np.inf),
    "constant": np.full((6, 6), 3.5),
}


@pytest.mark.parametrize("values", list(FLOATS.values()), ids=list(FLOATS))
def test_a_float_tiff_with_nan_or_inf_decodes_without_warnings(values: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small, header = decode(_float_tiff(values), "x.tif", size=4, channels=1)
        arr, _ = decode(_float_tiff(values), "x.tif", channels=1)
    assert header.mode == "F" and small.shape == (4, 4, 1) and arr.shape == (6, 6, 1)
    finite = np.isfinite(values)
    if finite.any() and np.ptp(values[finite]) > 0:  # the finite range spans 0..255; NaN/inf sit at the bottom
        assert arr[..., 0][finite].min() == 0 and arr[..., 0][finite].max() == 255
    assert (arr[..., 0][~finite] == 0).all()


YAML_MISTAKES = {
    "unclosed list": ("epochs: 3\nlr: [1, 2\nbatch_size: 4\n", "line 3"),
    "bad indent": ("epochs: 3\n  lr: 0.1\n", "line 2"),
    "tab indent": ("epochs: 3\n\tlr: 0.1\n", "line 2"),
    "python tag": ("epochs: !!python/object:os.system 1\n", "line 1"),
    "unclosed quote": ('name: "abc\n', "line 2"),
}


@pytest.mark.parametrize("text, where", list(YAML_MISTAKES.values()), ids=list(YAML_MISTAKES))
def test_a_yaml_mistake_is_one_sentence_with_line_and_column(tmp_path: Path, text: str, where: str, capsys, jail):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    jail.seal()
    refused(cli(["train", "--config", str(path)], capsys), "c.yaml", "is not valid YAML", where, "column")


def test_a_json_mistake_is_one_sentence_with_line_and_column(tmp_path: Path, capsys, jail):
    path = tmp_path / "c.json"
    path.write_text('{"epochs": 3,\n "lr": }\n')
    jail.seal()
    refused(cli(["train", "--config", str(path)], capsys), "c.json", "is not valid JSON", "line 2, column 8")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, capsys, jail):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1024
    jail.seal()
    line = refused(cli(["train", "--config", str(path)], capsys), "bomb.yaml", "10,000 YAML nodes")
    assert "LOUPE_MAX_YAML_NODES" in line


def test_a_huge_config_value_is_echoed_as_an_excerpt(tmp_path: Path, capsys, jail):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: " + "x" * 200_000 + "\n")
    jail.seal()
    line = refused(cli(["train", "--config", str(path)], capsys), "'optimizer'", "...")
    assert len(line) < 300


# --- predictions CSV ------------------------------------------------------------------------------------


FORMULAS = ["=1+1", "+cmd", "-2+3", "@SUM(A1)"]


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "uploads"
    for i, start in enumerate(FORMULAS):
        write_image(root / f"{start}.png", seed=i)
    write_image(root / "plain.png", seed=9)
    return root


@pytest.mark.parametrize("start", FORMULAS)
def test_predictions_csv_escapes_spreadsheet_formulas(digits_run: Run, hostile_folder: Path, tmp_path, start, capsys):
    out = tmp_path / "data" / "out.csv"
    res = cli(["predict", str(digits_run.path), str(hostile_folder), "--out", str(out), "--no-progress"], capsys)
    assert res.code == 0, res.err
    files = [r["file"] for r in csv.DictReader(out.open())]
    assert f"'{start}.png" in files and "plain.png" in files
    assert not any(f.startswith(("=", "+", "-", "@")) for f in files)


def test_predict_a_folder_without_out_prints_the_csv_and_writes_nothing(
    digits_run: Run, hostile_folder: Path, capsys, jail
):
    jail.seal()
    res = cli(["predict", str(digits_run.path), str(hostile_folder), "--no-progress"], capsys)
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert len(rows) == 5 and {r["file"] for r in rows} >= {"plain.png", "'=1+1.png"}

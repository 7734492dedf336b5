"""File-tree datasets: class folders (with optional split folders) and numbered images + a label file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from engine.data.decode import is_image_name
from engine.data.labels_file import LABELS_FILE
from engine.data.source import TEST, TRAIN, UNASSIGNED, VAL, Source, fingerprint
from engine.errors import DatasetError, excerpt
from engine.files import FileRefused, read_regular

SPLIT_DIRS = {
    "train": TRAIN,
    "training": TRAIN,
    "val": VAL,
    "valid": VAL,
    "validation": VAL,
    "test": TEST,
    "testing": TEST,
}
IGNORED_DIRS = {"__MACOSX", "__pycache__"}
#: a folder of these names (any case) beside the class folders holds the unlabelled pool, never a class
UNLABELLED_DIRS = {"unlabeled", "unlabelled"}
#: label-file lines that mean "no label given" (stripped): the image joins the unlabelled pool
UNLABELLED_LINES = frozenset({"", "-1"})
#: label files and CSV tables larger than this are refused before reading (100 MiB holds ~4M rows)
MAX_TABLE_BYTES = 100 * 1024 * 1024
#: class folders nested deeper than this are refused: no real dataset needs it, and a walk must end
MAX_DEPTH = 64


class LabelsDoNotFit(DatasetError):
    """A label file or table that does not describe the images beside it (wrong count, names no file).

    Beside class folders such a file is most likely unrelated (Teachable Machine's class list, a
    classes.csv), so the class folders are read instead; anywhere else it is the error shown."""


def natural_key(name: str) -> list:
    """Sort 'img2' before 'img10': numbered files must line up with the label file's lines."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_DIRS


def list_dir(path: Path) -> tuple[list[str], list[str]]:
    """(sub-folders, files) of a folder, hidden entries left out, naturally sorted."""
    dirs, files = [], []
    try:
        entries = list(os.scandir(path))
    except OSError as e:
        raise DatasetError(
            f"Cannot read the folder '{path}' ({e.strerror}); check that it exists and is readable."
        ) from None
    for entry in entries:
        if not _visible(entry.name):
            continue
        try:
            (dirs if entry.is_dir() else files).append(entry.name)
        except OSError:
            files.append(entry.name)
    return sorted(dirs, key=natural_key), sorted(files, key=natural_key)


def walk_images(root: Path) -> tuple[list[str], list[str]]:
    """All image files under `root` (relative paths) and the other files found, following symlinks.

    Symlinked folders are followed (datasets are often assembled from links) but a folder reached a
    second time by its device/inode is a loop, which would otherwise walk forever.
    """
    images, others = [], []
    seen: dict[tuple[int, int], Path] = {}

    def visit(folder: Path, rel: str) -> None:
        if rel.count("/") > MAX_DEPTH:
            raise DatasetError(
                f"The folder '{excerpt(str(root / rel), 80)}' is nested more than {MAX_DEPTH} folders deep; "
                "flatten the dataset (images in one folder per class)."
            )
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise DatasetError(
                f"The folder '{folder}' is a symlink loop back to '{seen[key]}'; remove the link and try again."
            )
        seen[key] = folder
        dirs, files = list_dir(folder)
        for f in files:
            (images if is_image_name(f) else others).append(f"{rel}{f}")
        for d in dirs:
            visit(folder / d, f"{rel}{d}/")
        del seen[key]  # a folder linked twice from different places is fine; only a cycle is a loop

    visit(root, "")
    return images, others


def _count(n: int, noun: str) -> str:
    """'1 image', '3 images': notes read as sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ignored_note(others: list[str]) -> list[str]:
    if not others:
        return []
    return [f"Ignored {len(others)} files that are not images by their extension (e.g. {excerpt(others[0])})."]


def _loose_note(loose_images: list[str]) -> list[str]:
    """Images lying beside the class folders rather than in one: they have no class, so they are left out."""
    if not loose_images:
        return []
    return [
        f"Left out {_count(len(loose_images), 'image')} lying outside any class folder (e.g. {excerpt(loose_images[0])}); "
        "move each into the folder of its class to use it."
    ]


def _empty_note(empty: list[str]) -> list[str]:
    if not empty:
        return []
    shown = ", ".join(excerpt(e) for e in empty[:5]) + (" ..." if len(empty) > 5 else "")
    return [f"Left out {_count(len(empty), 'empty class folder')} (no images): {shown}."]


def file_stats(root: Path, files: list[str]) -> list[tuple[str, int, int]]:
    """(name, size, mtime) per file for the fingerprint; plain strings, since 100k Path objects cost seconds."""
    base = str(root)
    out = []
    for f in files:
        try:
            st = os.stat(os.path.join(base, f))
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, -1, 0))  # reported as unreadable by the scan
    return out


def is_class_folder_tree(root: Path) -> bool:
    dirs, _ = list_dir(root)
    return bool(dirs)


def load_class_folders(root: Path, spec: str, set_aside: str | None = None) -> Source:
    """`root/<class>/*.jpg`, or `root/{train,val,test}/<class>/*.jpg` when split folders exist.

    `set_aside` names a root file already explained in a note (a label file that does not fit)."""
    dirs, root_files = list_dir(root)
    split_dirs = {d: SPLIT_DIRS[d.lower()] for d in dirs if d.lower() in SPLIT_DIRS}
    notes: list[str] = []
    pool: list[str] = []
    if split_dirs:
        for d in dirs:  # root/unlabeled beside train/ val/ test/ is the pool too
            if d.lower() in UNLABELLED_DIRS:
                pool += [f"{d}/{i}" for i in walk_images(root / d)[0]]
        if len(split_dirs) < len(dirs) - sum(d.lower() in UNLABELLED_DIRS for d in dirs):
            others = [d for d in dirs if d not in split_dirs and d.lower() not in UNLABELLED_DIRS]
            notes.append(f"Used the split folders {sorted(split_dirs)} and ignored the other folders {others[:5]}.")
        parts = [(root / d, f"{d}/", code) for d, code in split_dirs.items()]
    else:
        parts = [(root, "", UNASSIGNED)]
    files: list[str] = []
    class_of: list[str] = []
    split_of: list[int] = []
    others_all: list[str] = []
    loose_images: list[str] = []
    empty: list[str] = []
    for folder, prefix, code in parts:
        class_dirs, loose = list_dir(folder)
        if split_dirs and not class_dirs:
            raise DatasetError(
                f"The split folder '{folder}' holds no class folders; put its images in one folder per class."
            )
        others_all += [
            f"{prefix}{f}" for f in loose if not is_image_name(f) and f"{prefix}{f}" not in (set_aside, LABELS_FILE)
        ]
        loose_images += [f"{prefix}{f}" for f in loose if is_image_name(f)]
        for d in [d for d in class_dirs if d.lower() in UNLABELLED_DIRS]:
            pool += [f"{prefix}{d}/{i}" for i in walk_images(folder / d)[0]]
        for cls in [d for d in class_dirs if d.lower() not in UNLABELLED_DIRS]:
            images, others = walk_images(folder / cls)
            if not images:
                empty.append(f"{prefix}{cls}")
            others_all += [f"{prefix}{cls}/{o}" for o in others]
            files += [f"{prefix}{cls}/{i}" for i in images]
            class_of += [cls] * len(images)
            split_of += [code] * len(images)
    if not files:
        raise DatasetError(
            f"No images found in the class folders under '{root}' (looked for .jpg, .jpeg, .png, .bmp, .gif, .webp, .tif)."
        )
    classes = sorted(set(class_of), key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in class_of], dtype=np.int64)
    notes += _loose_note(loose_images) + _empty_note(empty) + _ignored_note(others_all) + pool_note(len(pool))
    splits = np.array(split_of, dtype=np.int8) if split_dirs else None
    return Source(
        spec=spec,
        name=root.name,
        kind="folder",
        classes=classes,
        labels=labels,
        multilabel=False,
        root=root,
        files=files,
        split_of=splits,
        notes=notes,
        fingerprint=fingerprint("folder", file_stats(root, files), classes, labels, splits),
        unlabelled=len(pool),
        pool_files=pool,
    )


def pool_note(count: int) -> list[str]:
    """The note for images found without a label (an `unlabeled/` folder, a `-1` or empty label line)."""
    if not count:
        return []
    return [
        f"Found {_count(count, 'unlabelled image')} (the unlabelled pool): kept out of training and metrics; label "
        "them in the label queue or train with pseudo-labels."
    ]


def find_label_file(root: Path) -> Path | None:
    """A `label*.txt` beside the images (the '100k faces in a zip' format)."""
    _, files = list_dir(root)
    found = [f for f in files if f.lower().startswith("label") and f.lower().endswith(".txt")]
    if len(found) > 1:
        raise DatasetError(f"'{root}' holds several label files {found}; keep exactly one.")
    return root / found[0] if found else None


def parse_label_lines(path: Path) -> list[str]:
    """One label per line, multi-token lines refused. A blank line comes back as "" (an unlabelled image:
    `UNLABELLED_LINES`); `load_label_file` drops trailing blank lines beyond the image count."""
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise DatasetError(
            f"The label file '{path.name}' is {size / 2**20:.0f} MB, over the {MAX_TABLE_BYTES // 2**20} MB limit; check it is a label file."
        )
    try:
        text = read_regular(path, MAX_TABLE_BYTES, "the table size limit").decode("utf-8-sig")
    except FileRefused as e:
        raise DatasetError(f"Cannot use the label file: {e}.") from None
    except UnicodeDecodeError:
        raise DatasetError(
            f"The label file '{path.name}' is not UTF-8 text; save it as plain text, one label per line."
        ) from None
    lines = text.splitlines()
    labels = []
    for n, line in enumerate(lines, start=1):
        label = line.strip()
        if len(label.split()) > 1 or "," in label:
            raise DatasetError(
                f"Line {n} of '{path.name}' holds {excerpt(label, 40)}, which is not one label; "
                "use one label per line (for several labels per image use a CSV)."
            )
        labels.append(label)
    return labels


def sort_labels(values: list[str]) -> list[str]:
    """Class names in index order: numerically when all labels are integers ('0','1'), else naturally."""
    unique = set(values)
    if all(re.fullmatch(r"-?\d+", v) for v in unique):
        return sorted(unique, key=int)
    return sorted(unique, key=natural_key)


def load_label_file(root: Path, label_file: Path, spec: str) -> Source:
    images, others = walk_images(root)
    if not images:
        raise DatasetError(f"'{root}' holds the label file '{label_file.name}' but no images.")
    labels_text = parse_label_lines(label_file)
    while len(labels_text) > len(images) and not labels_text[-1]:
        labels_text.pop()  # a trailing blank line is the file's end, unless it is an image's (empty) label
    if len(labels_text) != len(images):
        raise LabelsDoNotFit(
            f"The label file '{label_file.name}' has {len(labels_text)} labels but '{root.name}' holds "
            f"{len(images)} images; it needs exactly one line per image, in file-name order."
        )
    # natural order of the full relative path: 'img2.png' before 'img10.png'
    images.sort(key=natural_key)
    missing = set(UNLABELLED_LINES)
    if set(labels_text) - missing == {"1"}:
        missing.discard("-1")  # -1/1 is the signed binary convention: there -1 is a class
    pool = [f for f, v in zip(images, labels_text) if v in missing]
    images = [f for f, v in zip(images, labels_text) if v not in missing]
    labels_text = [v for v in labels_text if v not in missing]
    if not images:
        raise DatasetError(f"Every line of '{label_file.name}' is empty or -1; give each image its label.")
    classes = sort_labels(labels_text)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in labels_text], dtype=np.int64)
    others = [o for o in others if (root / o) != label_file and o != LABELS_FILE]
    return Source(
        spec=spec,
        name=root.name,
        kind="labelfile",
        classes=classes,
        labels=labels,
        multilabel=False,
        root=root,
        files=images,
        notes=[f"Labels read from '{label_file.name}', matched to images in file-name order."]
        + _ignored_note(others)
        + pool_note(len(pool)),
        fingerprint=fingerprint("labelfile", file_stats(root, images), labels_text),
        unlabelled=len(pool),
        pool_files=pool,
    )

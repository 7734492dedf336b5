"""Turn a dataset spec string (ARCHITECTURE.md, contract 1) into a `Source`, detecting the format."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.data.hierarchy import HIERARCHY_FILE, read_hierarchy_file
from engine.data.hierarchy import check_task as check_hierarchy_task
from engine.data.labels_file import LABELS_FILE, apply_labels
from engine.data.source import Source
from engine.data.sources.folders import (
    LabelsDoNotFit,
    find_label_file,
    is_class_folder_tree,
    list_dir,
    load_class_folders,
    load_label_file,
)
from engine.data.sources.tables import load_csv, load_npz
from engine.errors import DatasetError, excerpt

LOOKED_FOR = (
    "class folders (root/<class>/*.jpg, optionally under train/ val/ test/), "
    "images with a label*.txt file, a .csv of filename,labels, or a .npz of images and labels"
)


def resolve_source(spec: str, seed: int = 0) -> Source:
    """Find out what `spec` names and read its index (file list and labels); decodes no pixels."""
    spec = str(spec).strip()
    if not spec:
        raise DatasetError(
            "No dataset given; name a built-in (e.g. builtin:fashion-mnist), a folder, a .zip, a .csv or a .npz."
        )
    if spec.startswith("builtin:"):
        from engine.data.sources.builtin import load_builtin

        return load_builtin(spec.split(":", 1)[1], seed=seed)
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        raise DatasetError(
            f"The dataset path '{spec}' does not exist; check the spelling, or use a built-in such as builtin:fashion-mnist."
        )
    source = _resolve_path(path, spec)
    if source.home is None and source.kind != "npz":
        source.home = path.parent if path.is_file() and path.suffix.lower() == ".csv" else source.home or path
    source = apply_labels(source)
    _check_classes(source)
    _attach_hierarchy(source, path)
    return source


def _attach_hierarchy(source: Source, path: Path) -> None:
    """Two-level labels from a `hierarchy.json` beside the data: in the named folder (or the zip's), next to
    the named CSV or .npz, or in the folder the images were found in. A table's own coarse column wins; the file is
    then set aside with a note."""
    places = [path] if path.is_dir() else [path.parent] if path.suffix.lower() in (".csv", ".npz") else []
    if source.root is not None:  # a zip's extracted folder, or the folder a table's images are in
        places.append(source.root)
    found = next((p / HIERARCHY_FILE for p in dict.fromkeys(places) if (p / HIERARCHY_FILE).is_file()), None)
    if found is not None and source.hierarchy is not None:
        source.notes.append(f"Set '{HIERARCHY_FILE}' aside: {source.hierarchy.origin} gives the coarse classes.")
    elif found is not None:
        hierarchy = read_hierarchy_file(found, source.classes)
        check_hierarchy_task(hierarchy, source.multilabel, len(source.classes))
        source.hierarchy = hierarchy
    if source.hierarchy is not None:
        source.notes.append(source.hierarchy.note())


def _resolve_path(path: Path, spec: str) -> Source:
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".zip":
            from engine.data.sources.archive import extract_zip

            root = extract_zip(path)
            source = _resolve_folder(root, spec)
            if source.kind != "npz":
                source.home = root  # labels given in Loupe live beside the extracted copy, never in the .zip
            return source
        if suffix == ".csv":
            return load_csv(path, spec)
        if suffix == ".npz":
            return load_npz(path, spec)
        raise DatasetError(f"'{path.name}' is not a dataset; expected {LOOKED_FOR}, or a .zip holding one.")
    return _resolve_folder(path, spec)


def _resolve_folder(root: Path, spec: str) -> Source:
    """The dataset in a folder: a label file, then one table, then a lone `.npz`, then class folders.

    When the folder holds sub-folders, a label file or table beside them is used only if it fits (e.g.
    Teachable Machine's `labels.txt` of `0 cat` lines is a class list, not one label per image): otherwise
    the class folders are read, if there are at least two, and a note says which file was set aside.
    """
    dirs, files = list_dir(root)
    if not dirs and not files:
        raise DatasetError(f"The folder '{root}' is empty; expected {LOOKED_FOR}.")
    beside_classes = bool(dirs)  # a table that does not fit falls back to these folders only if they are classes
    label_file = find_label_file(root)
    if label_file is not None:
        # beside class folders, a label file that cannot be read as one label per image is not about them
        return _table_or_folders(root, spec, label_file, beside_classes, load_label_file, DatasetError)
    csvs = [f for f in files if f.lower().endswith(".csv") and f != LABELS_FILE]  # Loupe's own labels are no table
    if len(csvs) == 1:
        return _table_or_folders(
            root, spec, root / csvs[0], beside_classes, lambda _r, path, s: load_csv(path, s), LabelsDoNotFit
        )
    if len(csvs) > 1:
        raise DatasetError(
            f"The folder '{root}' holds several tables {csvs[:4]}; name the one to use (path/to/labels.csv)."
        )
    npzs = [f for f in files if f.lower().endswith(".npz")]
    if len(npzs) == 1 and not dirs:
        return load_npz(root / npzs[0], spec)
    if is_class_folder_tree(root):
        return load_class_folders(root, spec)
    raise DatasetError(f"No dataset found in '{root}': looked for {LOOKED_FOR}.")


def _table_or_folders(
    root: Path,
    spec: str,
    table: Path,
    beside_classes: bool,
    load: Callable[[Path, Path, str], Source],
    misfit: type[DatasetError],
) -> Source:
    """`load(root, table, spec)`, or, when it does not fit the images and class folders are there, those."""
    try:
        return load(root, table, spec)
    except misfit as err:
        if not beside_classes:
            raise
        why = str(err).split(";")[0].rstrip(".")
        try:
            source = load_class_folders(root, spec, set_aside=table.name)
        except DatasetError:
            raise err from None
        if len(source.classes) < 2:
            raise err from None
    source.notes.insert(
        0,
        f"Read the class folders and set {excerpt(table.name)} aside: it does not label these images ({excerpt(why, 120)[1:-1]}).",
    )
    return source


def _check_classes(source: Source) -> None:
    if len(source) == 0:
        raise DatasetError(f"The dataset '{source.spec}' holds no images.")
    if source.multilabel:
        if len(source.classes) < 1:
            raise DatasetError(f"The dataset '{source.spec}' has no labels.")
        return
    if len(source.classes) < 2:
        only = source.classes[0] if source.classes else "none"
        raise DatasetError(
            f"The dataset '{source.spec}' has a single class ('{only}'); a classifier needs at least two classes."
        )

"""Label tables: a CSV naming image files with their labels, and `.npz` arrays."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np

from engine.data.decode import is_image_name
from engine.data.hierarchy import Hierarchy
from engine.data.hierarchy import check_task as check_hierarchy_task
from engine.data.source import SPLIT_NAMES, UNASSIGNED, Source, fingerprint
from engine.data.sources.folders import MAX_TABLE_BYTES, LabelsDoNotFit, file_stats, list_dir, sort_labels
from engine.env import env_int
from engine.errors import DatasetError, LoupeError, excerpt
from engine.files import FileRefused, open_npz, open_regular

FILE_COLUMNS = ("filename", "file", "file_name", "image", "image_id", "img", "path", "filepath", "id", "name")
LABEL_COLUMNS = ("labels", "label", "tags", "tag", "classes", "class", "category", "target", "y", "fine", "fine_label")
#: a second label column makes a two-level dataset: its cell is the coarse class of the row's (fine) label
COARSE_COLUMNS = ("coarse", "coarse_label", "coarse_class", "superclass", "super_class")
SPLIT_COLUMNS = ("split", "subset", "fold")
LABEL_SEPARATORS = re.compile(r"[ ;|]+")
#: beside a coarse column each image has one fine label, so a space is part of its name ('Ankle boot')
TWO_LEVEL_SEPARATORS = re.compile(r"[;|]+")
MAX_CSV_BYTES = MAX_TABLE_BYTES
#: image rows per table (env LOUPE_MAX_CSV_ROWS): 1M rows parse in ~1 s into ~200 MB of Python lists;
#: the byte cap alone would let ~4M short rows through, several GB once parsed
MAX_CSV_ROWS = 1_000_000
#: label cells that mean "no label given" (compared lower-cased, stripped): the image is unlabelled, not a class
MISSING_LABELS = frozenset({"", "nan"})


def _read_rows(path: Path) -> list[list[str]]:
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise DatasetError(
            f"The table '{path.name}' is {size / 2**20:.0f} MB, over the {MAX_CSV_BYTES // 2**20} MB limit; split it."
        )
    max_rows = env_int("LOUPE_MAX_CSV_ROWS", MAX_CSV_ROWS)
    rows: list[list[str]] = []
    try:
        with (
            open_regular(path, MAX_CSV_BYTES, "the table size limit") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f,  # utf-8-sig drops a BOM; csv handles CRLF
        ):
            for r in csv.reader(f):
                if not any(c.strip() for c in r):
                    continue
                rows.append(r)
                if len(rows) > max_rows + 1:  # + the header; stop reading, do not parse the rest
                    raise DatasetError(
                        f"The table '{path.name}' has more than {max_rows:,} image rows; split the dataset or raise "
                        "LOUPE_MAX_CSV_ROWS."
                    )
    except FileRefused as e:
        raise DatasetError(f"Cannot use the table: {e}.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"The table '{path.name}' is not UTF-8 text; save it as UTF-8 CSV.") from None
    except csv.Error as e:
        raise DatasetError(f"The table '{path.name}' is not valid CSV ({e}).") from None
    if len(rows) < 2:
        raise DatasetError(f"The table '{path.name}' needs a header row and at least one image row.")
    return rows


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _resolve_files(csv_path: Path, names: list[str]) -> tuple[Path, list[str]]:
    """Find the folder the CSV's file names are relative to, and fill in missing extensions.

    Tried in order: the CSV's folder, then each of its sub-folders. Names without an extension
    (Kaggle-style ids) match an image file with the same stem.
    """
    base = csv_path.parent
    candidates = [base] + [base / d for d in list_dir(base)[0]]
    root = next((c for c in candidates if (c / names[0]).is_file()), None)
    if root is None:
        root = next((c for c in candidates if _stems(c).get(names[0])), base)
    stems = _stems(root) if any(not Path(n).suffix for n in names) else {}
    real_root = root.resolve()
    files, missing = [], []
    seen: dict[Path, str] = {}  # resolved file -> the name that first named it
    for n in names:
        rel = n.replace("\\", "/").strip()
        target = (root / rel).resolve()
        if os.path.isabs(rel) or not target.is_relative_to(real_root):
            raise DatasetError(
                f"The table '{csv_path.name}' names '{n}', which lies outside '{root}'; use paths relative to the table's folder."
            )
        if not target.is_file() and not Path(rel).suffix and rel in stems:
            rel = stems[rel]
            target = (root / rel).resolve()
        if not (root / rel).is_file():
            missing.append(n)
        elif target in seen:  # 'a.png', './a.png', 'x/../a.png' and the id 'a' are one image
            raise DatasetError(
                f"The table '{csv_path.name}' names the same image twice ('{seen[target]}' and '{n}'); keep one row per image."
            )
        else:
            seen[target] = n
        files.append(rel)
    if missing:
        raise LabelsDoNotFit(
            f"The table '{csv_path.name}' names {len(missing)} files that do not exist under '{root}' "
            f"(e.g. '{missing[0]}'); fix the paths or remove those rows."
        )
    return root, files


def _stems(folder: Path) -> dict[str, str]:
    return {Path(f).stem: f for f in list_dir(folder)[1] if is_image_name(f)}


def load_csv(path: Path, spec: str) -> Source:
    """`filename,labels` (one label, several separated by space/;/|, or one-hot columns)."""
    rows = _read_rows(path)
    header, body = [h.strip() for h in rows[0]], rows[1:]
    width = len(header)
    for n, r in enumerate(body, start=2):
        if len(r) != width:
            raise DatasetError(
                f"Row {n} of '{path.name}' has {len(r)} columns but the header has {width}; fix that row."
            )
    file_col = _pick(header, FILE_COLUMNS)
    file_col = 0 if file_col is None else file_col
    split_col = _pick(header, SPLIT_COLUMNS)
    coarse_col = _pick(header, COARSE_COLUMNS)
    label_col = _pick(header, LABEL_COLUMNS)
    rest = [i for i in range(width) if i not in (file_col, split_col, coarse_col)]
    if label_col is None and len(rest) == 1:
        label_col = rest[0]
    names = [r[file_col].strip() for r in body]
    seen: dict[str, int] = {}
    for n, name in enumerate(names, start=2):
        if not name:
            raise DatasetError(f"Row {n} of '{path.name}' has an empty file name.")
        if not name.isprintable():  # a NUL byte or a line break cannot be part of a file name Loupe opens
            raise DatasetError(
                f"Row {n} of '{path.name}' has the file name {excerpt(name)}, which holds a control character; "
                "fix the name in the table."
            )
        if name in seen:
            raise DatasetError(
                f"The table '{path.name}' lists '{name}' twice (rows {seen[name]} and {n}); keep one row per image."
            )
        seen[name] = n
    unlabelled_rows: list[int] = []
    pool_names: list[str] = []
    if label_col is not None:
        cells = [r[label_col].strip() for r in body]
        separators = LABEL_SEPARATORS if coarse_col is None else TWO_LEVEL_SEPARATORS
        label_sets = [[t.strip() for t in separators.split(c) if t.strip()] for c in cells]
        several = any(len(ls) > 1 for ls in label_sets)
        # a missing label (NaN, or an empty cell where each image has one label) is no label given: the image
        # is unlabelled and left out; in a multi-label table an empty cell means "none of the labels"
        missing = MISSING_LABELS - {""} if several else MISSING_LABELS
        unlabelled_rows = [i for i, c in enumerate(cells) if c.lower() in missing]
        skipped = set(unlabelled_rows)
        rows = [i + 2 for i in range(len(body)) if i not in skipped]  # the file row number of each row kept
        if unlabelled_rows:
            pool_names = [nm for i, nm in enumerate(names) if i in skipped]
            body = [r for i, r in enumerate(body) if i not in skipped]
            names = [nm for i, nm in enumerate(names) if i not in skipped]
            label_sets = [ls for i, ls in enumerate(label_sets) if i not in skipped]
            if not body:
                raise DatasetError(
                    f"Every label in '{path.name}' is empty or NaN; fill its label column ({excerpt(header[label_col])})."
                )
        classes = sort_labels([t for ls in label_sets for t in ls])
    else:
        rows = list(range(2, len(body) + 2))
        label_sets, classes = _one_hot(path, header, body, rest)
    if not classes:
        raise DatasetError(f"The table '{path.name}' has no labels at all; fill its label column.")
    multilabel = any(len(ls) != 1 for ls in label_sets)
    index = {c: i for i, c in enumerate(classes)}
    if multilabel:
        labels = np.zeros((len(body), len(classes)), dtype=np.uint8)
        for i, ls in enumerate(label_sets):
            labels[i, [index[t] for t in ls]] = 1
    else:
        labels = np.array([index[ls[0]] for ls in label_sets], dtype=np.int64)
    hierarchy = (
        _coarse_column(path, header[coarse_col], label_sets, [r[coarse_col].strip() for r in body], rows, classes)
        if coarse_col is not None
        else None
    )
    # one resolution for labelled and pool rows: the same root, and one image named twice is refused across both
    root, all_files = _resolve_files(path, names + pool_names)
    files, pool = all_files[: len(names)], all_files[len(names) :]
    split_of = _splits(path, body, split_col) if split_col is not None else None
    notes = [f"Labels read from '{path.name}'."] + unlabelled_note(
        len(unlabelled_rows), f"rows {', '.join(str(i + 2) for i in unlabelled_rows[:5])}"
    )
    if multilabel:
        empty = sum(1 for s in label_sets if not s)
        notes.append(f"Multi-label: some images have several labels; {empty} have none.")
    return Source(
        spec=spec,
        name=path.stem if path.parent.name in ("", ".") else path.parent.name,
        kind="csv",
        classes=classes,
        labels=labels,
        multilabel=multilabel,
        root=root,
        files=files,
        split_of=split_of,
        notes=notes,
        fingerprint=fingerprint("csv", file_stats(root, files), classes, labels, split_of),
        unlabelled=len(unlabelled_rows),
        hierarchy=hierarchy,
        pool_files=pool,
    )


def _coarse_column(
    path: Path, column: str, label_sets: list[list[str]], cells: list[str], rows: list[int], classes: list[str]
) -> Hierarchy:
    """The fine -> coarse mapping a CSV's coarse column gives, row by row: every labelled row needs a coarse
    cell, one label, and the coarse class every other row of its fine class gives."""
    several = next((n for n, ls in zip(rows, label_sets) if len(ls) != 1), None)
    if several is not None:
        raise DatasetError(
            f"Row {several} of '{path.name}' has {'no label' if not label_sets[rows.index(several)] else 'several labels'} "
            f"but the table has a coarse column ({excerpt(column)}); two-level labels need exactly one fine label per image."
        )
    mapping: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, ls, cell in zip(rows, label_sets, cells):
        fine = ls[0]
        if not cell:
            raise DatasetError(
                f"Row {n} of '{path.name}' has the label {excerpt(fine)} but an empty {excerpt(column)} cell; "
                "give every labelled row its coarse class."
            )
        if fine in mapping and mapping[fine] != cell:
            raise DatasetError(
                f"Rows {first[fine]} and {n} of '{path.name}' put the class {excerpt(fine)} under two coarse classes "
                f"({excerpt(mapping[fine])} and {excerpt(cell)}); each fine class belongs to one coarse class."
            )
        mapping.setdefault(fine, cell)
        first.setdefault(fine, n)
    origin = f"the column {excerpt(column)} of '{path.name}'"
    hierarchy = Hierarchy.from_mapping(classes, mapping, origin)
    check_hierarchy_task(hierarchy, multilabel=False, n_classes=len(classes))
    return hierarchy


def unlabelled_note(count: int, where: str) -> list[str]:
    """The note every source gives for images left out because their label is missing."""
    if not count:
        return []
    return [
        f"Left out {count} unlabelled images (label empty or NaN; {where}): they are kept out of training and metrics "
        "(the unlabelled pool)."
    ]


def _one_hot(
    path: Path, header: list[str], body: list[list[str]], cols: list[int]
) -> tuple[list[list[str]], list[str]]:
    if not cols:
        raise DatasetError(
            f"The table '{path.name}' has no label column; add a 'labels' column or one 0/1 column per class."
        )
    classes = [header[c] for c in cols]
    sets = []
    for n, r in enumerate(body, start=2):
        s = []
        for c in cols:
            v = r[c].strip()
            if v not in ("0", "1", "0.0", "1.0"):
                raise DatasetError(
                    f"Row {n}, column '{header[c]}' of '{path.name}' holds '{v[:20]}'; one-hot columns take 0 or 1 "
                    "(or name the label column 'labels')."
                )
            if v.startswith("1"):
                s.append(header[c])
        sets.append(s)
    return sets, classes


def _splits(path: Path, body: list[list[str]], col: int) -> np.ndarray:
    codes = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "testing": 2}
    out = np.full(len(body), UNASSIGNED, dtype=np.int8)
    for i, r in enumerate(body):
        v = r[col].strip().lower()
        if v not in codes:
            raise DatasetError(f"Row {i + 2} of '{path.name}' has split '{r[col]}'; use one of {list(SPLIT_NAMES)}.")
        out[i] = codes[v]
    return out


def load_npz(path: Path, spec: str) -> Source:
    """Arrays `images` (N,H,W[,C] uint8) and `labels` (N,) or (N,C) multi-hot; optional `classes`, `split`.

    NaN labels are unlabelled images (left out, counted); an (N, 1) column of class ids is single-label.
    """
    try:
        with open_npz(path) as z:
            keys = set(z.files)
            if not {"images", "labels"} <= keys:
                raise DatasetError(
                    f"'{path.name}' must hold arrays named 'images' and 'labels' (found {sorted(keys)[:8]})."
                )
            shape, dtype = z["images"].shape, z["images"].dtype
            raw = z["labels"]
            given_classes = [str(c) for c in z["classes"]] if "classes" in keys else None
            split = z["split"] if "split" in keys else None
    except FileRefused as e:
        raise DatasetError(f"Cannot use the dataset: {e}.") from None
    except LoupeError:  # a DatasetError above, or an EnvError from the caps
        raise
    except Exception as e:  # zipfile/pickle/format errors all mean the same to the user
        raise DatasetError(
            f"'{path.name}' is not a readable .npz file ({type(e).__name__}: {excerpt(str(e))})."
        ) from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise DatasetError(f"'images' in '{path.name}' is {dtype} {shape}; it must be uint8 (N,H,W) or (N,H,W,1|3).")
    if raw.ndim not in (1, 2) or raw.dtype.kind not in "biufUS":
        raise DatasetError(
            f"'labels' in '{path.name}' is {raw.dtype} {raw.shape}; it must be (N,) class ids or names, or (N,C) 0/1."
        )
    if raw.shape[0] != shape[0]:
        raise DatasetError(f"'{path.name}' has {shape[0]} images but {raw.shape[0]} labels; they must match.")
    if raw.ndim == 2 and raw.shape[1] == 1 and raw.dtype.kind in "biuf":
        raw = raw[:, 0]  # an (N, 1) column of class ids (or 0/1) is one label per image, not one-label multi-label
        raw = raw.astype(np.int64) if raw.dtype.kind in "biu" else raw
    keep = None
    if raw.dtype.kind == "f":
        nan_rows = np.isnan(raw).any(axis=1) if raw.ndim == 2 else np.isnan(raw)
        if np.isinf(raw).any():
            raise DatasetError(f"'labels' in '{path.name}' holds inf; labels are class ids, names or 0/1.")
        if nan_rows.any():
            keep = np.flatnonzero(~nan_rows)
            raw = raw[keep]
            if not len(raw):
                raise DatasetError(f"Every label in '{path.name}' is NaN; give each image its label.")
        if raw.ndim == 1 and np.array_equal(raw, np.round(raw)):
            raw = raw.astype(np.int64)  # 3.0 is class 3, as an integer column would say
    unlabelled = 0 if keep is None else int(shape[0] - len(keep))
    multilabel = raw.ndim == 2
    if multilabel:
        labels = (raw > 0).astype(np.uint8)
        classes = given_classes or [str(i) for i in range(raw.shape[1])]
    else:
        values = [str(v) for v in raw.tolist()]
        if given_classes and all(v.isdigit() and int(v) < len(given_classes) for v in set(values)):
            classes, labels = given_classes, raw.astype(np.int64)
        else:
            classes = sort_labels(values)
            index = {c: i for i, c in enumerate(classes)}
            labels = np.array([index[v] for v in values], dtype=np.int64)
    split_of = None
    if split is not None:
        names = {n: i for i, n in enumerate(SPLIT_NAMES)}
        split = split if keep is None or len(split) != shape[0] else split[keep]
        bad = sorted({str(s) for s in split.tolist()} - set(names))
        if bad:
            raise DatasetError(
                f"'split' in '{path.name}' holds {[excerpt(b) for b in bad[:3]]}; use 'train', 'val' or 'test'."
            )
        split_of = np.array([names[str(s)] for s in split.tolist()], dtype=np.int8)

    def arrays() -> np.ndarray:
        with open_npz(path) as z:
            images = z["images"]
        return images if keep is None else images[keep]

    st = path.stat()
    return Source(
        spec=spec,
        name=path.stem,
        kind="npz",
        classes=classes,
        labels=labels,
        multilabel=multilabel,
        arrays=arrays,
        split_of=split_of,
        fingerprint=fingerprint("npz", str(path.resolve()), st.st_size, st.st_mtime_ns),
        notes=unlabelled_note(unlabelled, "NaN in 'labels'"),
        unlabelled=unlabelled,
    )

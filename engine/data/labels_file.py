"""`labels.loupe.csv`: the labels a person gave in Loupe, kept beside the dataset and applied on top of its own.

Why a file of its own: the user's label file, table or folders are never rewritten (they may be under version
control, shared, or read-only), and every change must stay visible and reversible. So the file is an
append-only log, one row per change, rewritten atomically (temp file + `os.replace`) on each append:

    seq,time,image,label,action,undoes

- `set` gives `image` (the item id: its path relative to the dataset's root) the label `label` (several labels
  of a multi-label dataset separated by `;`; an empty cell there means "present, none of the labels");
- `undo` cancels the change numbered `undoes` (the latest change still in force, or that image's latest).

What is in force is the replay of the log: an image's label is that of its latest `set` not undone. Applying it
(`apply_labels`) relabels labelled images, and moves pool images it labels into the dataset (they always train:
`Source.from_pool`); the source's fingerprint then includes the changes, so no decoded cache or run made from
the old labels is taken for the new ones.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.source import TRAIN, Source, fingerprint
from engine.errors import DatasetError, excerpt
from engine.runs.folder import atomic_write_bytes, now_iso

LABELS_FILE = "labels.loupe.csv"
COLUMNS = ["seq", "time", "image", "label", "action", "undoes"]
#: several labels in one cell (multi-label), as a dataset's CSV may separate them
SEPARATORS = re.compile(r"[;|]+")
#: a log larger than this is refused (100k changes are ~6 MB)
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Change:
    """One row of the log."""

    seq: int
    time: str
    image: str
    label: str
    action: str  # 'set' | 'undo'
    undoes: int | None = None

    def labels(self) -> list[str]:
        """The label names this change sets (none for an empty multi-label cell)."""
        return [t.strip() for t in SEPARATORS.split(self.label) if t.strip()]


def labels_path(source: Source) -> Path | None:
    """Where `source`'s labels file lives, or None when the dataset has no folder of its own (built-ins, `.npz`)."""
    return source.home / LABELS_FILE if source.home is not None else None


def read_changes(path: Path) -> list[Change]:
    """Every row of the log at `path` (none when it does not exist); a damaged row is one sentence naming it."""
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_BYTES:
        raise DatasetError(f"'{path}' is over {MAX_BYTES // 2**20} MB; it cannot be Loupe's labels file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"Cannot read Loupe's labels file '{path}' ({excerpt(str(e), 60)}).") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != COLUMNS:
        raise DatasetError(
            f"'{path}' does not start with the header {','.join(COLUMNS)}; it is not Loupe's labels file."
        )
    out = []
    for n, r in enumerate(rows[1:], start=2):
        try:
            seq, time, image, label, action, undoes = r
            change = Change(int(seq), time, image, label, action, int(undoes) if undoes else None)
        except ValueError:
            raise DatasetError(
                f"Row {n} of '{path}' is damaged ({excerpt(','.join(r), 60)}); fix or remove it."
            ) from None
        if action not in ("set", "undo") or (action == "undo" and change.undoes is None):
            raise DatasetError(f"Row {n} of '{path}' has the action {excerpt(action)}; use set or undo.")
        out.append(change)
    return out


def in_force(changes: list[Change]) -> dict[str, Change]:
    """image -> its latest `set` not undone (the replay of the log)."""
    undone = {c.undoes for c in changes if c.action == "undo"}
    out: dict[str, Change] = {}
    for c in changes:
        if c.action == "set" and c.seq not in undone:
            out[c.image] = c
    return out


def _write(path: Path, changes: list[Change]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for c in changes:
        w.writerow([c.seq, c.time, c.image, c.label, c.action, "" if c.undoes is None else c.undoes])
    atomic_write_bytes(path, buf.getvalue().encode())


def _home_path(source: Source) -> Path:
    path = labels_path(source)
    if path is None:
        raise DatasetError(
            f"The dataset '{source.spec}' has no folder of its own to keep labels in; labelling needs a folder, "
            ".zip or .csv dataset."
        )
    return path


def check_label(source: Source, label: str | list[str]) -> str:
    """`label` as the log's cell, validated against the dataset's classes (one sentence naming them if not)."""
    names = [label] if isinstance(label, str) and not source.multilabel else label
    if isinstance(names, str):
        names = [t.strip() for t in SEPARATORS.split(names) if t.strip()]
    names = [str(n).strip() for n in names]
    unknown = [n for n in names if n not in source.classes]
    shown = ", ".join(source.classes[:12]) + (" ..." if len(source.classes) > 12 else "")
    if unknown:
        raise DatasetError(f"{excerpt(unknown[0])} is not a label of '{source.name}'; use one of: {shown}.")
    if not source.multilabel and len(names) != 1:
        raise DatasetError(f"Give exactly one label for '{source.name}' (one of: {shown}).")
    return ";".join(sorted(set(names), key=source.classes.index))


def set_label(source: Source, image: str, label: str | list[str]) -> Change:
    """Record `label` for `image` (a pool image or a labelled one) in the dataset's labels file; returns the change.

    `source` is the dataset as resolved (with the labels file applied); the image must be one of its items."""
    path = _home_path(source)
    known = set(source.files or []) | set(source.pool_files)
    if image not in known:
        raise DatasetError(
            f"{excerpt(image)} is not an image of '{source.name}'; use its path as `data pool` lists it."
        )
    cell = check_label(source, label)
    changes = read_changes(path)
    change = Change(len(changes) + 1, now_iso(), image, cell, "set")
    _write(path, [*changes, change])
    return change


def undo_label(source: Source, image: str | None = None) -> Change:
    """Undo the latest change still in force (of `image`, when given); returns the undone change."""
    path = _home_path(source)
    changes = read_changes(path)
    undone = {c.undoes for c in changes if c.action == "undo"}
    live = [c for c in changes if c.action == "set" and c.seq not in undone and (image is None or c.image == image)]
    if not live:
        which = f" for {excerpt(image)}" if image else ""
        raise DatasetError(f"There is no label change{which} to undo in '{path.name}'.")
    target = live[-1]
    _write(path, [*changes, Change(len(changes) + 1, now_iso(), target.image, "", "undo", target.seq)])
    return target


def apply_labels(source: Source) -> Source:
    """`source` with its labels file applied: labelled images relabelled, pool images it labels moved in (marked
    `from_pool`, appended after the given items so their indices do not move). Unchanged when there is no file."""
    path = labels_path(source)
    if path is None or not path.is_file() or source.files is None:
        return source
    changes = read_changes(path)
    live = in_force(changes)
    if not live:
        return source
    index = {c: i for i, c in enumerate(source.classes)}
    position = {f: i for i, f in enumerate(source.files)}

    def encode(c: Change) -> np.ndarray | int | None:
        names = c.labels()
        if any(n not in index for n in names) or (not source.multilabel and len(names) != 1):
            return None  # a label the dataset no longer has: ignored, and said in a note
        if source.multilabel:
            row = np.zeros(len(source.classes), np.uint8)
            row[[index[n] for n in names]] = 1
            return row
        return index[names[0]]

    labels = source.labels.copy()
    added_files, added_labels, stale = [], [], 0
    pool = set(source.pool_files)
    for image, c in live.items():
        value = encode(c)
        if value is None:
            stale += 1
        elif image in position:
            labels[position[image]] = value
        elif image in pool:
            added_files.append(image)
            added_labels.append(value)
    relabelled = sum(1 for image in live if image in position)
    strata = source.labels
    if added_files:
        added_array = np.asarray(added_labels, dtype=labels.dtype).reshape(-1, *labels.shape[1:])
        labels = np.concatenate([labels, added_array])
        strata = np.concatenate([strata, added_array])
    split_of = source.split_of
    if split_of is not None and added_files:
        split_of = np.concatenate([split_of, np.full(len(added_files), TRAIN, np.int8)])
    from_pool = np.zeros(len(labels), bool)
    from_pool[len(source.files) :] = True
    notes = [
        f"Applied {LABELS_FILE}: {relabelled} images relabelled, {len(added_files)} pool images labelled "
        "(they train; see the label queue)."
    ]
    if stale:
        notes.append(f"{stale} changes in {LABELS_FILE} name labels the dataset does not have; they were ignored.")
    added = set(added_files)
    return Source(
        spec=source.spec,
        name=source.name,
        kind=source.kind,
        classes=source.classes,
        labels=labels,
        multilabel=source.multilabel,
        root=source.root,
        files=[*source.files, *added_files],
        split_of=split_of,
        fingerprint=fingerprint(source.fingerprint, [(c.seq, c.image, c.label) for c in live.values()]),
        notes=source.notes + notes,
        unlabelled=source.unlabelled - len(added_files),
        pool_files=[f for f in source.pool_files if f not in added],
        home=source.home,
        from_pool=from_pool if added_files else None,
        strata_labels=strata if relabelled else None,
    )

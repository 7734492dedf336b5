"""Two-level labels: each fine class belongs to exactly one coarse class (CIFAR-100's 100 -> 20).

Why a type of its own: the mapping enters from three places (a CSV's second label column, a
`hierarchy.json` beside the data, the run folder's copy) and is used by four (the Dataset page, the
report, the Evaluate page, Predict). Each entry validates it here, once, with a sentence naming the file,
so every later use can trust that every fine class has one coarse class. Training never sees it: models
learn the fine labels; the coarse level is derived from their probabilities (`engine.metrics.hierarchy`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DatasetError, excerpt
from engine.files import FileRefused, read_regular

#: the file that maps fine -> coarse, beside class folders, inside a zip, next to a CSV, and in a run folder
HIERARCHY_FILE = "hierarchy.json"
#: a hierarchy.json is a small mapping; anything larger is not one
MAX_HIERARCHY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Hierarchy:
    """fine class index -> coarse class index, with both name lists in index order.

    `origin` says where the mapping came from ("hierarchy.json", "column 'coarse' of labels.csv"), for notes.
    """

    fine: tuple[str, ...]
    coarse: tuple[str, ...]
    parent: np.ndarray  # (len(fine),) int64: the coarse index of each fine class
    origin: str = HIERARCHY_FILE

    @classmethod
    def from_mapping(
        cls, fine: list[str], mapping: dict[str, str], origin: str, coarse_order: list[str] | None = None
    ) -> Hierarchy:
        """Check that `mapping` gives every fine class one coarse class and names no other class.

        `coarse_order` fixes the coarse indices (the sources sort them as they sort class names); by
        default the coarse classes come in the order of their first fine member.
        """
        missing = [f for f in fine if f not in mapping]
        if missing:
            raise DatasetError(
                f"The class {excerpt(missing[0])} is missing from {origin}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; give every fine class its coarse class."
            )
        unknown = [k for k in mapping if k not in set(fine)]
        if unknown:
            raise DatasetError(
                f"{origin} names {excerpt(unknown[0])}, which is not a class of this dataset; "
                "fix its spelling or remove it."
            )
        for f in fine:
            c = mapping[f]
            if not isinstance(c, str) or not c.strip():
                raise DatasetError(
                    f"{origin} maps {excerpt(f)} to {excerpt(c)}; each coarse class must be a non-empty name."
                )
        order = list(dict.fromkeys(mapping[f].strip() for f in fine)) if coarse_order is None else coarse_order
        if len(order) < 2:
            raise DatasetError(
                f"{origin} puts every class under {excerpt(order[0])}; a coarse level needs at least two coarse classes."
            )
        index = {c: i for i, c in enumerate(order)}
        parent = np.array([index[mapping[f].strip()] for f in fine], dtype=np.int64)
        return cls(tuple(fine), tuple(order), parent, origin)

    def mapping(self) -> dict[str, str]:
        """fine name -> coarse name."""
        return {f: self.coarse[int(p)] for f, p in zip(self.fine, self.parent)}

    def members(self) -> dict[str, list[str]]:
        """coarse name -> its fine classes, both in index order."""
        out: dict[str, list[str]] = {c: [] for c in self.coarse}
        for f, p in zip(self.fine, self.parent):
            out[self.coarse[int(p)]].append(f)
        return out

    def to_json(self) -> dict:
        """What the run folder's hierarchy.json holds: the mapping and the coarse index order."""
        return {"fine_to_coarse": self.mapping(), "coarse": list(self.coarse)}

    def note(self) -> str:
        return (
            f"Two-level labels from {self.origin}: {len(self.fine)} fine classes in {len(self.coarse)} coarse "
            "classes; training uses the fine labels, evaluation reports both levels."
        )


def check_task(hierarchy: Hierarchy, multilabel: bool, n_classes: int) -> None:
    """A coarse level only means something over one fine label per image and more than two classes."""
    if multilabel:
        raise DatasetError(
            f"{hierarchy.origin} gives coarse labels, but the dataset is multi-label; two-level labels need "
            "exactly one fine label per image."
        )
    if n_classes <= 2:
        raise DatasetError(
            f"{hierarchy.origin} gives coarse labels, but the dataset is binary ({n_classes} classes); a coarse "
            "level needs at least three fine classes."
        )


def read_hierarchy_file(path: Path, fine: list[str], coarse_order: list[str] | None = None) -> Hierarchy:
    """`{"fine": "coarse", ...}` from a user's hierarchy.json, or a run folder's `{"fine_to_coarse": ...,
    "coarse": [...]}`; one sentence naming the file for anything else."""
    where = f"'{path.name}'" if path.name == HIERARCHY_FILE else f"'{path}'"
    try:
        raw = read_regular(path, MAX_HIERARCHY_BYTES, "the hierarchy.json size limit")
    except FileRefused as e:
        raise DatasetError(f"Cannot use {where}: {e}.") from None
    except OSError as e:
        raise DatasetError(f"Cannot read {where} ({e.strerror}).") from None
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(
            f'{where} is not valid JSON ({excerpt(str(e), 80)}); write it as {{"fine": "coarse"}}.'
        ) from None
    order = coarse_order
    if isinstance(obj, dict) and isinstance(obj.get("fine_to_coarse"), dict):
        saved = obj.get("coarse")
        if isinstance(saved, list) and all(isinstance(c, str) for c in saved):
            order = saved
        obj = obj["fine_to_coarse"]
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise DatasetError(
            f"{where} must be one JSON object mapping each fine class to its coarse class, e.g. "
            '{"cat": "animal", "car": "vehicle"}.'
        )
    if order is not None and set(order) != {v.strip() for v in obj.values()}:
        raise DatasetError(f"{where} lists coarse classes that do not match its mapping; retrain the run.")
    return Hierarchy.from_mapping(fine, obj, where, order)

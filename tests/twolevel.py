"""Two-level datasets built in tmp_path from real Fashion-MNIST pictures (10 fine classes under tops /
footwear / other), in both entry formats: a CSV with a coarse column, and class folders beside a
hierarchy.json. Shared by the engine, CLI and page tests of the coarse level."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.sources.builtin import load_builtin

#: the mapping the tests expect (written out here, not imported: the engine's copy is under test)
FASHION_COARSE = {
    "T-shirt/top": "tops",
    "Pullover": "tops",
    "Coat": "tops",
    "Shirt": "tops",
    "Sandal": "footwear",
    "Sneaker": "footwear",
    "Ankle boot": "footwear",
    "Trouser": "other",
    "Dress": "other",
    "Bag": "other",
}


def fashion_pictures(per_class: int) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
    """(class names, [(class, 28x28 uint8 picture)]): the first `per_class` official-test pictures of each class."""
    source = load_builtin("fashion-mnist")
    images = source.arrays()
    test = np.flatnonzero(source.split_of == 2)
    out = []
    for c, name in enumerate(source.classes):
        for i in test[source.labels[test] == c][:per_class]:
            out.append((name, np.asarray(images[i])))
    return source.classes, out


def fashion_csv(root: Path, per_class: int = 20, coarse: dict[str, str] | None = None) -> Path:
    """root/images/<n>.png and root/labels.csv of `filename,fine,coarse`; returns the CSV's path."""
    coarse = FASHION_COARSE if coarse is None else coarse
    _, pictures = fashion_pictures(per_class)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = [["filename", "fine", "coarse"]]
    for n, (name, pixels) in enumerate(pictures):
        Image.fromarray(pixels).save(root / "images" / f"{n}.png")
        rows.append([f"images/{n}.png", name, coarse[name]])
    path = root / "labels.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def fashion_folders(root: Path, per_class: int = 8, hierarchy: dict | None = None) -> Path:
    """root/<safe class name>/<n>.png and root/hierarchy.json (fine folder name -> coarse); returns root."""
    _, pictures = fashion_pictures(per_class)
    for n, (name, pixels) in enumerate(pictures):
        folder = root / folder_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{n}.png")
    mapping = {folder_name(f): c for f, c in FASHION_COARSE.items()} if hierarchy is None else hierarchy
    (root / "hierarchy.json").write_text(json.dumps(mapping))
    return root


def folder_name(fine: str) -> str:
    """'T-shirt/top' cannot be a folder name: 'T-shirt-top'."""
    return fine.replace("/", "-")

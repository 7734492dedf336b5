"""A small real multi-label dataset for tests: scikit-image's lfw_subset (100 face photos, then 100 non-face
patches of the same photos, 25x25 grey) as PNG files with a `filename,labels` CSV. The tags are read off the
pictures themselves, so a model can learn them:

- `face`: one of the 100 face photos;
- `bright`: mean brightness above the set's median;
- `contrasty`: pixel standard deviation above the set's median;
- `top-lit`: the upper half brighter than the lower half by more than 0.03.

About a tenth of the images get no tag at all (non-faces that are dark, flat and lit from below): the
"images without labels" of a real multi-label job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TAGS = ("face", "bright", "contrasty", "top-lit")


def tags_of(images: np.ndarray) -> list[list[str]]:
    """The tags of each lfw_subset image (floats in [0, 1]), in TAGS order."""
    mean, std = images.mean(axis=(1, 2)), images.std(axis=(1, 2))
    h = images.shape[1] // 2
    top_lit = images[:, :h].mean(axis=(1, 2)) - images[:, h:].mean(axis=(1, 2)) > 0.03
    out = []
    for i in range(len(images)):
        on = [i < 100, mean[i] > np.median(mean), std[i] > np.median(std), bool(top_lit[i])]
        out.append([t for t, flag in zip(TAGS, on) if flag])
    return out


def make_faces_csv(root: Path, size: int = 32) -> Path:
    """root/images/*.png and root/labels.csv; returns the CSV path (the dataset spec)."""
    from skimage.data import lfw_subset

    images = lfw_subset()
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["filename,labels"]
    for i, (img, tags) in enumerate(zip(images, tags_of(images))):
        name = f"images/lfw{i:03d}.png"
        pil = Image.fromarray(np.round(img * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        pil.save(root / name)
        lines.append(f"{name},{' '.join(tags)}")
    csv = root / "labels.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv

"""The built-in ImageNet model with and without a label subset (issue 16 item 4), on real pet photos.

Photos: Imagenette's English springer class (`../shared/data/imagenette-224.zip`, fast.ai's val split; an
ImageNet subset, so the model may have seen these very photos: compare the two rows, not with published
figures) and scikit-image's `chelsea` (a tabby cat). Per set: top-1 accuracy against the true ImageNet class
(a cat photo counts as right for any of the five domestic cat classes) and the mean confidence of the top
answer, for all 1000 classes and for `--labels dogs-cats`.

    .venv/bin/python bench/bench_subsets.py [--limit 355]
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from common import table  # noqa: F401  (also puts the repo on sys.path)

ZIPS = [Path(__file__).resolve().parents[k] / "shared" / "data" / "imagenette-224.zip" for k in (2, 3)]
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def springers(limit: int) -> list[tuple[str, bytes]]:
    found = [z for z in ZIPS if z.is_file()]
    if not found:
        print(f"note: {ZIPS[0]} is not here; only the cat photo is measured")
        return []
    with zipfile.ZipFile(found[0]) as z:
        names = sorted(n for n in z.namelist() if "/val/english_springer/" in n and n.lower().endswith(".jpeg"))
        return [(n, z.read(n)) for n in names[:limit]]


def chelsea() -> list[tuple[str, bytes]]:
    from PIL import Image
    from skimage.data import chelsea as cat

    buf = io.BytesIO()
    Image.fromarray(cat()).save(buf, format="JPEG", quality=95)
    return [("chelsea.jpg", buf.getvalue())]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=355, help="English springer photos (val split) to use")
    args = p.parse_args()
    from engine.predict.predictor import Predictor

    sets = [
        ("English springer (Imagenette val)", springers(args.limit), {"English springer"}),
        ("chelsea (cat)", chelsea(), CATS),
    ]
    rows = []
    for labels in (None, "dogs-cats"):
        pred = Predictor.from_ref("builtin:imagenet", labels=labels)
        for name, items, right in sets:
            if not items:
                continue
            res = [r for r in pred.predict_bytes(items, top_k=1) if r["ok"]]
            top1 = np.mean([r["label"] in right for r in res])
            conf = np.mean([r["confidence"] for r in res])
            conf_right = np.mean([r["confidence"] for r in res if r["label"] in right] or [float("nan")])
            rows.append([name, labels or "all 1000", len(res), f"{top1:.4f}", f"{conf:.4f}", f"{conf_right:.4f}"])
    heads = ["photos", "labels", "n", "top-1", "mean confidence", "mean confidence when right"]
    print(table(heads, rows))


if __name__ == "__main__":
    main()

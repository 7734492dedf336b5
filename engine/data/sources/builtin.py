"""Built-in datasets: real images that work offline (Fashion-MNIST, scikit-learn digits) and variants.

The variants recreate, with real pictures, the situations Loupe is built for: a confusable binary pair
at 88/12 (where HTER and threshold choice matter), a long-tail 3-class subset, and 2x2 multi-label
mosaics. Every variant is deterministic given the seed; labels are built eagerly (cheap) and pixels
lazily through `Source.arrays`, with in-process caches so the 55 MB of Fashion-MNIST is parsed once.
Cached arrays are returned read-only because they are shared: index or copy them before changing them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from engine.data.hierarchy import Hierarchy
from engine.data.source import TEST, TRAIN, VAL, Source, fingerprint
from engine.errors import DatasetError

BUILTINS: dict[str, str] = {
    "fashion-mnist": "Fashion-MNIST: 70,000 28x28 grayscale clothing images, 10 classes, official train/test split",
    "fashion-binary": "T-shirt/top vs Shirt at about 88/12: an imbalanced, confusable binary task (positive = Shirt)",
    "fashion-longtail": "Sneaker / Sandal / Ankle boot at about 80/12/8: a long-tail 3-class task",
    "fashion-multilabel": "2x2 mosaics (56x56) of Fashion-MNIST items; labels = the classes present (multi-label)",
    "fashion-coarse": "Fashion-MNIST with two-level labels: the 10 classes under tops / footwear / other",
    "digits": "scikit-learn digits: 1,797 8x8 grayscale handwritten digits, 10 classes, no official split",
}

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # Zalando's official mirror
DOWNLOAD_TIMEOUT_S = 5.0
VAL_FRACTION = 0.10
IDX_IMAGES, IDX_LABELS = 2051, 2049  # IDX magic numbers: uint8 data with 3 or 1 dimensions
# independent random streams per purpose, so changing one variant's recipe never shifts another's draws
_STREAM_VAL, _STREAM_SUBSET, _STREAM_MOSAIC = 1, 2, 3

_download_error: str | None = None  # the one download attempt per process, so a failure costs 5 s once


def cache_dir() -> Path:
    return Path(os.environ.get("LOUPE_CACHE_DIR") or "~/.cache/loupe").expanduser()


def _has_all(d: Path) -> bool:
    return all((d / f).is_file() for f in FASHION_FILES)


def _download_fashion(dest: Path) -> None:
    """Fetch the four files from the official mirror (each written to a .part file, then renamed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        if (dest / name).is_file():
            continue
        part = dest / f"{name}.part"
        with urllib.request.urlopen(FASHION_URL + name, timeout=DOWNLOAD_TIMEOUT_S) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(part, dest / name)


def fashion_dir() -> Path:
    """The folder holding the four Fashion-MNIST files: env override or the Debian path, else the cache."""
    global _download_error
    env = os.environ.get("LOUPE_FASHION_MNIST_DIR")
    primary = Path(env).expanduser() if env else FASHION_SYSTEM_DIR
    cached = cache_dir() / "fashion-mnist"
    for d in (primary, cached):
        if _has_all(d):
            return d
    if _download_error is None:
        try:
            _download_fashion(cached)
        except Exception as e:  # no network, timeout, disk: all end in the same advice
            _download_error = f"{type(e).__name__}: {e}"
        if _has_all(cached):
            return cached
    raise DatasetError(
        f"Fashion-MNIST files are missing from {primary} and the download failed ({_download_error}); install the "
        "Debian package (sudo apt-get install dataset-fashion-mnist) or place the four files "
        f"({', '.join(FASHION_FILES)}) in LOUPE_FASHION_MNIST_DIR, as downloading needs network access."
    )


def _stamp(d: Path) -> tuple:
    """(name, size, mtime) of each source file: part of the fingerprint and of the cache keys."""
    return tuple((f, (d / f).stat().st_size, (d / f).stat().st_mtime_ns) for f in FASHION_FILES)


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    bad = f"Fashion-MNIST file {path} is damaged or not an IDX file"
    fix = "reinstall dataset-fashion-mnist or replace the file"
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{bad} ({e}); {fix}.") from e
    header = 4 * (1 + ndim)
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise DatasetError(f"{bad} (wrong magic number); {fix}.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(dims)):
        raise DatasetError(f"{bad} (size does not match its header {dims}); {fix}.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


@lru_cache(maxsize=2)
def _fashion_labels(d: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 labels (train then test) and the official split code of each."""
    train = _read_idx(Path(d, FASHION_FILES[1]), IDX_LABELS, 1)
    test = _read_idx(Path(d, FASHION_FILES[3]), IDX_LABELS, 1)
    labels = np.concatenate([train, test]).astype(np.int64)
    if labels.max(initial=0) >= len(FASHION_CLASSES):
        raise DatasetError(f"Fashion-MNIST labels in {d} go beyond class 9; reinstall dataset-fashion-mnist.")
    official = np.repeat(np.array([TRAIN, TEST], np.int8), [len(train), len(test)])
    labels.setflags(write=False)
    official.setflags(write=False)
    return labels, official


@lru_cache(maxsize=1)
def _fashion_images(d: str, stamp: tuple) -> np.ndarray:
    """All 70,000 images (N, 28, 28) uint8, train then test, in the label files' order."""
    train = _read_idx(Path(d, FASHION_FILES[0]), IDX_IMAGES, 3)
    test = _read_idx(Path(d, FASHION_FILES[2]), IDX_IMAGES, 3)
    images = np.concatenate([train, test])
    if len(images) != len(_fashion_labels(d, stamp)[0]):
        raise DatasetError(f"Fashion-MNIST in {d} has {len(images)} images but a different number of labels.")
    images.setflags(write=False)
    return images


def _carve_val(strata: np.ndarray, official: np.ndarray, seed: int) -> np.ndarray:
    """Move VAL_FRACTION of the train items of each stratum to VAL (the official test stays untouched)."""
    rng = np.random.default_rng([seed, _STREAM_VAL])
    split = official.astype(np.int8)  # a copy
    train = np.flatnonzero(official == TRAIN)
    for s in np.unique(strata[train]):
        members = train[strata[train] == s]
        split[rng.choice(members, int(round(VAL_FRACTION * len(members))), replace=False)] = VAL
    return split


@dataclass
class _Plan:
    """What a Fashion-MNIST variant is, before any pixel is touched."""

    classes: list[str]
    labels: np.ndarray
    split_of: np.ndarray
    params: dict
    notes: list[str]
    build: Callable[[np.ndarray], np.ndarray]  # all 70,000 images -> this variant's images
    multilabel: bool = False
    coarse: dict[str, str] | None = None  # two-level variants: fine class -> coarse class


def _val_note(seed: int, what: str = "stratified", pool: str = "the official train split") -> str:
    return f"val carved from {pool}: {VAL_FRACTION:.0%}, {what}, seed {seed}"


def _plan_full(labels: np.ndarray, official: np.ndarray, seed: int) -> _Plan:
    notes = ["Fashion-MNIST (Zalando): official 60,000 train / 10,000 test split, test kept as is", _val_note(seed)]
    split = _carve_val(labels, official, seed)
    return _Plan(FASHION_CLASSES, labels.copy(), split, {"val": VAL_FRACTION}, notes, lambda x: x)


def _plan_subset(labels: np.ndarray, official: np.ndarray, seed: int, keep: list[int], shares: list[float]) -> _Plan:
    """Keep every item of class keep[0] and seeded random subsets of the others, so that class i makes
    up shares[i] of each official split (and, after stratified carving, of val too)."""
    rng = np.random.default_rng([seed, _STREAM_SUBSET])
    chosen = []
    for s in (TRAIN, TEST):
        majority = np.flatnonzero((official == s) & (labels == keep[0]))
        chosen.append(majority)
        for c, share in zip(keep[1:], shares[1:]):
            pool = np.flatnonzero((official == s) & (labels == c))
            chosen.append(rng.choice(pool, min(len(pool), round(len(majority) * share / shares[0])), replace=False))
    idx = np.sort(np.concatenate(chosen))
    remap = np.full(len(FASHION_CLASSES), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    new_labels = remap[labels[idx]]
    classes = [FASHION_CLASSES[c] for c in keep]
    mix = "/".join(f"{s:.0%}" for s in shares)
    notes = [
        f"{' / '.join(classes)} from Fashion-MNIST at {mix} in each split: every {classes[0]} kept, "
        f"seeded random subsets of the others (seed {seed})",
        _val_note(seed),
    ]
    params = {"keep": keep, "shares": shares, "val": VAL_FRACTION}
    return _Plan(classes, new_labels, _carve_val(new_labels, official[idx], seed), params, notes, lambda x: x[idx])


def _mosaic_plan(
    official: np.ndarray, seed: int, n_train: int = 12000, n_test: int = 2000, p_blank: float = 0.3
) -> np.ndarray:
    """(N, 4) Fashion-MNIST indices of each mosaic's tiles (row-major), -1 for a blank tile.

    Train mosaics use official train items only and test mosaics test items only, so no picture is
    shared between train and test; within a split no item is used twice.
    """
    rng = np.random.default_rng([seed, _STREAM_MOSAIC])
    parts = []
    for s, n in ((TRAIN, n_train), (TEST, n_test)):
        tiles = rng.choice(np.flatnonzero(official == s), 4 * n, replace=False).reshape(n, 4)
        tiles[rng.random((n, 4)) < p_blank] = -1
        parts.append(tiles)
    return np.concatenate(parts)


def _build_mosaics(images: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    n, (h, w) = len(tiles), images.shape[1:]
    flat = tiles.ravel()
    cells = images[np.maximum(flat, 0)]  # (4n, h, w), a copy
    cells[flat < 0] = 0
    return cells.reshape(n, 2, 2, h, w).transpose(0, 1, 3, 2, 4).reshape(n, 2 * h, 2 * w)


def _plan_mosaic(labels: np.ndarray, official: np.ndarray, seed: int) -> _Plan:
    n_train, n_test, p_blank = 12000, 2000, 0.3
    tiles = _mosaic_plan(official, seed, n_train, n_test, p_blank)
    flat = tiles.ravel()
    hot = np.zeros((len(tiles), len(FASHION_CLASSES)), np.uint8)
    hot[np.repeat(np.arange(len(tiles)), 4)[flat >= 0], labels[flat[flat >= 0]]] = 1
    mosaic_official = np.repeat(np.array([TRAIN, TEST], np.int8), [n_train, n_test])
    notes = [
        f"2x2 mosaics (56x56) of Fashion-MNIST items, each tile blank with probability {p_blank}; "
        "labels = the classes present",
        f"{n_train:,} mosaics from official train items, {n_test:,} from test items, none reused (seed {seed})",
        _val_note(seed, "stratified by number of labels", "the train mosaics"),
    ]
    params = {"n_train": n_train, "n_test": n_test, "p_blank": p_blank, "val": VAL_FRACTION}
    split = _carve_val(hot.sum(1), mosaic_official, seed)
    return _Plan(FASHION_CLASSES, hot, split, params, notes, partial(_build_mosaics, tiles=tiles), True)


#: fashion-coarse's second level: what a shop's menu would group (tops, footwear, the rest)
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


def _plan_coarse(labels: np.ndarray, official: np.ndarray, seed: int) -> _Plan:
    """Fashion-MNIST as it is, with each class under a coarse class (the two-level evaluation's real data)."""
    plan = _plan_full(labels, official, seed)
    plan.notes.insert(
        1,
        "coarse classes: tops (T-shirt/top, Pullover, Coat, Shirt), footwear (Sandal, Sneaker, "
        "Ankle boot), other (Trouser, Dress, Bag)",
    )
    plan.params["coarse"] = FASHION_COARSE
    plan.coarse = FASHION_COARSE
    return plan


_PLANS: dict[str, Callable[[np.ndarray, np.ndarray, int], _Plan]] = {
    "fashion-mnist": _plan_full,
    "fashion-binary": partial(_plan_subset, keep=[0, 6], shares=[0.88, 0.12]),
    "fashion-longtail": partial(_plan_subset, keep=[7, 5, 9], shares=[0.80, 0.12, 0.08]),
    "fashion-multilabel": _plan_mosaic,
    "fashion-coarse": _plan_coarse,
}


@lru_cache(maxsize=4)
def _variant_images(name: str, seed: int, d: str, stamp: tuple) -> np.ndarray:
    """A variant's pixels, built once per process (the plan is re-derived: it is cheap and deterministic)."""
    labels, official = _fashion_labels(d, stamp)
    images = _PLANS[name](labels, official, seed).build(_fashion_images(d, stamp))
    images.setflags(write=False)
    return images


def _load_fashion(name: str, seed: int) -> Source:
    d = fashion_dir()
    stamp = _stamp(d)
    labels, official = _fashion_labels(str(d), stamp)
    plan = _PLANS[name](labels, official, seed)
    return Source(
        spec=f"builtin:{name}",
        name=name,
        kind="builtin",
        classes=list(plan.classes),
        labels=plan.labels,
        multilabel=plan.multilabel,
        arrays=partial(_variant_images, name, seed, str(d), stamp),
        split_of=plan.split_of,
        fingerprint=fingerprint(name, seed, plan.params, stamp),
        notes=plan.notes,
        hierarchy=None
        if plan.coarse is None
        else Hierarchy.from_mapping(plan.classes, plan.coarse, f"builtin:{name}", ["tops", "footwear", "other"]),
    )


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, tuple]:
    import sklearn.datasets  # imported here: sklearn takes a second to import

    src = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    stamp = (src.name, src.stat().st_size, src.stat().st_mtime_ns) if src.exists() else ("digits", 0, 0)
    bunch = sklearn.datasets.load_digits()
    images = np.round(bunch.images * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
    images.setflags(write=False)
    return images, bunch.target.astype(np.int64), stamp


def _load_digits(seed: int) -> Source:
    images, labels, stamp = _digits()
    notes = [
        "scikit-learn digits: 1,797 8x8 images, values 0..16 scaled to 0..255",
        "no official split: the train/val/test split is made by the caller",
    ]
    return Source(
        spec="builtin:digits",
        name="digits",
        kind="builtin",
        classes=[str(i) for i in range(10)],
        labels=labels.copy(),
        multilabel=False,
        arrays=lambda: images,
        split_of=None,
        fingerprint=fingerprint("digits", seed, stamp),
        notes=notes,
    )


def load_builtin(name: str, seed: int = 0) -> Source:
    """The built-in dataset `name` (a key of BUILTINS; a `builtin:` prefix is accepted) as a Source."""
    key = name.removeprefix("builtin:")
    if key == "digits":
        return _load_digits(seed)
    if key in _PLANS:
        return _load_fashion(key, seed)
    raise DatasetError(f"Unknown built-in dataset {name!r}; choose one of: {', '.join(BUILTINS)}.")

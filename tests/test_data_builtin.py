"""Built-in datasets: shapes, class mixes, mosaics that match their labels, determinism, offline failures."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.data.source import TEST, TRAIN, VAL
from engine.data.sources import builtin
from engine.data.sources.builtin import BUILTINS, FASHION_CLASSES, FASHION_FILES, FASHION_SYSTEM_DIR, load_builtin
from engine.errors import DatasetError

needs_fashion = pytest.mark.skipif(
    not all((FASHION_SYSTEM_DIR / f).is_file() for f in FASHION_FILES),
    reason=f"Fashion-MNIST not installed in {FASHION_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def _system_fashion(monkeypatch):
    monkeypatch.delenv("LOUPE_FASHION_MNIST_DIR", raising=False)


def split_sizes(src) -> list[int]:
    return [int((src.split_of == s).sum()) for s in (TRAIN, VAL, TEST)]


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_tiny_fashion(d: Path, magic_labels: int = 2049) -> None:
    """A valid miniature Fashion-MNIST: 10 train and 1 test item per class."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 10), ("t10k", 1)):
        labels = np.repeat(np.arange(10), per_class)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", magic_labels, labels)


def test_names_and_unknown():
    assert set(BUILTINS) == {
        "fashion-mnist",
        "fashion-binary",
        "fashion-longtail",
        "fashion-multilabel",
        "fashion-coarse",
        "digits",
    }
    with pytest.raises(DatasetError, match="fashion-binary.*digits"):
        load_builtin("imagenet")


@needs_fashion
def test_fashion_mnist():
    src = load_builtin("fashion-mnist")
    assert (src.spec, src.kind, src.name) == ("builtin:fashion-mnist", "builtin", "fashion-mnist")
    assert not src.multilabel
    assert src.classes == FASHION_CLASSES
    x = src.arrays()
    assert x.shape == (70000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert src.labels.shape == (70000,) and src.labels.dtype == np.int64
    assert np.bincount(src.labels).tolist() == [7000] * 10
    assert src.split_of.dtype == np.int8 and split_sizes(src) == [54000, 6000, 10000]
    assert np.bincount(src.labels[src.split_of == VAL]).tolist() == [600] * 10  # stratified
    assert (src.split_of[60000:] == TEST).all()  # the official test split is untouched
    assert any("10%" in n and "stratified" in n and "seed 0" in n for n in src.notes)
    assert src.arrays() is x  # parsed once per process


@needs_fashion
def test_fashion_binary():
    src = load_builtin("fashion-binary")
    assert src.classes == ["T-shirt/top", "Shirt"] and not src.multilabel
    for s in (TRAIN, VAL, TEST):
        share = src.labels[src.split_of == s].mean()
        assert abs(share - 0.12) <= 0.01, (s, share)
    x = src.arrays()
    assert x.shape == (len(src), 28, 28) and x.dtype == np.uint8
    # every item is a real Fashion-MNIST picture of the class its label says
    full = load_builtin("fashion-mnist")
    by_class = {c: {im.tobytes() for im in full.arrays()[full.labels == c]} for c in (0, 6)}
    assert all(im.tobytes() in by_class[(0, 6)[y]] for im, y in zip(x, src.labels))
    assert (src.labels == 0).sum() == 7000  # every T-shirt/top kept


@needs_fashion
def test_fashion_longtail():
    src = load_builtin("fashion-longtail")
    assert src.classes == ["Sneaker", "Sandal", "Ankle boot"]
    for s in (TRAIN, VAL, TEST):
        mix = np.bincount(src.labels[src.split_of == s], minlength=3) / (src.split_of == s).sum()
        np.testing.assert_allclose(mix, [0.80, 0.12, 0.08], atol=0.01)
    assert src.arrays().shape == (len(src), 28, 28)


@needs_fashion
def test_fashion_multilabel_matches_its_tiles():
    src = load_builtin("fashion-multilabel", seed=3)
    x, y = src.arrays(), src.labels
    assert src.multilabel and src.classes == FASHION_CLASSES
    assert x.shape == (14000, 56, 56) and x.dtype == np.uint8
    assert y.shape == (14000, 10) and y.dtype == np.uint8
    counts = y.sum(1)
    assert (counts == 0).any() and (counts == 1).any() and (counts >= 2).any()
    sizes = split_sizes(src)
    assert abs(sizes[1] - 1200) <= 5 and sizes[0] + sizes[1] == 12000 and sizes[2] == 2000

    full = load_builtin("fashion-mnist")
    official = builtin._fashion_labels(str(FASHION_SYSTEM_DIR), builtin._stamp(FASHION_SYSTEM_DIR))[1]
    tiles = builtin._mosaic_plan(official, 3)
    assert tiles.shape == (14000, 4)
    assert (tiles[:12000] < 60000).all() and ((tiles[12000:] >= 60000) | (tiles[12000:] == -1)).all()
    quads = x.reshape(14000, 2, 28, 2, 28).transpose(0, 1, 3, 2, 4).reshape(14000, 4, 28, 28)
    blank = tiles < 0
    assert 0.27 < blank.mean() < 0.33
    assert (quads[blank] == 0).all()  # a blank tile is all zeros
    np.testing.assert_array_equal(quads[~blank], full.arrays()[tiles[~blank]])
    expected = np.zeros_like(y)
    for i, row in enumerate(tiles):
        expected[i, full.labels[row[row >= 0]]] = 1
    np.testing.assert_array_equal(y, expected)


@needs_fashion
def test_determinism_and_fingerprints():
    a = load_builtin("fashion-multilabel", seed=0)
    xa = a.arrays().copy()
    builtin._variant_images.cache_clear()  # rebuild from scratch, not from the cache
    b = load_builtin("fashion-multilabel", seed=0)
    np.testing.assert_array_equal(b.arrays(), xa)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.split_of, b.split_of)
    assert a.fingerprint == b.fingerprint
    c = load_builtin("fashion-multilabel", seed=1)
    assert not np.array_equal(c.arrays(), xa) and c.fingerprint != a.fingerprint
    s0, s1 = load_builtin("fashion-binary", seed=0), load_builtin("fashion-binary", seed=1)
    assert not np.array_equal(s0.split_of, s1.split_of) and s0.fingerprint != s1.fingerprint
    assert len({load_builtin(n).fingerprint for n in BUILTINS}) == len(BUILTINS)


def test_multilabel_builds_fast_and_vectorised(tmp_path, monkeypatch):
    """Timing-free check that the mosaic builder is pure numpy: 14,000 mosaics from fake images."""
    images = np.random.default_rng(0).integers(1, 256, (70000, 28, 28), dtype=np.uint8)
    official = np.repeat(np.array([TRAIN, TEST], np.int8), [60000, 10000])
    tiles = builtin._mosaic_plan(official, 0)
    out = builtin._build_mosaics(images, tiles)
    assert out.shape == (14000, 56, 56)
    assert (out[5, 28:, :28] == (images[tiles[5, 2]] if tiles[5, 2] >= 0 else 0)).all()  # bottom-left = tile 2


def test_digits():
    src = load_builtin("digits")
    x = src.arrays()
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    assert src.classes == [str(i) for i in range(10)] and src.split_of is None and not src.multilabel
    assert src.labels.dtype == np.int64 and set(src.labels.tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(x, np.round(load_digits().images * 255 / 16).astype(np.uint8))


def test_missing_fashion_tries_one_download_then_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "_download_error", None)
    calls = []

    def offline(dest):
        calls.append(dest)
        raise OSError("no network")

    monkeypatch.setattr(builtin, "_download_fashion", offline)
    for _ in range(2):
        with pytest.raises(DatasetError, match="dataset-fashion-mnist") as err:
            load_builtin("fashion-binary")
        assert "LOUPE_FASHION_MNIST_DIR" in str(err.value) and "network" in str(err.value)
    assert calls == [tmp_path / "cache" / "fashion-mnist"]  # tried once, not on every call


def test_download_fallback_and_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "_download_error", None)
    monkeypatch.setattr(builtin, "_download_fashion", write_tiny_fashion)  # a "download" that works
    src = load_builtin("fashion-mnist")
    assert src.arrays().shape == (110, 28, 28) and split_sizes(src) == [90, 10, 10]
    # an explicit folder is used as is
    write_tiny_fashion(tmp_path / "mine")
    monkeypatch.setenv("LOUPE_FASHION_MNIST_DIR", str(tmp_path / "mine"))
    assert len(load_builtin("fashion-binary")) == 10 + 1 + 1  # all T-shirts, round(10 * 12 / 88) shirt


def test_damaged_idx_file(tmp_path, monkeypatch):
    write_tiny_fashion(tmp_path / "bad", magic_labels=2051)
    monkeypatch.setenv("LOUPE_FASHION_MNIST_DIR", str(tmp_path / "bad"))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz is damaged.*magic"):
        load_builtin("fashion-mnist")
    (tmp_path / "bad" / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="damaged"):
        load_builtin("fashion-mnist")

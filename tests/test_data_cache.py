"""Decode once: the second open maps the cache instead of decoding; changes to the files invalidate it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import engine.data.cache as cache
from engine.data import open_dataset
from tests.conftest import make_class_folders, write_image


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this dataset")

    monkeypatch.setattr(cache, "decode_chunk", boom)
    monkeypatch.setattr(cache, "header_chunk", boom)


def test_second_open_does_not_decode(tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch):
    make_class_folders(tmp_path / "ds", {"a": 30, "b": 30}, size=(40, 30))
    seen: list[tuple[int, int, str]] = []
    first = open_dataset(str(tmp_path / "ds"), image_size=24, progress=lambda d, t, s: seen.append((d, t, s)))
    assert ("decoding" in {s for _, _, s in seen}) and seen[-1][0] == seen[-1][1] == 60
    assert isinstance(first.images, np.memmap) and first.images.shape == (60, 24, 24, 3)

    _forbid_decoding(monkeypatch)
    seen.clear()
    second = open_dataset(str(tmp_path / "ds"), image_size=24, progress=lambda d, t, s: seen.append((d, t, s)))
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert not any(s == "decoding" for _, _, s in seen)
    assert second.scan.deep and np.array_equal(second.scan.dhash, first.scan.dhash)


def test_changed_file_or_resolution_gets_a_new_cache(tmp_path: Path, fresh_cache: Path):
    make_class_folders(tmp_path / "ds", {"a": 5, "b": 5})
    a = open_dataset(str(tmp_path / "ds"), image_size=8)
    b = open_dataset(str(tmp_path / "ds"), image_size=12)
    assert b.images.shape[1] == 12 and a.fingerprint == b.fingerprint
    write_image(tmp_path / "ds" / "a" / "0.png", value=255, size=(20, 20))  # different content and size
    c = open_dataset(str(tmp_path / "ds"), image_size=8)
    assert c.fingerprint != a.fingerprint
    i = c.source.files.index("a/0.png")
    assert (np.asarray(c.images[i]) == 255).all()
    folders = list((fresh_cache / "datasets").iterdir())
    assert len(folders) == 2


def test_corrupt_files_are_listed_with_reasons_and_zeroed(tmp_path: Path, fresh_cache: Path):
    make_class_folders(tmp_path / "ds", {"a": 4, "b": 4})
    good = (tmp_path / "ds" / "a" / "1.png").read_bytes()
    (tmp_path / "ds" / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "ds" / "b" / "empty.png").write_bytes(b"")
    ds = open_dataset(str(tmp_path / "ds"), image_size=8)
    reasons = {c["path"]: c["reason"] for c in ds.scan.corrupt}
    assert set(reasons) == {"b/cut.png", "b/empty.png"}
    assert "empty" in reasons["b/empty.png"]
    assert not ds.scan.ok[ds.source.files.index("b/cut.png")]
    assert ds.scan.ok.sum() == 8


def test_grayscale_dataset_kept_single_channel_and_mixed_becomes_rgb(tmp_path: Path, fresh_cache: Path):
    for i in range(4):
        write_image(tmp_path / "g" / ("a" if i % 2 else "b") / f"{i}.png", value=40 * i, mode="L")
    assert open_dataset(str(tmp_path / "g"), image_size=8).channels == 1
    write_image(tmp_path / "g" / "a" / "color.png", value=9)
    assert open_dataset(str(tmp_path / "g"), image_size=8).channels == 3


def test_exact_duplicates_share_a_content_hash(tmp_path: Path, fresh_cache: Path):
    make_class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    (tmp_path / "ds" / "b" / "copy.png").write_bytes((tmp_path / "ds" / "a" / "0.png").read_bytes())
    ds = open_dataset(str(tmp_path / "ds"), image_size=8)
    sha = dict(zip(ds.source.files, ds.scan.sha))
    assert sha["a/0.png"] == sha["b/copy.png"] != sha["a/1.png"]


def test_large_folders_decode_in_worker_processes_with_the_same_result(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    import engine.data.workers as workers

    make_class_folders(tmp_path / "ds", {"a": 20, "b": 20})
    (tmp_path / "ds" / "b" / "bad.png").write_bytes(b"not an image")
    serial = open_dataset(str(tmp_path / "ds"), image_size=8)
    monkeypatch.setattr(workers, "POOL_MIN_FILES", 1)  # force the process pool on a small folder
    monkeypatch.setattr(workers, "CHUNK", 7)
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache-pool"))
    pooled = open_dataset(str(tmp_path / "ds"), image_size=8)
    assert np.array_equal(np.asarray(serial.images), np.asarray(pooled.images))
    assert serial.scan.corrupt == pooled.scan.corrupt and serial.scan.sha == pooled.scan.sha


def test_header_sample_that_misses_a_colour_image_still_keeps_colour(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    import engine.data.dataset as dataset

    for i in range(6):
        write_image(tmp_path / "g" / ("a" if i % 2 else "b") / f"{i}.png", value=40 * i, mode="L")
    write_image(tmp_path / "g" / "a" / "3c.png", value=9)  # colour; between the sampled first and last files
    monkeypatch.setattr(dataset, "HEADER_SAMPLE", 2)
    ds = open_dataset(str(tmp_path / "g"), image_size=8)
    assert ds.channels == 3 and ds.images.shape[-1] == 3
    assert not (fresh_cache / "datasets" / ds.fingerprint / "headers.json").exists()  # a sample is never cached

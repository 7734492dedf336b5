"""Duplicate finding: dhash on hand-made images, grouping, leakage, speed and exactness."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.data.duplicates import (
    _pack_bits,
    cross_split,
    dhash_batch,
    exact_groups,
    hamming,
    label_conflicts,
    near_groups,
    thumbnails_batch,
)
from engine.data.source import TEST, TRAIN, UNASSIGNED, VAL


def blocky(rng: np.random.Generator, size: int = 64, channels: int = 3) -> np.ndarray:
    """A random image made of 8x8 flat blocks: stable under small edits, unlike pure noise."""
    coarse = rng.integers(30, 220, size=(8, 8, channels))
    return np.kron(coarse, np.ones((size // 8, size // 8, 1))).astype(np.uint8)


def brute_groups(h: np.ndarray, d: int) -> list[list[int]]:
    """Reference: connected components of the all-pairs graph (small inputs only)."""
    n = h.size
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ii, jj = np.nonzero(hamming(h[:, None], h[None, :]) <= d)
    for i, j in zip(ii.tolist(), jj.tolist()):
        parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(n)])
    groups = [np.flatnonzero(roots == r).tolist() for r in np.unique(roots)]
    return sorted((g for g in groups if len(g) > 1), key=lambda g: g[0])


def test_near_copy_found_and_different_image_not() -> None:
    rng = np.random.default_rng(0)
    base = blocky(rng)
    brighter = np.clip(base.astype(int) + 12, 0, 255).astype(np.uint8)
    one_pixel = base.copy()
    one_pixel[10, 20] = 255 - one_pixel[10, 20]
    other = blocky(rng)
    images = np.stack([base, brighter, one_pixel, other])
    h = dhash_batch(images)
    assert h.dtype == np.uint64 and h.shape == (4,)
    assert hamming(h[0], h[1]) <= 4 and hamming(h[0], h[2]) <= 4
    assert hamming(h[0], h[3]) > 10
    assert near_groups(h, np.ones(4, bool)) == [[0, 1, 2]]


def test_dhash_shapes_chunks_and_memmap(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rgb = np.stack([blocky(rng) for _ in range(7)])
    gray = rgb[..., 0]
    gray3 = np.repeat(gray[..., None], 3, axis=-1)
    rgba = np.concatenate([gray3, np.full(gray.shape + (1,), 7, np.uint8)], axis=-1)
    h_gray = dhash_batch(gray)
    assert np.array_equal(h_gray, dhash_batch(gray3))  # gray stored as RGB hashes the same
    assert np.array_equal(h_gray, dhash_batch(rgba))  # alpha ignored
    assert np.array_equal(dhash_batch(rgb), dhash_batch(rgb, chunk=2))
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=rgb.shape)
    mm[:] = rgb
    assert np.array_equal(dhash_batch(mm, chunk=3), dhash_batch(rgb))
    tiny = rng.integers(0, 17, size=(5, 8, 8)).astype(np.uint8)  # sklearn-digits sized
    assert dhash_batch(tiny).shape == (5,)
    # flat images have no gradient: every bit is 0
    assert dhash_batch(np.full((2, 16, 16), 128, np.uint8)).tolist() == [0, 0]


def test_dhash_bit_order() -> None:
    # brightness rising left to right: every left < right, so every bit is set
    ramp = np.tile(np.arange(0, 252, 4, dtype=np.uint8), (63, 1))[None]
    assert int(dhash_batch(ramp)[0]) == 2**64 - 1
    assert int(dhash_batch(ramp[:, :, ::-1].copy())[0]) == 0


def test_exact_groups() -> None:
    keys = ["a", "b", "a", "", "", "c", "b", "a"]
    ok = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)  # the last "a" is corrupt
    assert exact_groups(keys, ok) == [[0, 2], [1, 6]]  # empty keys never group


def test_near_groups_skip_identical_content_only() -> None:
    h = np.array([0b1111, 0b1111, 0b0111, 0xFF << 40, 0xFF << 40, 0xFFFF << 20], np.uint64)
    ok = np.ones(6, bool)
    exact = [[0, 1], [3, 4]]
    # 3 and 4 are byte-identical (already an exact group); 0, 1, 2 include a real near copy
    assert near_groups(h, ok, exclude=exact) == [[0, 1, 2]]
    assert near_groups(h, ok) == [[0, 1, 2], [3, 4]]
    ok[2] = False
    assert near_groups(h, ok, exclude=exact) == []


def test_near_groups_bad_distance() -> None:
    with pytest.raises(ValueError):
        near_groups(np.zeros(3, np.uint64), np.ones(3, bool), max_distance=64)


def test_cross_split_leakage() -> None:
    split_of = np.array([TRAIN, TEST, TRAIN, TRAIN, VAL, UNASSIGNED, TRAIN])
    groups = [[0, 1], [2, 3], [4, 5], [6, 4, 0]]
    assert cross_split(groups, split_of) == [
        {"items": [0, 1], "splits": ["train", "test"]},
        {"items": [6, 4, 0], "splits": ["train", "val"]},
    ]


def test_planted_train_test_duplicate_found_as_leak() -> None:
    rng = np.random.default_rng(2)
    images = np.stack([blocky(rng) for _ in range(10)])
    images[7] = np.clip(images[2].astype(int) + 8, 0, 255)  # a near copy of a train image in test
    split_of = np.array([TRAIN] * 6 + [TEST] * 4)
    groups = near_groups(dhash_batch(images), np.ones(10, bool))
    assert groups == [[2, 7]]
    assert cross_split(groups, split_of) == [{"items": [2, 7], "splits": ["train", "test"]}]


def clustered_hashes(rng: np.random.Generator, n: int, p_one: np.ndarray) -> np.ndarray:
    return _pack_bits(rng.random((n, 64)) < p_one)


def test_permutation_invariant() -> None:
    rng = np.random.default_rng(3)
    h = clustered_hashes(rng, 3000, rng.uniform(0.0, 0.25, 64))
    ok = rng.random(3000) > 0.05
    perm = rng.permutation(3000)
    a = {frozenset(g) for g in near_groups(h, ok)}
    b = {frozenset(perm[g].tolist()) for g in near_groups(h[perm], ok[perm])}
    assert a == b and len(a) > 10


@pytest.mark.parametrize("d", [0, 2, 4, 6])
def test_matches_brute_force_on_skewed_bits(d: int) -> None:
    # noisy copies of a few hundred centres with skewed bits: many near pairs, and big buckets.
    # With a window as long as the input the band search is exact; the default window is
    # checked on the same data to find the same groups up to d=4 (the distance stats use).
    rng = np.random.default_rng(10 + d)
    centres = clustered_hashes(rng, 300, rng.uniform(0.0, 0.35, 64))
    noise = clustered_hashes(rng, 2500, np.full(64, 0.02))
    h = centres[rng.integers(0, 300, 2500)] ^ noise
    expected = brute_groups(h, d)
    assert len(expected) >= 20
    assert near_groups(h, np.ones(h.size, bool), d, window=h.size) == expected
    if d <= 4:
        assert near_groups(h, np.ones(h.size, bool), d) == expected


def test_pixel_check_rejects_different_pictures_that_share_a_hash() -> None:
    # two different shapes on a black background whose 8x9 dhash is identical
    a = np.zeros((32, 32), np.uint8)
    a[8:24, 8:24] = 200
    b = a.copy()
    for r in range(8, 24, 4):  # stripes of 2 rows: each 4-row dhash cell still averages 200
        b[r : r + 2, 8:24], b[r + 2 : r + 4, 8:24] = 150, 250
    brighter = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    images = np.stack([a, b, brighter])[..., None]
    h = dhash_batch(images)
    assert h[0] == h[1]
    thumbs = thumbnails_batch(images)
    assert near_groups(h, np.ones(3, bool)) == [[0, 1, 2]]  # hash alone: lumped together
    assert near_groups(h, np.ones(3, bool), thumbs=thumbs) == [[0, 2]]  # pixels: only the brightened copy


def test_100k_hashes_with_planted_pairs_fast() -> None:
    rng = np.random.default_rng(4)
    n = 100_000
    h = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    src = rng.choice(n, 100, replace=False)
    src, dst = src[:50], src[50:]
    for s, t in zip(src, dst):
        flips = rng.choice(64, int(rng.integers(1, 5)), replace=False)
        h[t] = h[s] ^ np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64))
    ok = np.ones(n, bool)
    start = time.perf_counter()
    groups = near_groups(h, ok, max_distance=4)
    elapsed = time.perf_counter() - start
    found = {frozenset(g) for g in groups}
    assert all(frozenset((int(s), int(t))) in found for s, t in zip(src, dst))
    assert len(groups) == 50  # random 64-bit hashes are almost never within 4 bits by chance
    assert elapsed < 5.0, f"near_groups took {elapsed:.2f} s on 100k hashes"


# --- label conflicts: the same picture under different labels ---------------------------------------------


def small_item(seed: int) -> np.ndarray:
    """A 56x56 mosaic-like image: one small blocky item in a corner, the rest blank (as fashion-multilabel's
    mosaics with three empty tiles)."""
    img = np.zeros((56, 56), np.uint8)
    img[2:26, 2:26] = np.kron(np.random.default_rng(seed).integers(60, 200, (3, 3)), np.ones((8, 8)))
    return img


def conflicts_of(images: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    """What `compute_stats` does: groups first (exact, then near with the pixel check), then the conflicts."""
    thumbs = thumbnails_batch(images)
    hashes, ok = dhash_batch(thumbs), np.ones(len(images), bool)
    exact = exact_groups([img.tobytes().hex() for img in images], ok)
    near = near_groups(hashes, ok, exclude=exact, thumbs=thumbs)
    in_near = {i for g in near for i in g}
    groups = near + [g for g in exact if g[0] not in in_near]
    return label_conflicts(groups, labels, hashes=hashes, thumbs=thumbs, exact=exact)


def test_a_near_copy_under_another_label_is_a_conflict() -> None:
    rng = np.random.default_rng(5)
    base, other = blocky(rng), blocky(rng)
    brighter = np.clip(base.astype(int) + 12, 0, 255).astype(np.uint8)
    images = np.stack([base, other, brighter, base])  # 0 and 2: near copies; 0 and 3: identical
    assert conflicts_of(images, np.array([0, 0, 1, 0])) == [[0, 2, 3]]  # every copy of the picture, both labels
    assert conflicts_of(images, np.array([0, 1, 0, 0])) == []  # copies that agree, whatever the others say


def test_similar_small_items_on_a_blank_background_are_not_a_conflict() -> None:
    """Different items joined into one near group (the blank area dilutes the pixel check) must not be called
    the same picture under two labels: on fashion-multilabel that was 39 false label conflicts."""
    images = np.stack([small_item(s) for s in range(40)])
    thumbs = thumbnails_batch(images)
    groups = near_groups(dhash_batch(thumbs), np.ones(40, bool), thumbs=thumbs)
    assert groups, "the premise: the near grouping joins some of these different items"
    labels = np.arange(40) % 2  # neighbours in a group may differ in label
    assert any(len(set(labels[g])) > 1 for g in groups)
    assert conflicts_of(images, labels) == []


def test_label_conflicts_compare_label_sets_for_multilabel_rows() -> None:
    groups = [[0, 1], [2, 3]]
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=np.uint8)
    assert label_conflicts(groups, labels) == [[0, 1]]

"""Batch augmentation: shapes and ranges, each op doing what it says, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import RunConfig
from engine.train.augment import augment_batch, is_identity, preview, to_float

OFF = dict(hflip=False, rotation=0.0, crop_scale=1.0, color_jitter=0.0, grayscale_p=0.0)


def cfg(**on) -> RunConfig:
    return RunConfig(**{**OFF, **on})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(16, 3, 24, 20, generator=gen(1))


def square_pattern(n: int = 8, size: int = 32) -> torch.Tensor:
    """A bright bar in the top quarter of the image, centred horizontally."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, 2:8, 12:20] = 1.0
    return x


ALL_ON = dict(hflip=True, rotation=30.0, crop_scale=0.5, color_jitter=0.4, grayscale_p=0.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_range_preserved(channels: int) -> None:
    x = torch.rand(10, channels, 17, 23, generator=gen(2))
    y = augment_batch(x, cfg(**ALL_ON), generator=gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(x, y)


def test_identity_when_everything_is_off(batch: torch.Tensor) -> None:
    assert is_identity(cfg())
    assert augment_batch(batch, cfg()) is batch
    # grayscale and saturation mean nothing for one channel
    one = batch[:, :1]
    assert augment_batch(one, cfg(grayscale_p=1.0)) is one


def test_hflip_gives_the_image_or_its_mirror(batch: torch.Tensor) -> None:
    y = augment_batch(batch, cfg(hflip=True), generator=gen(3))
    same = (y == batch).flatten(1).all(1)
    mirrored = (y == batch.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < len(batch)  # p = 0.5 over 16 images: some of each


def test_hflip_folded_into_the_affine_is_still_exact() -> None:
    # crop_scale just under 1 forces the grid_sample path; flips there must stay mirror images
    x = torch.rand(32, 1, 9, 9, generator=gen(4))
    y = augment_batch(x, cfg(hflip=True, crop_scale=0.9999999), generator=gen(5))
    close_same = (y - x).abs().flatten(1).amax(1) < 1e-3
    close_flip = (y - x.flip(-1)).abs().flatten(1).amax(1) < 1e-3
    assert bool((close_same | close_flip).all()) and bool(close_flip.any()) and bool(close_same.any())


def test_crop_zooms_in() -> None:
    # A centred bright disc: zooming in (a crop smaller than the image) makes it cover more pixels.
    size = 33
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2) <= 36).float()
    x = disc.expand(64, 1, size, size).contiguous()
    y = augment_batch(x, cfg(crop_scale=0.25), generator=gen(6))
    area_before = x.sum(dim=(1, 2, 3))
    area_after = y.sum(dim=(1, 2, 3))
    assert bool((area_after >= area_before * 0.999).all())
    assert float(area_after.mean()) > 1.5 * float(area_before.mean())
    # crops anywhere in the image: the centre of mass moves around
    centre = (y[:, 0] * xx).sum(dim=(1, 2)) / y[:, 0].sum(dim=(1, 2))
    assert float(centre.std()) > 0.5


def test_rotation_moves_mass() -> None:
    x = square_pattern()
    y = augment_batch(x, cfg(rotation=45.0), generator=gen(7))
    assert not torch.allclose(x, y)
    moved = (y - x).abs().sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert float(moved.mean()) > 0.3
    # total brightness is roughly preserved (reflection padding only mirrors the dark border)
    ratio = y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert bool(((ratio > 0.7) & (ratio < 1.3)).all())


def test_color_jitter_changes_brightness_within_bounds() -> None:
    x = torch.full((64, 3, 8, 8), 0.5)
    s = 0.4
    y = augment_batch(x, cfg(color_jitter=s), generator=gen(8))
    means = y.mean(dim=(1, 2, 3))
    assert float(means.std()) > 0.02  # images differ
    assert bool((means >= 0.5 * (1 - s) - 1e-5).all()) and bool((means <= 0.5 * (1 + s) + 1e-5).all())


def test_grayscale_makes_channels_equal(batch: torch.Tensor) -> None:
    y = augment_batch(batch, cfg(grayscale_p=1.0), generator=gen(9))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    half = augment_batch(batch, cfg(grayscale_p=0.5), generator=gen(9))
    gray = (half[:, 0] == half[:, 1]).flatten(1).all(1) & (half[:, 1] == half[:, 2]).flatten(1).all(1)
    assert 0 < int(gray.sum()) < len(batch)
    assert torch.equal(half[~gray], batch[~gray])


def test_deterministic_under_the_same_seed(batch: torch.Tensor) -> None:
    c = cfg(**ALL_ON)
    a = augment_batch(batch, c, generator=gen(10))
    b = augment_batch(batch, c, generator=gen(10))
    d = augment_batch(batch, c, generator=gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, d)


@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_pipeline(channels: int) -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 12, 12, channels), dtype=np.uint8))
    x = to_float(images)
    assert x.shape == (6, channels, 12, 12) and x.dtype == torch.float32 and float(x.max()) <= 1
    y = augment_batch(x, cfg(**ALL_ON), generator=gen())
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1


def test_preview_shape_dtype_and_repeatable() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    images.flags.writeable = False  # like the memory-mapped decode cache
    out = preview(images, cfg(**ALL_ON), n_variants=4, seed=1)
    assert out.shape == (3, 4, 16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out, preview(images, cfg(**ALL_ON), n_variants=4, seed=1))
    assert not np.array_equal(out[0, 0], out[0, 1])  # variants differ
    gray = preview(images[..., 0], cfg(), n_variants=2, seed=0)
    assert gray.shape == (3, 2, 16, 16) and np.array_equal(gray[:, 1], images[..., 0])


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="C = 1 or 3"):
        augment_batch(torch.rand(2, 4, 8, 8), cfg(hflip=True))


def test_sampling_grid_matches_affine_grid() -> None:
    from torch.nn.functional import affine_grid

    from engine.train.augment import _affine_grid

    theta = torch.randn(5, 2, 3, generator=gen(12))
    expected = affine_grid(theta, [5, 1, 7, 11], align_corners=False)
    assert torch.allclose(_affine_grid(theta, 7, 11), expected, atol=1e-6)

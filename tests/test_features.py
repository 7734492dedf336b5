"""engine.train.features: batched extraction from uint8 NHWC arrays and the on-disk feature cache."""

from __future__ import annotations

import numpy as np
import torch

from engine.models.factory import build_model
from engine.train.features import cached_features, extract_features, feature_cache_path, to_pixels


def _data(n=10, size=16, chans=1):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, chans), dtype=np.uint8)


def _model():
    torch.manual_seed(0)
    return build_model("small_cnn", 3, in_chans=1)[0]


def test_to_pixels_layout_and_range():
    imgs = _data(2, 8, 3)
    t = to_pixels(imgs)
    assert t.shape == (2, 3, 8, 8) and t.dtype == torch.float32
    assert torch.equal(t[1, 2] * 255, torch.from_numpy(imgs[1, :, :, 2]).float())
    assert to_pixels(imgs, image_size=12).shape == (2, 3, 12, 12)


def test_extract_features_matches_model_and_keeps_mode():
    model, imgs = _model(), _data()
    idx = np.array([7, 2, 5])
    feats = extract_features(model, imgs, idx, batch_size=2)
    assert feats.shape == (3, model.num_features) and feats.dtype == np.float32
    assert model.training  # put back as it was
    with torch.no_grad():
        ref = model.eval().features(to_pixels(imgs[idx])).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)


def test_cached_features_hit_miss(tmp_path):
    model, imgs = _model(), _data()
    calls = []
    first, hit = cached_features(model, "small_cnn|test", "fp1", 16, imgs, progress=lambda d, n, s: calls.append(d))
    assert not hit and first.shape == (10, model.num_features) and calls[-1] == 10
    path = feature_cache_path("small_cnn|test", "fp1", 16)
    assert path.exists() and not list(path.parent.glob("*.tmp-*"))

    def boom(*a, **k):
        raise AssertionError("the backbone must not run on a cache hit")

    model.features = boom
    second, hit = cached_features(model, "small_cnn|test", "fp1", 16, imgs)
    assert hit and np.array_equal(first, second)
    del model.features

    resized, hit = cached_features(model, "small_cnn|test", "fp1", 20, imgs)
    assert not hit and not np.array_equal(resized, first)
    _, hit = cached_features(model, "small_cnn|test", "fp2", 16, imgs)
    assert not hit
    sub, hit = cached_features(model, "small_cnn|test", "fp1", 16, imgs, indices=np.array([3, 1]))
    assert not hit and np.allclose(sub, first[[3, 1]], atol=1e-6)

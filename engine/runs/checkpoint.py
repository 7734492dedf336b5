"""Checkpoints: weights as safetensors (never pickle), training state loadable with weights_only=True.

Both are written atomically (temp file + os.replace, as timm does), so a SIGKILL or a full disk
mid-write leaves the previous `last` intact instead of a half-written file. Weights carry a SHA-256 of
their tensors in the safetensors metadata: the format itself has no checksum, so without it a flipped
byte in the tensor data would load silently as a different model.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from engine.errors import LoupeError
from engine.runs.folder import atomic_write_bytes

DIGEST_KEY = "loupe_sha256"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; a bare pickle (protocol >= 2)


class CheckpointError(LoupeError):
    """A checkpoint that is missing, damaged, or made for another model."""


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # unwrap DDP
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _feed_tensor(h: hashlib._Hash, t: torch.Tensor, header: Callable[[torch.dtype, tuple], str]) -> None:
    """`header(dtype, shape)`, then the tensor's raw bytes."""
    t = t.detach().cpu().contiguous()
    h.update(header(t.dtype, tuple(t.shape)).encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order (what a load must reproduce)."""
    h = hashlib.sha256()
    for k in sorted(state):
        _feed_tensor(h, state[k], lambda dtype, shape, k=k: f"{k}|{dtype}|{shape}\n")
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    state = _plain_state(model)
    atomic_write_bytes(path, save(state, metadata={**(metadata or {}), DIGEST_KEY: tensor_digest(state)}))


def read_weights(path: Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, verified against its digest when it has one.

    A pickle (.pt/.pth) is refused by its first bytes and never handed to an unpickler: unpickling runs
    whatever code the file names."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise CheckpointError(
            f"The {what} '{path}' does not exist; check the path (a run writes it after its first epoch)."
        ) from None
    except OSError as e:
        raise CheckpointError(
            f"The {what} '{path}' cannot be read ({e.strerror or e}); check its permissions."
        ) from None
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"The {what} '{path}' is a PyTorch pickle (.pt/.pth), not a readable safetensors file; "
            "Loupe never unpickles weights (a pickle can run code), so convert it with "
            "safetensors.torch.save_file and give the .safetensors file."
        )
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"The {what} '{path}' is damaged, truncated or not a readable safetensors file ({e}); "
            "replace it (retrain or resume the run that wrote it)."
        ) from None
    expected = meta.get(DIGEST_KEY)
    if expected and tensor_digest(state) != expected:
        raise CheckpointError(
            f"The {what} '{path}' is damaged: its tensors do not match the checksum saved with them; "
            "replace it (retrain or resume the run that wrote it)."
        )
    return state


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights strictly, naming the first mismatch in one sentence."""
    state = read_weights(path)
    target = getattr(model, "module", model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise CheckpointError(
            f"The checkpoint '{path}' was made for another architecture ('{key}' "
            f"{'missing' if missing else 'unexpected'}); load it with the model it was trained with."
        )
    for k, v in state.items():
        if own[k].shape == v.shape:
            continue
        if k.startswith("head.") and k.endswith((".weight", ".bias")) and v.shape[1:] == own[k].shape[1:]:
            raise CheckpointError(
                f"The checkpoint '{path}' was trained for {v.shape[0]} classes, but this model has "
                f"{own[k].shape[0]}; use the run (and classes.json) it was trained with, or train again."
            )
        raise CheckpointError(
            f"The checkpoint '{path}' does not fit this model: '{k}' is {tuple(v.shape)} but the model "
            f"needs {tuple(own[k].shape)}; it was made for another architecture, so load it with the model it was trained with."
        )
    target.load_state_dict(state)


def _feed(h: hashlib._Hash, obj: Any) -> None:
    """Hash a plain-data tree (dicts, lists, tensors, numbers, strings) in a fixed order."""
    if isinstance(obj, torch.Tensor):
        _feed_tensor(h, obj, lambda dtype, shape: f"T{dtype}{shape}")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def save_state(state: dict[str, Any], path: Path) -> None:
    """torch.save with a digest of the contents: torch.load does not check the zip's CRCs, so a flipped
    byte in a tensor would otherwise resume silently with a corrupted optimiser."""
    buf = io.BytesIO()
    torch.save({**state, DIGEST_KEY: state_digest(state)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """The optimiser/scheduler/trainer state; `weights_only=True` refuses anything but tensors and plain data."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"The training state '{path}' does not exist; the run cannot be resumed.") from None
    except Exception as e:  # truncation, a damaged zip, or a pickle that asks for anything but plain data
        raise CheckpointError(
            f"The training state '{path}' is damaged or not a plain-data checkpoint "
            f"({type(e).__name__}); it cannot be resumed, so train the run again."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"The training state '{path}' is damaged or not a plain-data checkpoint "
            "(not a mapping); it cannot be resumed, so train the run again."
        )
    expected = state.pop(DIGEST_KEY, None)
    if expected is not None and state_digest(state) != expected:
        raise CheckpointError(
            f"The training state '{path}' is damaged: its contents do not match the checksum "
            "saved with them; it cannot be resumed, so train the run again."
        )
    return state

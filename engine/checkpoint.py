"""Checkpoints: weights as safetensors (never pickle), training state loadable with weights_only=True.

Both are written atomically (temp file + os.replace, as timm does), so a SIGKILL or a full disk
mid-write leaves the previous `last` intact instead of a half-written file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from engine.errors import LoupeError
from engine.runs import atomic_write_bytes


class CheckpointError(LoupeError):
    """A checkpoint that is missing, damaged, or made for another model."""


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # unwrap DDP
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, save(_plain_state(model), metadata=metadata))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights strictly, naming the first mismatch in one sentence."""
    if not path.exists():
        raise CheckpointError(f"The checkpoint '{path}' does not exist; the run may not have finished an epoch.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"The checkpoint '{path.name}' is damaged or not a safetensors file ({e}).") from None
    target = getattr(model, "module", model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise CheckpointError(
            f"The checkpoint '{path.name}' was made for another architecture ('{key}' "
            f"{'missing' if missing else 'unexpected'}); load it with the model it was trained with."
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"The checkpoint '{path.name}' does not fit this model: '{k}' is {tuple(v.shape)} but the model "
                f"needs {tuple(own[k].shape)} (another class count or architecture?)."
            )
    target.load_state_dict(state)


def save_state(state: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"The training state '{path}' does not exist; the run cannot be resumed.") from None
    except Exception as e:
        raise CheckpointError(f"The training state '{path.name}' is damaged ({type(e).__name__}); it cannot be resumed.") from None

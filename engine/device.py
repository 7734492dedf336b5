"""Where and how to compute: device, precision and memory format, decided once per run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from engine.errors import LoupeError


@dataclass
class Compute:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    channels_last: bool

    @property
    def name(self) -> str:
        prec = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{self.device} {prec}{' channels_last' if self.channels_last else ''}"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def cpu_supports_bf16() -> bool:
    """bf16 autocast only pays off where the CPU has native bf16 (AVX-512-BF16/AMX); elsewhere it is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LoupeError(f"Field 'device' has an unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoupeError(f"Field 'device' asks for '{name}' but no CUDA GPU is visible; use auto or cpu.")
    return device


def resolve_compute(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Compute:
    dev = resolve_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if cpu_supports_bf16() else None
    else:
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if dtype is torch.float16 and dev.type == "cpu":
            raise LoupeError("Field 'precision': fp16 autocast is for GPUs; use bf16 or fp32 on the CPU.")
    return Compute(dev, dtype, channels_last)


def configure_threads() -> int:
    """Compute threads = the cores this process may use, unless OMP_NUM_THREADS says otherwise.

    torch's default counts the host's cores, which oversubscribes a container pinned to fewer; and
    the engine has no DataLoader workers competing for cores, so every allowed core computes.
    torchrun sets OMP_NUM_THREADS=1 per process, which this leaves alone."""
    n = compute_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def compute_threads() -> int:
    """The thread count `configure_threads` sets (and so a training job computes on): OMP_NUM_THREADS's
    (torch's count under it), else the cores this process may use. The timing probe's cache is keyed by it."""
    import os

    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_device() -> str:
    """One line for the sidebar and logs."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(0)}" + (f" x{n}" if n > 1 else "")
    import os

    return f"CPU ({os.cpu_count()} cores, bf16 {'yes' if cpu_supports_bf16() else 'no'})"

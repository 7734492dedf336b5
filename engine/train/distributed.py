"""DDP under torchrun: who am I, the process group, and reductions that are no-ops in one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, sync_bn: bool, notes: list[str]) -> torch.nn.Module:
    """DDP around `model` when there are several processes (optionally with synchronised batch norm).

    PyTorch's SyncBatchNorm only runs on GPUs, so on the CPU (gloo) each process normalises over its
    own share of the batch, and the run says so."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_bn:
        notes.append("Synchronised batch norm needs GPUs; on the CPU each process used its own batch statistics.")
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean(d: Dist, value: float, device: torch.device) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def broadcast_str(d: Dist, value: str, device: torch.device) -> str:
    """Rank 0's decision (e.g. 'stop') for everyone, so all ranks leave the loop at the same batch."""
    if not d.enabled:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()

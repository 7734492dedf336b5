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

"""PyTorch DDP plumbing: the same training code runs alone or under `torchrun --nproc_per_node N`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; the process group is
initialised from them (gloo on CPU, nccl when CUDA is available). Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Current process's place in the job; initialises the process group on first use under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        backend = os.environ.get("VED_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        torch_dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap_ddp(module: nn.Module, dist: DistInfo, device: torch.device, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel around `module` in a multi-process job; the module itself otherwise."""
    if dist.world_size <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)


def barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def shutdown() -> None:
    """Tear down the process group (idempotent)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()

"""Data-parallel plumbing: process group from ``torchrun``'s environment, DDP / FSDP wrapping,
and averaging a number over ranks. With one process everything here is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_choice

STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass
class World:
    """This process's place: ``rank`` of ``size`` processes, and whether it started the group."""

    rank: int = 0
    size: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes (gloo on CPU, NCCL on CUDA), if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ.get("RANK", "0"))
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), False)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, True)


def wrap_model(model: nn.Module, strategy: str, world: World, device: torch.device) -> nn.Module:
    """The module the training step runs: the model itself, DDP around it, or FSDP around it."""
    check_choice("distributed", strategy, STRATEGIES)
    if world.size == 1 or strategy == "none":
        return model  # one process: a distributed recipe is plain training
    if strategy in ("auto", "ddp"):
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index or 0] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import FullyShardedDataParallel

    if device.type != "cuda":
        raise ConfigError("FSDP here needs CUDA devices", "use --distributed ddp on CPU")
    return FullyShardedDataParallel(model, device_id=device, use_orig_params=True)


def mean_over_ranks(value: float, world: World, device: torch.device) -> float:
    """The average of ``value`` over all ranks (the value itself in a single process)."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def close_world(world: World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()

"""Data-parallel plumbing: process group from ``torchrun``'s environment, DDP / FSDP wrapping,
and averaging a number over ranks. With one process everything here is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", []):  # shard layer by layer, then the rest
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True when ``model``'s parameters are FSDP shards (DTensors)."""
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU (a collective call under FSDP: every rank must make it)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                broadcast_from_rank0=False))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state, gathered whole under FSDP (collective there)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


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

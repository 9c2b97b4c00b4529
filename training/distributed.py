"""Several processes, one model: ``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK.

Each process trains on its own shard of every epoch's shuffled rows; DistributedDataParallel
averages the gradients, so the weights stay identical everywhere. NCCL on CUDA, gloo on
the CPU. Rank 0 alone writes checkpoints, reports and output.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment torchrun sets."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device_type: str) -> bool:
    """Joins the process group once when WORLD_SIZE > 1; True when distributed."""
    if world()[1] <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if device_type == "cuda":
            # before the group exists, or NCCL's collectives all land on GPU 0
            torch.cuda.set_device(world()[2])
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's value, on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], device: str) -> list[float]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard(order: list[int], rank: int, size: int) -> list[int]:
    """This rank's rows; the order is padded from its start so every rank takes as many
    steps (as DistributedSampler does)."""
    if size == 1:
        return order
    need = -(-len(order) // size) * size
    padded = list(order)
    while len(padded) < need:
        padded += order[: need - len(padded)]
    return padded[rank::size]


def close() -> None:
    if active():
        dist.destroy_process_group()

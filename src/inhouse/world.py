"""Which process this is, and which device it computes on: the one place that asks.

A run started by torchrun or `accelerate launch` finds RANK, LOCAL_RANK and WORLD_SIZE in its
environment: each rank computes on GPU number LOCAL_RANK (or on the CPU where there is no GPU) and
sees its share of the data; only the main process (rank 0) writes run folders, talks to the user and
publishes. A plain process is rank 0 of a world of one. torch is imported only when a device is asked
for, so the CLI starts fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current() -> World:
    """This process's place, as the launcher set it (a world of one without one)."""
    def number(key: str, default: int) -> int:
        try:
            return int(os.environ.get(key, default))
        except ValueError:
            return default

    return World(number("RANK", 0), number("LOCAL_RANK", 0), max(1, number("WORLD_SIZE", 1)))


def gpu() -> bool:
    """Whether this machine has a CUDA GPU to compute on."""
    import torch

    return torch.cuda.is_available()


def device() -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK), else the CPU."""
    import torch

    return torch.device("cuda", current().local_rank) if gpu() else torch.device("cpu")


def bf16_supported() -> bool:
    import torch

    return gpu() and torch.cuda.is_bf16_supported()


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (a no-op in a world of one or before the process group exists)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any: a stop request seen by rank 0 must stop them all, or
    the others would wait forever in the next collective."""
    if not _group_ready():
        return flag
    import torch
    import torch.distributed as dist

    on = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=torch.device(on, current().local_rank) if on == "cuda" else on)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_text(text: str | None) -> str:
    """Rank 0's string on every rank (a run name, a folder)."""
    if not _group_ready():
        return text or ""
    import torch.distributed as dist

    box = [text if current().is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0] or ""

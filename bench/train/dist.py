"""torchrun's process group, when there is one: rank, world size and this rank's device."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place in the job (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()


class DistError(ValueError):
    """torchrun's environment is set but unusable (a user error: run under torchrun, or unset WORLD_SIZE)."""


def init_distributed() -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL with one GPU per rank, gloo on CPUs."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise DistError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them), got "
                        f"{os.environ.get('WORLD_SIZE')!r}, {os.environ.get('RANK')!r}, "
                        f"{os.environ.get('LOCAL_RANK')!r}") from None
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", local % max(1, torch.cuda.device_count())) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            # a long timeout: ranks of a sharded sweep may reach the final barrier hours apart
            try:
                dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(hours=12))
            except ValueError as exc:       # WORLD_SIZE set without torchrun's rendezvous (MASTER_ADDR ...)
                raise DistError(f"WORLD_SIZE={world} but no torchrun rendezvous: {exc}") from None
    return Dist(rank, world, local, device)


def close_distributed(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()

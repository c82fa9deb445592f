"""Multi-process training with PyTorch's own engine (DDP, launched by torchrun).

``torchrun --nproc_per_node=K -m transmem train CONFIG --out RUN`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` then joins the process group
(gloo on CPU, nccl on CUDA). Every rank trains on its shard of the global batch
(``data.batch_size`` is the global batch); rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (strided, so shards differ by at most one)."""
        return items[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group if launched by torchrun; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # Long timeout: ranks wait at a barrier while rank 0 builds a cached memory bank.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

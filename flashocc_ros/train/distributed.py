"""DistributedDataParallel plumbing of the trainer: process group, replica hashes, buffer sync.
In: torchrun's RANK / WORLD_SIZE / LOCAL_RANK (or nothing: one process). Out: `Dist` facts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from flashocc_ros.config import ConfigError


@dataclass(frozen=True)
class Dist:
    """Process group facts: rank / world size / device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when RANK/WORLD_SIZE are set; else a single process."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(0, 1, 0, torch.device("cuda" if want_cuda else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return Dist(rank, world, local, dev)


def state_hash(module: nn.Module, parameters_only: bool = False) -> str:
    """sha256 over every state_dict tensor (names and bytes): equal iff replicas are equal."""
    h = hashlib.sha256()
    items = module.named_parameters() if parameters_only else module.state_dict().items()
    for name, value in items:
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sync_buffers(net: nn.Module, dd: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step every rank
    holds statistics updated with its own batch; this makes the replicas equal again.
    """
    if dd.enabled:
        for buf in net.buffers():
            dist.broadcast(buf, 0)


def replica_hashes(net: nn.Module, dd: Dist, parameters_only: bool = False) -> list[str]:
    """state_hash of every rank's replica (rank order); one entry without DDP."""
    own = state_hash(net, parameters_only)
    if not dd.enabled:
        return [own]
    gathered: list[Any] = [None] * dd.world_size
    dist.all_gather_object(gathered, own)
    return [str(g) for g in gathered]


__all__ = ["Dist", "replica_hashes", "setup_distributed", "state_hash", "sync_buffers"]

"""torchrun / DistributedDataParallel plumbing for `train`: one process group, sharded epochs, gathers.

`torchrun --nproc_per_node N -m realitycheck train ...` starts N copies of the same command with
RANK / WORLD_SIZE / LOCAL_RANK set; `setup()` turns that into a process group (gloo on CPU, nccl
when each process has a GPU). Without torchrun everything here is a no-op, so a single process
trains exactly as before. Only rank 0 writes files; every rank computes the same decisions (best
epoch, early stop) from the same gathered numbers, so no rank waits for a message that never comes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """This process's place in the run: rank 0 of 1 when not started by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device | None = None) -> Dist:
    """Join the process group torchrun describes in the environment (or stay a single process).

    `device` is the one the run asked for: cuda -> nccl with this process's local GPU, cpu -> gloo.
    """
    device = device or torch.device("cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """DDP around `model` when distributed: gradients are averaged across ranks in backward()."""
    if not d.enabled:
        return model
    model = model.to(d.device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


class ShardSampler(torch.utils.data.Sampler):
    """This rank's share of an epoch whose global order is the single-process order.

    Every rank draws the same global permutation (or the same class-balanced draw, when `weights`
    are given) from `seed + epoch`, then takes every `world`-th index from its `rank`. The epoch is
    padded by repeating its start so all ranks run the same number of steps (DDP needs that).
    """

    def __init__(self, n: int, d: Dist, *, shuffle: bool = True, seed: int = 0,
                 weights: Sequence[float] | None = None, num_samples: int | None = None):
        self.n, self.d, self.shuffle, self.seed = n, d, shuffle, seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.total = num_samples if num_samples is not None else n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.total, replacement=True, generator=g).tolist()
        if self.shuffle:
            return torch.randperm(self.n, generator=g).tolist()
        return list(range(self.n))

    def __len__(self) -> int:
        return math.ceil(self.total / self.d.world)

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        per_rank = len(self)
        order += order[: per_rank * self.d.world - len(order)]  # pad so every rank gets per_rank
        return iter(order[self.d.rank::self.d.world])


def sum_across(d: Dist, *values: float) -> list[float]:
    """Sums of scalars over all ranks (loss totals, counts); the values themselves in one process."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)  # nccl reduces GPU tensors only
    dist.all_reduce(t)
    return t.cpu().tolist()


def shard(items: Sequence, d: Dist) -> list:
    """This rank's share of a list scored once (validation): every item on exactly one rank."""
    return list(items)[d.rank::d.world] if d.enabled else list(items)


def gather_scores(d: Dist, p: np.ndarray, y: np.ndarray, errors: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Every rank's (p_fake, y_is_fake, errors) on its `shard`, joined in rank order."""
    if not d.enabled:
        return p, y, errors
    parts: list = [None] * d.world
    dist.all_gather_object(parts, (p, y, errors))
    return (np.concatenate([x[0] for x in parts]), np.concatenate([x[1] for x in parts]),
            [e for x in parts for e in x[2]])


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def average_buffers(model: nn.Module, d: Dist) -> None:
    """Average floating buffers (batch-norm running statistics) over the ranks, in place.

    DDP keeps the parameters identical, but each rank updates its running statistics from its own
    last batches after DDP's last broadcast, so without this the ranks would validate (and rank 0
    would save) slightly different models.
    """
    if not d.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(d.world)

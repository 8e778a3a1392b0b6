"""Process-group helpers for training and scoring under ``torchrun`` (torch.distributed).

Everything here degrades to the single-process case: without an initialised process group
(or with a world of one) ``rank()`` is 0, ``world_size()`` is 1, ``barrier()`` does nothing
and the gathers return ``[local]``. So library code calls them unconditionally and behaves
exactly as before when it is not launched by ``torchrun``.

Backends: gloo on the CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).

Two samplers keep the distributed runs equal to single-process ones:

* :class:`RankSliceSampler` cuts each global batch of a (seeded, resumable) index stream into
  ``world_size`` consecutive slices, one per rank, so the ranks together see exactly the
  batches a single process would, and a resumed run continues the same stream.
* :func:`shard_range` gives each rank a contiguous run of whole batches of a pool, so every
  batch a rank predicts is one a single process would predict too, and concatenating the
  ranks' results in rank order restores the pool order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

#: Environment variables torchrun sets for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size, its local rank and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def is_active() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (its GPU under nccl); 0 without a process group."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_active() else 0


def is_main_process() -> bool:
    """True on rank 0, the process that writes files and reports."""
    return rank() == 0


def process_device(device: str | torch.device | None = None) -> torch.device:
    """The device this process computes on: ``device`` resolved (auto: CUDA if present), and
    under a multi-process group a CUDA device without an index becomes ``cuda:LOCAL_RANK``."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if is_active() else torch.cuda.current_device())
    return device


def init_from_env(device: str | torch.device | None = None, timeout_s: float = 1800) -> DistributedContext:
    """Join the process group torchrun describes in the environment (no-op otherwise).

    Picks nccl for CUDA and gloo for the CPU, and pins this process to ``cuda:LOCAL_RANK``
    before the group is created (nccl needs to know each process's GPU). Calling it again
    once the group exists only returns the context.
    """
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    wanted = torch.device(auto if device in (None, "auto") else device)
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if wanted.type == "cuda" else "gloo"
        if wanted.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return context(device)


def context(device: str | torch.device | None = None) -> DistributedContext:
    """The current :class:`DistributedContext` (rank 0 of 1 without a process group)."""
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    return DistributedContext(rank(), world_size(), local_rank(), process_device(device), backend)


def shutdown() -> None:
    """Leave the process group, if there is one. No barrier: rank 0 may still be writing
    results (or evaluating) long after the others are done, and they need not wait."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_active():
        dist.barrier()


def _collective_device() -> torch.device:
    """nccl moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a copy; ``tensor`` itself in a single process)."""
    if not is_active():
        return tensor
    out = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(out)
    return (out / world_size()).to(tensor.device)


def all_reduce_any(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not is_active():
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor``, in rank order; the sizes along dim 0 may differ between ranks.

    The other dimensions and the dtype must agree. Each tensor is padded to the largest
    first dimension for the collective and cut back afterwards; results are on the
    tensor's own device.
    """
    if not is_active():
        return [tensor]
    device = _collective_device()
    local = tensor.detach().to(device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.long, device=device))
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return [p[:n].to(tensor.device) for p, n in zip(parts, counts)]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


class RankSliceSampler(Sampler[int]):
    """This rank's share of a global index stream cut into global batches.

    Each consecutive ``global_batch`` indices of ``stream`` form one global batch; rank ``r``
    yields positions ``[r * b, (r + 1) * b)`` of it with ``b = global_batch // world_size``.
    A DataLoader over this sampler with ``batch_size = b`` gives rank ``r`` its slice of
    exactly the global batch a single process would have drawn at the same iteration.
    """

    def __init__(self, stream: Iterable[int], global_batch: int, rank: int, world_size: int):
        if global_batch % world_size:
            raise ValueError(
                f"The batch size {global_batch} cannot be split evenly over {world_size} processes; "
                f"choose a batch size that is a multiple of {world_size}."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.stream, self.global_batch, self.rank, self.world_size = stream, global_batch, rank, world_size
        self.local_batch = global_batch // world_size

    def __iter__(self) -> Iterator[int]:
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        batch: list[int] = []
        for index in self.stream:
            batch.append(index)
            if len(batch) == self.global_batch:
                yield from batch[lo:hi]
                batch = []
        # A finite stream's last, partial global batch is split the same way (may be short).
        yield from batch[lo:hi]


def shard_range(size: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The ``[start, stop)`` positions of a pool of ``size`` items that ``rank`` scores.

    The pool is cut into batches of ``batch_size`` as a single process would; each rank gets a
    contiguous run of whole batches (the counts differ by at most one batch). Concatenating
    the ranks' results in rank order gives the pool order back.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    num_batches = -(-size // batch_size)
    first, last = rank * num_batches // world_size, (rank + 1) * num_batches // world_size
    return min(first * batch_size, size), min(last * batch_size, size)

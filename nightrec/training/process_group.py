"""The processes of a data-parallel (DDP) training, and the few collectives the training loop needs.

A :class:`World` says which process this is (``rank`` of ``size``) and does the communication: the mean of a
step's loss, sums of validation figures, rows gathered from every process (with or without gradients), a
barrier, and the DDP wrapper around a step. The one-process world (``World()``) does no communication and
wraps nothing, so a single-process training runs exactly the code it ran before DDP existed.

Backends: ``nccl`` for CUDA (one GPU per process, ``cuda:<local_rank>``), ``gloo`` for CPU. A process joins
with :func:`join`, from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...)
or from explicit ranks and an init method (``nightrec.training.distributed`` spawning its own workers).
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nightrec.training import datasets
from nightrec.training.devices import select_device

# A collective that waits this long means a process died or diverged from the others: fail, do not hang a night.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1, no communication)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device | None = None  # this rank's device once joined; None = the settings' device

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs to MLflow and registers models."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the processes (``t`` itself in one process)."""
        if not self.distributed:
            return t
        t = t.detach().float().clone()
        dist.all_reduce(t)
        return t / self.size

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over the processes, in float64 (counts stay exact)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def check_same(self, what: str, value: int) -> None:
        """Fail fast when the processes disagree on ``value`` (say, the number of examples each loaded).

        Raises:
            ValueError: the values differ; without this, the processes would wait for each other until
                the collective timeout.
        """
        if not self.distributed:
            return
        values = [int(v) for v in self.gather_rows(torch.tensor([value], device=self._comm_device)).tolist()]
        if len(set(values)) > 1:
            raise ValueError(f"the training processes disagree on {what}: {values} (by rank)")

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``t`` (lengths may differ), concatenated in rank order; no gradient."""
        if not self.distributed:
            return t
        t = t.detach().contiguous()
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.size)]
        dist.all_gather(sizes, n)
        longest = int(max(sizes))
        padded = t.new_zeros((longest, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)])

    def gather_with_grad(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``t`` (same length on each), in rank order; gradients flow back to each owner.

        The backward sums the gradient of every process's loss with respect to this process's rows, so a loss
        that uses other processes' rows (in-batch negatives) trains them as one large batch would.
        """
        if not self.distributed:
            return t
        return _GatherRows.apply(t, self.rank, self.size)

    def wrap(self, model: nn.Module, step_loss: Callable[[torch.Tensor], torch.Tensor]):
        """``step_loss`` behind ``DistributedDataParallel`` over ``model`` (``step_loss`` itself in one process).

        DDP starts its gradient all-reduce from ``forward``; the models' losses call their towers' methods,
        not ``forward``, so the step becomes the ``forward`` of a module that owns the model.
        """
        if not self.distributed:
            return step_loss
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(_Step(model, step_loss), device_ids=ids)

    def batches(self, n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """This process's share of each shuffled batch (see :func:`datasets.shard_batches`)."""
        return datasets.shard_batches(n, batch_size, generator, self.rank, self.size)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process (pickled); ``obj`` itself in one process."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")


class _Step(nn.Module):
    def __init__(self, model: nn.Module, step_loss: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.step_loss = step_loss

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.step_loss(idx)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, rank: int, size: int) -> torch.Tensor:
        ctx.rank, ctx.n = rank, t.shape[0]
        parts = [torch.empty_like(t) for _ in range(size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # all_reduce, not reduce_scatter: gloo has no reduce_scatter, and the batches are small.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None, None


def world_from_env() -> World:
    """The world torchrun describes in the environment (``World()`` when it describes none)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size)


def join(world: World, device: str = "auto", init_method: str = "env://") -> World:
    """Join the process group of ``world`` and return it with this rank's device.

    Args:
        world: This process's rank and the number of processes (see :func:`world_from_env`).
        device: ``auto``, ``cpu`` or ``cuda`` (``TrainSettings.device``); a CUDA world uses ``cuda:<local_rank>``
            and the ``nccl`` backend, a CPU world ``gloo``.
        init_method: ``env://`` (torchrun's ``MASTER_ADDR``/``MASTER_PORT``), ``file://...`` or ``tcp://...``.

    Returns:
        ``world`` itself when it is one process (nothing is initialised), else ``world`` with its device.
    """
    if not world.distributed:
        return world
    chosen = select_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(chosen)
    dist.init_process_group(
        "nccl" if chosen.type == "cuda" else "gloo",
        init_method=init_method,
        rank=world.rank,
        world_size=world.size,
        timeout=TIMEOUT,
    )
    return World(world.rank, world.size, world.local_rank, world.local_size, chosen)


def leave(world: World) -> None:
    """Leave the process group joined by :func:`join` (a no-op for one process)."""
    if world.distributed and dist.is_initialized():
        # A DDP wrapper left in a reference cycle keeps the process group alive until interpreter shutdown,
        # where destroying gloo's worker threads aborts the process ("terminate called without an active
        # exception", seen once in five torchrun runs): collect it while the interpreter is whole.
        gc.collect()
        dist.destroy_process_group()
